"""Poly learning-rate schedule with optional linear warm-up, per iteration."""

from __future__ import annotations


def poly_lr_factor(
    iteration: int, total: int, power: float = 0.9, warmup_iters: int = 0, warmup_ratio: float = 0.1
) -> float:
    """Multiplier of the base LR at `iteration` (0-based): (1 - it/total)^power, ramped up linearly first."""
    factor = (1.0 - min(iteration, total) / total) ** power
    if iteration < warmup_iters:
        factor *= warmup_ratio + (1.0 - warmup_ratio) * iteration / warmup_iters
    return factor
