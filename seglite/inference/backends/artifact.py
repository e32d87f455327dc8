"""An exported model (seglite.export) run by its own runtime: OpenVINO, LiteRT, ncnn, ExecuTorch, ONNX Runtime,
TorchScript. Its network is the runtime (ArtifactNet), so it serves exactly the exported input size."""

from __future__ import annotations

import torch

from seglite.inference.backends.base import Backend, BackendContext


class ArtifactBackend(Backend):
    def __init__(self, context: BackendContext):
        super().__init__(context)
        config = context.loaded.config
        self.name = config["artifact"]
        self.description = f"{config['artifact']} {config['precision']} export ({context.loaded.source})"

    def serves(self, batch: torch.Tensor) -> bool:
        return self.fits_size(batch)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self.context.model(batch)
