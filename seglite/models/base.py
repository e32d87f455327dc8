"""Common behaviour of every seglite network: any input size in, logits at that size out."""

from __future__ import annotations

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


def upsample_logits(logits: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """The network's last upsampling, always to NCHW memory.

    Converting here costs ~1 ms (the logits are small before it), converting after costs ~25 ms, and NCHW lets the
    CPU postprocess read one class plane at a time (seglite.inference.segmenter.resize_argmax).
    """
    return F.interpolate(logits.contiguous(), size=size, mode="bilinear", align_corners=align_corners)
