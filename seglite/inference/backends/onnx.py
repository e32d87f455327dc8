"""ONNX Runtime on seglite's cached static-shape exports (one per batch size), with the final upsampling in
OpenCV (seglite.inference.onnx_export.OnnxRunner). CPU, fp32, the fixed input size only."""

from __future__ import annotations

import torch

from seglite.inference.backends.base import Backend, BackendContext


class OnnxBackend(Backend):
    name = "onnx"

    def __init__(self, context: BackendContext):
        super().__init__(context)
        context.require_fixed_cpu("--backend onnx")
        self.runners: dict[int, object] = {}

    def serves(self, batch: torch.Tensor) -> bool:
        return self.fits_size(batch)

    def runner(self, batch_size: int):
        from seglite.inference.onnx_export import cached_runner

        if batch_size not in self.runners:
            self.runners[batch_size] = cached_runner(self.context.loaded, self.context.size, batch_size)
        return self.runners[batch_size]

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.runner(batch.shape[0])(batch.float().contiguous().numpy()))
