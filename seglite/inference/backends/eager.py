"""Eager PyTorch: serves every shape; the fallback for batches another backend does not serve."""

from __future__ import annotations

import torch

from seglite.inference.backends.base import Backend


class EagerBackend(Backend):
    name = "torch"

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        context = self.context
        with torch.inference_mode():
            return context.model(batch.to(context.dtype).contiguous(memory_format=context.memory_format))
