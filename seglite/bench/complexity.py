"""Parameter and FLOP counts (torch's own flop counter; FLOPs = 2 x multiply-accumulates)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, size: tuple[int, int] = (1024, 512)) -> int:
    """FLOPs of one forward pass at size (W, H), batch 1: convolutions, matmuls and their relatives.

    torch.utils.flop_counter counts 2 FLOPs per multiply-accumulate and leaves out element-wise ops
    (BN, activations, interpolation), so GFLOPs here are 2x the GMACs many papers quote.
    """
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    x = torch.zeros(1, 3, size[1], size[0], device=param.device, dtype=param.dtype)
    counter = FlopCounterMode(display=False)
    with counter:
        model(x)
    model.train(was_training)
    return int(counter.get_total_flops())


def model_complexity_table(size: tuple[int, int] = (1024, 512), num_classes: int = 19) -> list[dict]:
    from seglite.models.registry import create_model, get_spec, list_models

    rows = []
    for name in list_models():
        model = create_model(name, num_classes=num_classes)
        rows.append(
            {
                "name": name,
                "params": count_parameters(model),
                "gflops": round(count_flops(model, size) / 1e9, 3),
                "description": get_spec(name).description,
            }
        )
    return rows
