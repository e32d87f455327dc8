"""ExecuTorch program (.pte) lowered to the XNNPACK delegate: PyTorch's own on-device runtime (Android, iOS,
embedded Linux)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from seglite.export.base import ExportRequest, Format


class ExecuTorchFormat(Format):
    name = "executorch"
    title = "ExecuTorch (XNNPACK)"
    model_file = "model.pte"
    portable = True
    modules = ("executorch",)

    def export(self, request: ExportRequest) -> None:
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
        from executorch.exir import to_edge_transform_and_lower

        program = torch.export.export(request.net, (request.example,))
        lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()]).to_executorch()
        (request.folder / self.model_file).write_bytes(lowered.buffer)

    def load(self, folder: Path, record: dict, threads: int | None = None):
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(str(folder / self.model_file)).load_method("forward")

        def run(images: np.ndarray) -> np.ndarray:
            return method.execute([torch.from_numpy(images)])[0].numpy()

        return run
