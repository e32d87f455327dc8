"""Small building blocks shared by the model families (names mirror the papers' CBR/BR/CB)."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNPReLU(nn.Module):
    """Conv -> BatchNorm -> per-channel PReLU (the ESPNet 'CBR')."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, bn_eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=bn_eps)
        self.act = nn.PReLU(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class ConvBN(nn.Module):
    """Conv -> BatchNorm, no activation (the ESPNet 'CB')."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, bn_eps: float = 1e-5):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(c_out, eps=bn_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class BNPReLU(nn.Module):
    """BatchNorm -> per-channel PReLU (the ESPNet 'BR')."""

    def __init__(self, channels: int, bn_eps: float = 1e-5):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=bn_eps)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


def dilated_conv(c_in: int, c_out: int, dilation: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 conv whose padding keeps the size (up to the stride) for any dilation."""
    return nn.Conv2d(c_in, c_out, 3, stride, dilation, dilation=dilation, groups=groups, bias=False)


def upsample_bilinear(x: torch.Tensor, size: tuple[int, int], align_corners: bool) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


@functools.lru_cache(maxsize=256)
def _pool_matrix(size_in: int, size_out: int) -> torch.Tensor:
    # Row i averages input cells [floor(i*in/out), ceil((i+1)*in/out)), exactly as adaptive_avg_pool2d does.
    matrix = torch.zeros(size_out, size_in)
    for i in range(size_out):
        start = (i * size_in) // size_out
        end = -((-(i + 1) * size_in) // size_out)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


def adaptive_avg_pool(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """adaptive_avg_pool2d as two matrix products.

    Same numbers as F.adaptive_avg_pool2d, but it exports to ONNX for any output size (the
    TorchScript exporter rejects adaptive pooling when the output size does not divide the input).
    """
    h_in, w_in = x.shape[-2:]
    h_out, w_out = size
    if (h_in, w_in) == (h_out, w_out):
        return x
    pool_h = _pool_matrix(int(h_in), int(h_out)).to(x.device, x.dtype)
    pool_w = _pool_matrix(int(w_in), int(w_out)).to(x.device, x.dtype)
    return pool_h @ x @ pool_w.t()
