"""Common behaviour of every seglite network: any input size in, logits at that size out."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

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


class FinalUpsample(NamedTuple):
    size: tuple[int, int]  # (height, width)
    align_corners: bool


_leaving_out = threading.local()  # .kinds, .skipped: set by without_final_upsample, in the thread that runs the net


@contextmanager
def without_final_upsample(align_corners: tuple[bool, ...] = (False,)) -> Iterator[list[FinalUpsample]]:
    """Within it (in this thread), nets skip a last bilinear upsampling of the kinds in `align_corners` and return
    the logits at their own resolution, NCHW; yields the list of upsamplings they skipped.

    Why: the callers do that step faster where it comes out: seglite's ONNX Runtime runner with OpenCV
    (`seglite.inference.onnx_export.upsample_planes`, half-pixel only: ~4 ms faster at 1024x512 than ONNX Runtime's
    Resize plus the reorder of 40 MB of logits out of its blocked layout), the CPU labels fused with the resize to the
    frame and the argmax (`seglite.inference.postprocess.ResizeChainArgmax`, either kind). Only for inputs the net
    does not pad (sizes divisible by its stride).
    """
    outer = getattr(_leaving_out, "state", None)
    _leaving_out.state = (align_corners, [])
    try:
        yield _leaving_out.state[1]
    finally:
        _leaving_out.state = outer


_portable = threading.local()


@contextmanager
def portable_graph(matrix_pooling: bool = False) -> Iterator[None]:
    """Within it (in this thread), nets build the plain form of any layer whose fast eval form needs more than 4-D
    tensors or index tensors built at run time (DeepLabV3+'s fused head): what ncnn (at most 4-D) and LiteRT's
    interpreter (no StableHLO iota) can run. Same function, more FLOPs. `matrix_pooling` also writes adaptive average
    pooling whose output does not divide its input as two matmuls with constant averaging matrices (Core ML's
    converter unrolls it into a slice and a mean per output cell: 10,000 ops for ESPNetv2, an hour to convert;
    LiteRT's into hundreds of slices and a 1.6 MB constant, half the run time)."""
    outer = (getattr(_portable, "active", False), getattr(_portable, "matrix_pooling", False))
    _portable.active, _portable.matrix_pooling = True, matrix_pooling
    try:
        yield
    finally:
        _portable.active, _portable.matrix_pooling = outer


def portable_graph_active() -> bool:
    return getattr(_portable, "active", False)


def matrix_pooling_active() -> bool:
    return getattr(_portable, "matrix_pooling", False)


@torch.no_grad()
def flush_subnormals(module: nn.Module) -> int:
    """Set weights and buffers smaller than the smallest normal float to zero; returns how many there were.

    x86 CPUs (oneDNN, ONNX Runtime, ncnn) multiply subnormal floats 10-100x slower, and the authors' ESPNet weights
    are 5 % subnormal (weight decay's leftovers): ESPNet at 1024x512 took 2.5 s a frame, flushed 0.13 s, with
    bit-identical logits (a product with a subnormal is below every other term's rounding).
    """
    flushed = 0
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point():
            tiny = (tensor != 0) & (tensor.abs() < torch.finfo(tensor.dtype).tiny)
            flushed += int(tiny.sum())
            tensor.masked_fill_(tiny, 0.0)
    return flushed


def bilinear_matrix(size_in: int, size_out: int, align_corners: bool, like: torch.Tensor) -> torch.Tensor:
    """size_out x size_in: F.interpolate's bilinear weights along one axis (read off by resizing an identity)."""
    dtype = torch.promote_types(like.dtype, torch.float32)  # weights at float32 precision at least
    eye = torch.eye(size_in, dtype=dtype, device=like.device).reshape(1, size_in, 1, size_in)
    matrix = F.interpolate(eye, size=(1, size_out), mode="bilinear", align_corners=align_corners)[0, :, 0, :].T
    return matrix.to(like.dtype)


def eager_training(x: torch.Tensor) -> bool:
    """x's op is being recorded for a backward pass, eagerly: graph tracers, compilers and exporters see the plain op."""
    return (
        x.requires_grad
        and torch.is_grad_enabled()
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and not torch.onnx.is_in_onnx_export()
    )


def _matmul_resize_pays(x: torch.Tensor) -> bool:
    """Training on a CPU: PyTorch's bilinear backward there is a serial scatter (8x256x72x96 from 1/16: 96 ms for
    forward + backward, as two matmuls 23 ms). Inference and every exporter keep F.interpolate."""
    return x.device.type == "cpu" and eager_training(x)


def bilinear_resize(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """F.interpolate(mode="bilinear") with the same weights; in CPU training, as two matmuls in x's dtype and memory
    format (a resize is separable: rows, then columns)."""
    if not _matmul_resize_pays(x):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)
    n, c, h, w = x.shape
    rows = bilinear_matrix(h, int(size[0]), align_corners, x)
    columns = bilinear_matrix(w, int(size[1]), align_corners, x)
    with torch.autocast(x.device.type, enabled=False):
        if x.is_contiguous() or not x.is_contiguous(memory_format=torch.channels_last):
            return rows @ (x @ columns.T)
        along_x = columns @ x.permute(0, 2, 3, 1)  # (n, h, W, c), channels-last memory read without a copy
        out = rows @ along_x.reshape(n, h, -1)  # (n, H, W * c)
        return out.reshape(n, int(size[0]), int(size[1]), c).permute(0, 3, 1, 2)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    """The network's last upsampling, always to NCHW memory.

    Converting here costs ~1 ms (the logits are small before it), converting after costs ~25 ms, and NCHW lets the
    CPU postprocess read one class plane at a time (seglite.inference.postprocess.resize_argmax).
    """
    leaving_out = getattr(_leaving_out, "state", None)
    if leaving_out is not None and align_corners in leaving_out[0]:
        leaving_out[1].append(FinalUpsample((int(size[0]), int(size[1])), align_corners))
        return logits.contiguous()
    return bilinear_resize(logits.contiguous(), size, align_corners)
