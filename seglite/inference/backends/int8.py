"""The INT8 model `seglite quantize` accepted for these weights and size (static batch of one, ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path

import torch

from seglite.errors import SegliteError
from seglite.inference.backends.base import Backend, BackendContext


def int8_path(loaded, size: tuple[int, int]) -> Path:
    """Where the accepted INT8 model of these weights at this size lives in the cache."""
    from seglite.inference.onnx_export import cache_key
    from seglite.zoo.registry import seglite_home

    key = cache_key(loaded, size, 1, "int8")
    return seglite_home() / "onnx" / f"{key}.onnx"


class RunnerBackend(Backend):
    """Any static-size ONNX runner (batch of one): frames of a larger batch run one after another."""

    name = "onnx"

    def __init__(self, context: BackendContext, runner=None, description: str = "onnx"):
        super().__init__(context)
        self.runner, self.description = runner, description

    def serves(self, batch: torch.Tensor) -> bool:
        return self.fits_size(batch)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        frames = batch.float().contiguous().numpy()
        return torch.cat([torch.from_numpy(self.runner(frames[i : i + 1])) for i in range(len(frames))])


class Int8Backend(RunnerBackend):
    def __init__(self, context: BackendContext):
        from seglite.inference.onnx_export import OnnxRunner

        context.require_fixed_cpu("--int8")
        path = int8_path(context.loaded, context.size)
        if not path.is_file():
            width, height = context.size
            source = context.loaded.source
            raise SegliteError(
                f"no accepted INT8 model for {source} at {width}x{height}: run `seglite quantize --weights {source} "
                f"--size {width}x{height} --data-root DATA_ROOT` first (it keeps INT8 only where the mIoU drops by "
                "less than 1 point), or leave out --int8"
            )
        super().__init__(context, OnnxRunner(path), "INT8 model accepted by `seglite quantize`")
