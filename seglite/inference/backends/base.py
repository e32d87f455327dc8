"""The contract: a backend turns a preprocessed batch into logits, says which batch shapes it serves, its name and
how it was built. The Segmenter hands every batch a backend does not serve to eager PyTorch, in one place."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from seglite.errors import SegliteError
from seglite.zoo.checkpoint import LoadedWeights


@dataclass
class BackendContext:
    """What every backend is built from: the weights, the eager network prepared for inference (BatchNorm folded,
    on the device, in its dtype and memory format) and the fixed input size, if any."""

    loaded: LoadedWeights
    model: nn.Module
    size: tuple[int, int] | None
    device: torch.device
    dtype: torch.dtype
    memory_format: torch.memory_format

    def require_fixed_cpu(self, option: str) -> None:
        """The exported runtimes run on a CPU at one input size; name what is missing."""
        if self.device.type != "cpu":
            raise SegliteError(f"{option} runs on a CPU: pass --device cpu (this run is on {self.device})")
        if self.size is None:
            raise SegliteError(f"{option} runs at one input size: pass --size WxH")


class Backend:
    name = "?"
    streams = 1  # inference streams at once that pay for offline sources (set where --backend auto measured it)

    def __init__(self, context: BackendContext):
        self.context = context
        self.description = self.name  # how it was built, for messages

    def serves(self, batch: torch.Tensor) -> bool:
        """Whether this backend runs a batch of this shape (a static export serves one size)."""
        return True

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def build_cost(self, first_call_s: float) -> float | None:
        """Seconds a fresh process pays to build this backend on its first call (torch.compile's compile), given
        what the first call took here; None where building costs nothing worth paying back."""
        return None

    def fits_size(self, batch: torch.Tensor) -> bool:
        size = self.context.size
        return size is not None and (batch.shape[-1], batch.shape[-2]) == tuple(size)
