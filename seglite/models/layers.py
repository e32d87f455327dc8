"""Small building blocks shared by the model families (names mirror the papers' CBR/BR/CB)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from seglite.models.base import eager_training, matrix_pooling_active, portable_graph_active
from seglite.models.fused import bn_prelu


class ConvBNPReLU(nn.Module):
    """Conv -> BatchNorm -> per-channel PReLU (the ESPNet 'CBR')."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, bn_eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=bn_eps)
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bn_prelu(self.bn, self.act, self.conv(x))


class ConvBN(nn.Module):
    """Conv -> BatchNorm, no activation (the ESPNet 'CB')."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, bn_eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bn_prelu(self.bn, None, self.conv(x))


class BNPReLU(nn.Module):
    """BatchNorm -> per-channel PReLU (the ESPNet 'BR')."""

    def __init__(self, channels: int, bn_eps: float = 1e-5):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bn_prelu(self.bn, self.act, x)


def global_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """Mean over H and W, keeping them (N x C x 1 x 1).

    In training, a sum scaled after pooling: mean's backward writes grad / (H*W) as a new NCHW tensor whatever x's
    layout, and adding it to the channels-last gradients x gets from its other consumers is ~15x slower than a
    same-layout add (19 vs 1.4 ms at 8x32x144x192 on a 2-core CPU); a sum's backward is a broadcast view, which adds
    at full speed in any layout. Inference and export keep the mean.
    """
    if not eager_training(x):
        return F.adaptive_avg_pool2d(x, 1)
    return x.sum((2, 3), keepdim=True) * (1.0 / (x.shape[2] * x.shape[3]))


def halve_avg(x: torch.Tensor) -> torch.Tensor:
    """3x3 average pooling at stride 2 with a zero border that counts (F.avg_pool2d(x, 3, 2, 1)). A portable graph
    writes the border as its own pad: XNNPACK (ExecuTorch) runs no pooling whose padding counts."""
    if portable_graph_active():
        return F.avg_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2)
    return F.avg_pool2d(x, 3, 2, 1)


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_avg_pool(x)


class _DilatedDepthwiseConv(torch.autograd.Function):
    """A 3x3 depth-wise conv with padding = dilation, whose input gradient is computed as a forward conv.

    Why: oneDNN's fast depth-wise backward kernels take no dilation, so PyTorch's backward of a dilated depth-wise
    conv runs as im2col + GEMM per channel, 20-60x its forward (ESPNetv2's strided EESP at 8x8x144x192: 27 ms vs
    0.4 ms). The input gradient of a correlation is the correlation of the (stride-spread) output gradient with the
    flipped kernel at the same dilation: a forward conv, which oneDNN runs fast with dilation. The weight gradient
    stays with PyTorch's backward (a few ms)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, dilation: int) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.stride, ctx.dilation = stride, dilation
        return F.conv2d(x, weight, None, stride, dilation, dilation, x.shape[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        stride, dilation, channels = ctx.stride, ctx.dilation, x.shape[1]
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            spread = grad
            if stride > 1:  # output i came from input stride*i: put its gradient there, zeros between
                spread = torch.zeros_like(x)
                spread[:, :, ::stride, ::stride] = grad
            grad_x = F.conv2d(spread, weight.flip(2, 3), None, 1, dilation, dilation, channels)
            grad_x = grad_x.contiguous(memory_format=torch.channels_last)  # x's layout (a no-op where it is)
        if ctx.needs_input_grad[1]:
            grad_weight = torch.nn.grad.conv2d_weight(x, weight.shape, grad, stride, dilation, dilation, channels)
        return grad_x, grad_weight, None, None


class DilatedConv2d(nn.Conv2d):
    """nn.Conv2d (same weights and state dict) whose depth-wise dilated form trains faster on a CPU in fp32 with
    channels-last activations, as seglite trains (_DilatedDepthwiseConv: 2-6x forward + backward at ESPNetv2's
    shapes); everything else, inference and export included, is nn.Conv2d's forward. Not in NCHW: there PyTorch's
    backward is less slow and oneDNN's NCHW depth-wise forward is slow, so the gain is mixed (0.6-1.6x a shape)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.depthwise_dilated = (  # the form _DilatedDepthwiseConv computes
            self.dilation[0] > 1
            and self.groups == self.in_channels == self.out_channels
            and self.kernel_size == (3, 3)
            and self.padding == self.dilation
            and self.dilation[0] == self.dilation[1]
            and self.stride[0] == self.stride[1]
            and self.bias is None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            self.depthwise_dilated
            and x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.is_contiguous(memory_format=torch.channels_last)
            and not torch.is_autocast_enabled("cpu")
            and eager_training(x)
        ):
            return _DilatedDepthwiseConv.apply(x, self.weight, self.stride[0], self.dilation[0])
        return super().forward(x)


def dilated_conv(c_in: int, c_out: int, dilation: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 conv whose padding keeps the size (up to the stride) for any dilation."""
    return DilatedConv2d(c_in, c_out, 3, stride, dilation, dilation=dilation, groups=groups, bias=False)


def _window_bounds(size_in: int, size_out: int) -> tuple[list[int], list[int]]:
    # Output cell i averages input cells [floor(i*in/out), ceil((i+1)*in/out)), as adaptive_avg_pool2d does.
    starts = [(i * size_in) // size_out for i in range(size_out)]
    ends = [-((-(i + 1) * size_in) // size_out) for i in range(size_out)]
    return starts, ends


def _adaptive_pool_axis(x: torch.Tensor, dim: int, size_out: int) -> torch.Tensor:
    """Adaptive average pooling along one axis from a cumulative sum and two gathers."""
    size_in = x.shape[dim]
    starts, ends = _window_bounds(int(size_in), size_out)
    zeros = torch.zeros_like(x.narrow(dim, 0, 1))
    prefix = torch.cat([zeros, torch.cumsum(x, dim)], dim)
    start_idx = torch.tensor(starts, device=x.device)
    end_idx = torch.tensor(ends, device=x.device)
    lengths = torch.tensor([e - s for s, e in zip(starts, ends, strict=True)], device=x.device, dtype=x.dtype)
    shape = [1] * x.dim()
    shape[dim] = size_out
    total = prefix.index_select(dim, end_idx) - prefix.index_select(dim, start_idx)
    return total / lengths.reshape(shape)


def _averaging_matrix(size_in: int, size_out: int, like: torch.Tensor) -> torch.Tensor:
    """size_in x size_out: column i averages the window adaptive pooling gives output cell i (built from Python
    lists, so a trace records one constant, not a write per row, and no transpose: XNNPACK wants a plain weight)."""
    starts, ends = _window_bounds(size_in, size_out)
    rows = [
        [1.0 / (end - start) if start <= row < end else 0.0 for start, end in zip(starts, ends, strict=True)]
        for row in range(size_in)
    ]
    return torch.tensor(rows, dtype=like.dtype, device=like.device)


def adaptive_avg_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """F.adaptive_avg_pool2d that also exports to ONNX for any output size.

    The TorchScript ONNX exporter rejects adaptive pooling when the output size does not divide the
    input (ESPNetv2's pyramid pooling does exactly that). During export the same averages are written
    as plain pooling (divisible sizes) or a cumulative sum and gathers (the rest); eager mode keeps
    PyTorch's native kernel. Matrix pooling (portable_graph) writes the rest as two matmuls.
    """
    h_in, w_in = (int(v) for v in x.shape[-2:])
    h_out, w_out = size
    if (h_in, w_in) == (h_out, w_out):
        return x
    divisible = h_in % h_out == 0 and w_in % w_out == 0
    if matrix_pooling_active() and not divisible:  # a window mean is separable: columns, then rows
        # 2-D products with a constant on the right: what every runtime runs as one fully connected op
        along_w = (x.reshape(-1, w_in) @ _averaging_matrix(w_in, w_out, x)).reshape(*x.shape[:-1], w_out)
        columns = along_w.transpose(-1, -2).reshape(-1, h_in)
        pooled = (columns @ _averaging_matrix(h_in, h_out, x)).reshape(*x.shape[:-2], w_out, h_out)
        return pooled.transpose(-1, -2)
    if divisible and (torch.onnx.is_in_onnx_export() or matrix_pooling_active()):  # not ncnn: pnnx fails on it
        return F.avg_pool2d(x, (h_in // h_out, w_in // w_out))
    if not torch.onnx.is_in_onnx_export():
        return F.adaptive_avg_pool2d(x, size)
    return _adaptive_pool_axis(_adaptive_pool_axis(x, -2, h_out), -1, w_out)
