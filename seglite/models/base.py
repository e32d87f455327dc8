"""Common behaviour of every seglite network: any input size in, logits at that size out."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationNet(nn.Module):
    """Pads the input to the network's stride, runs it, and crops the logits back.

    Subclasses set `stride` and implement `forward_padded`, which sees sizes divisible by it.
    The padding is zeros in normalized space (the dataset mean colour), on the bottom and right.
    """

    stride: int = 32
    num_classes: int
    encoder_prefixes: tuple[str, ...] = ()  # parameter-name prefixes `freeze_encoder_iters` holds still

    def finetune_kwargs(self) -> dict:
        """Constructor arguments that keep this network's class-independent widths when it is rebuilt for other
        classes (fine-tuning), so more of its tensors keep their shape and load."""
        return {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h = (-height) % self.stride
        pad_w = (-width) % self.stride
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        logits = self.forward_padded(x)
        if pad_h or pad_w:
            logits = logits[..., :height, :width]
        return logits

    def forward_padded(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


_left_out_upsamplings: list[tuple[int, int]] | None = None  # set by without_final_upsample


@contextmanager
def without_final_upsample() -> Iterator[list[tuple[int, int]]]:
    """Within it, nets skip a last half-pixel bilinear upsampling (align_corners=False) and return the logits at
    their own resolution; yields the list of (height, width) sizes they skipped.

    Why: seglite's ONNX Runtime runner does that step with OpenCV (`seglite.inference.onnx_export.upsample_planes`,
    the same half-pixel formula), ~4 ms faster at 1024x512 than ONNX Runtime's Resize plus the reorder of 40 MB of
    logits out of its blocked layout. Only for inputs the net does not pad (sizes divisible by its stride).
    """
    global _left_out_upsamplings
    outer, _left_out_upsamplings = _left_out_upsamplings, []
    try:
        yield _left_out_upsamplings
    finally:
        _left_out_upsamplings = outer


def upsample_logits(logits: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """The network's last upsampling, always to NCHW memory.

    Converting here costs ~1 ms (the logits are small before it), converting after costs ~25 ms, and NCHW lets the
    CPU postprocess read one class plane at a time (seglite.inference.postprocess.resize_argmax).
    """
    if _left_out_upsamplings is not None and not align_corners:
        _left_out_upsamplings.append((int(size[0]), int(size[1])))
        return logits.contiguous()
    return F.interpolate(logits.contiguous(), size=size, mode="bilinear", align_corners=align_corners)
