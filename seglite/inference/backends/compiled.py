"""torch.compile (Inductor, weights frozen): fuses the concat/BN/PReLU/add chains of the ESPNet family, same
predictions. It serves the one batch shape it runs first: compiling again for a shape used a few times (a last
partial batch, extra test scales) costs more than it saves, so those run eager."""

from __future__ import annotations

from collections.abc import Callable

import torch

from seglite.errors import SegliteError
from seglite.inference.backends.base import Backend, BackendContext

# True once this process has compiled a network: dynamo then reuses the graph for another instance of the same
# architecture in well under a second, which says nothing about what a fresh process pays.
_compiled_in_process = False
FRESH_COMPILE_S = 20.0  # a typical first compile of one of seglite's networks on 2 cores


def compile_model(model: torch.nn.Module, size: tuple[int, int] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The compiled network; it compiles on its first call (tens of seconds on 2 cores), once per input shape."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" noise on CPU hosts
    if size is None:
        raise SegliteError("--compile needs a fixed input size: pass --size WxH (weights with a training size set it)")
    import torch._dynamo

    # Every seglite network shares SegmentationNet.forward, so each compiled model (or input shape) counts against
    # dynamo's per-function recompile limit (8), past which it silently runs eager: leave room for many.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    compiled = torch.compile(model, dynamic=False, options={"freezing": True})

    def forward(batch: torch.Tensor) -> torch.Tensor:
        global _compiled_in_process
        try:
            out = compiled(batch)
            _compiled_in_process = True
            return out
        except Exception as exc:  # Inductor raises many types (a missing C++ compiler is the common one)
            raise SegliteError(
                f"--compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "it needs a C++ compiler (g++ or clang) on PATH: install one or drop --compile"
            ) from exc

    return forward


class CompiledBackend(Backend):
    name = "torch.compile"

    def __init__(self, context: BackendContext):
        super().__init__(context)
        self.compiled = compile_model(context.model, context.size)
        self.shape: tuple[int, ...] | None = None  # the batch shape it serves, fixed by its first batch
        self._warm = _compiled_in_process

    def serves(self, batch: torch.Tensor) -> bool:
        return self.shape in (None, tuple(batch.shape))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        context = self.context
        batch = batch.to(context.dtype).contiguous(memory_format=context.memory_format)
        with torch.inference_mode():
            out = self.compiled(batch)
        self.shape = tuple(batch.shape)
        return out

    def build_cost(self, first_call_s: float) -> float:
        # Compiled before in this process, the first call reused dynamo's graph: a fresh process pays a full compile.
        return max(first_call_s, FRESH_COMPILE_S) if self._warm else first_call_s

    def reset_shape(self) -> None:
        """Let the run's own first batch decide the compiled shape (after a trial at batch 1)."""
        self.shape = None
