"""One optimisation step, and the choice of how to run it fast on the device at hand.

Why a module of its own: the trainer and scripts/bench_train.py must time and run the very same step.
CPU levers measured on a 2-core AVX512-BF16/AMX EPYC (scripts/bench_train.py): channels_last helps every network;
on top of it bf16 autocast makes DeepLabV3+ LCNet 1.6x faster but ESPNetv2 hardly (oneDNN's bf16 depth-wise conv
backward is slower than fp32's), so `amp: auto` on a CPU times both on the first batch and keeps the faster one.
"""

from __future__ import annotations

import copy
import inspect
import time
from dataclasses import dataclass

import torch
from torch import nn

from seglite.devices import cpu_supports_bf16

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class StepOptions:
    precision: str = "fp32"  # fp32, bf16 or fp16 (autocast dtype of the forward pass)
    channels_last: bool = False

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return PRECISIONS[self.precision]


class TrainStep:
    """forward (autocast) -> loss -> backward -> optimizer step; the model must already be in its memory format.
    `scaler`: a torch.amp.GradScaler, or None. `teacher`: with one (seglite.training.distill), its logits on the same
    batch are the criterion's third argument."""

    def __init__(
        self, net: nn.Module, criterion: nn.Module, optimizer, scaler, device: torch.device, options, teacher=None
    ):
        self.net, self.criterion, self.optimizer, self.scaler = net, criterion, optimizer, scaler
        self.device, self.options, self.teacher = device, options, teacher

    def inputs(self, images: torch.Tensor) -> torch.Tensor:
        images = images.to(self.device, non_blocking=True)
        return images.contiguous(memory_format=torch.channels_last) if self.options.channels_last else images

    def loss(self, images: torch.Tensor, labels: torch.Tensor, cached: torch.Tensor | None = None) -> torch.Tensor:
        """`cached`: the teacher's logits for this batch (BxHxWxC, distill.cache) instead of running it."""
        dtype = self.options.amp_dtype
        inputs = self.inputs(images)
        with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = self.net(inputs)
            if cached is not None:
                teacher_logits = cached.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
            else:
                teacher_logits = self.teacher(inputs) if self.teacher is not None else None
        target = labels.to(self.device, non_blocking=True)
        if teacher_logits is None:
            return self.criterion(logits, target)
        return self.criterion(logits, target, teacher_logits)

    def apply(self, loss: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:  # no fp16 grad scaling (CPU, bf16, fp32)
            loss.backward()
            self.optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        loss = self.loss(images, labels)
        self.apply(loss)
        return loss


def fused_supported(optimizer_class: type) -> bool:
    """Fused (single-kernel) Adam/AdamW/SGD exist on CPU and CUDA in torch >= 2.4; older ones lack the argument."""
    return "fused" in inspect.signature(optimizer_class.__init__).parameters


def cpu_bf16_candidate(device: torch.device) -> bool:
    return device.type == "cpu" and cpu_supports_bf16()


BF16_MARGIN = 0.95  # bf16 must be clearly faster (5 %): on a tie fp32's numerics win


def faster_precision(seconds: dict[str, float]) -> str:
    return "bf16" if seconds["bf16"] < BF16_MARGIN * seconds["fp32"] else "fp32"


def time_precisions(
    model: nn.Module, criterion: nn.Module, images: torch.Tensor, labels: torch.Tensor, options: list[StepOptions]
) -> dict[str, float]:
    """Seconds per forward+backward for each option on one batch; weights, BN statistics and grads are restored, so
    the trial leaves no trace on the run."""
    saved = copy.deepcopy(model.state_dict())
    device = next(model.parameters()).device
    seconds = {}
    try:
        for option in options:
            step = TrainStep(model, criterion, None, None, device, option)
            times = []
            for _ in range(3):  # the first is a warm-up (oneDNN primitive creation)
                start = time.perf_counter()
                step.loss(images, labels).backward()
                times.append(time.perf_counter() - start)
                model.zero_grad(set_to_none=True)
            seconds[option.precision] = min(times[1:])
    finally:
        model.load_state_dict(saved)
        model.zero_grad(set_to_none=True)
    return seconds
