"""Training on a CPU: BatchNorm (+ a residual) + PReLU as compiled kernels, the convolutions left to oneDNN.

Why: eagerly these are 3-5 passes over memory forward and as many backward, ~40 % of an ESPNetv2 training step on a
2-core CPU; Inductor's kernels for just these functions run them 2.2-2.6x faster (torch.compile of the whole network
measured no faster than eager). Shapes are dynamic, so one network compiles each 1-2 times.
Off unless `enable()` was called (seglite train does on a CPU); eval mode, autocast, other devices and other norm
layers always take the eager path, so inference and exported models never see it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import warnings
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

_compiled: dict = {}


def enable(on: bool = True) -> None:
    _compiled.clear()
    if on:
        # Inductor's C++ build says "No CUDA runtime is found" with a CUDA build of torch on a machine without one.
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        _compiled["bn"] = torch.compile(_bn, dynamic=True)
        _compiled["bn_prelu"] = torch.compile(_bn_prelu, dynamic=True)
        _compiled["bn_add_prelu"] = torch.compile(_bn_add_prelu, dynamic=True)


def enabled() -> bool:
    return bool(_compiled)


def compiler_found() -> bool:
    """Inductor writes C++ for the CPU: without a compiler the fused path would only fail (and fall back)."""
    return any(shutil.which(name) for name in (os.environ.get("CXX", ""), "g++", "c++", "clang++") if name)


@contextlib.contextmanager
def fusing(on: bool) -> Iterator[bool]:
    """Fused kernels inside the block (where a compiler is found); yields whether they are on."""
    before = enabled()
    enable(on and compiler_found())
    try:
        yield enabled()
    finally:
        enable(before)


def _bn(x, weight, bias, mean, var, momentum: float, eps: float) -> torch.Tensor:
    return F.batch_norm(x, mean, var, weight, bias, True, momentum, eps)


def _bn_prelu(x, weight, bias, mean, var, slope, momentum: float, eps: float) -> torch.Tensor:
    return F.prelu(F.batch_norm(x, mean, var, weight, bias, True, momentum, eps), slope)


def _bn_add_prelu(x, residual, weight, bias, mean, var, slope, momentum: float, eps: float) -> torch.Tensor:
    return F.prelu(F.batch_norm(x, mean, var, weight, bias, True, momentum, eps) + residual, slope)


def _autocast_on() -> bool:
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4
        return torch.is_autocast_cpu_enabled()


def _fusable(bn: nn.Module, act: nn.Module | None, x: torch.Tensor) -> bool:
    return (
        bool(_compiled)
        and bn.training
        and type(bn) is nn.BatchNorm2d  # not SyncBatchNorm (multi-process) or other subclasses
        and bn.affine
        and bn.track_running_stats
        and bn.momentum is not None
        and (act is None or isinstance(act, nn.PReLU))
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and torch.is_grad_enabled()
        and not _autocast_on()
    )


def _plain(parameter: torch.Tensor) -> torch.Tensor:
    # A view is no longer a Parameter, whose sizes torch.compile keeps static (one compilation per width).
    return parameter.view(parameter.shape)


def bn_prelu(
    bn: nn.Module, act: nn.Module | None, x: torch.Tensor, residual: torch.Tensor | None = None
) -> torch.Tensor:
    """act(bn(x) + residual), or act(bn(x)) without one; bn(x) without act (and then without a residual)."""
    if _fusable(bn, act, x):
        stats = (_plain(bn.weight), _plain(bn.bias), bn.running_mean, bn.running_var)
        settings = (float(bn.momentum), float(bn.eps))
        try:
            if act is None:
                out = _compiled["bn"](x, *stats, *settings)
            elif residual is None:
                out = _compiled["bn_prelu"](x, *stats, _plain(act.weight), *settings)
            else:
                out = _compiled["bn_add_prelu"](x, residual, *stats, _plain(act.weight), *settings)
        except Exception as exc:  # no C++ compiler, an Inductor failure: train on, unfused
            enable(False)
            warnings.warn(
                f"fused BatchNorm+PReLU unavailable ({type(exc).__name__}: {exc}); training unfused", stacklevel=2
            )
        else:
            if bn.num_batches_tracked is not None:
                bn.num_batches_tracked.add_(1)
            return out
    out = bn(x)
    if act is None:
        return out
    if residual is not None:
        out = out + residual
    return act(out)
