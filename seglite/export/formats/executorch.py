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
    matrix_pooling = ("fp32",)  # ESPNetv2's pyramid pooling as matmuls: the whole net is one XNNPACK delegate
    modules = ("executorch",)

    def export(self, request: ExportRequest) -> None:
        program = lower_to_xnnpack(request.net, request.example).to_executorch()
        (request.folder / self.model_file).write_bytes(program.buffer)

    def load(self, folder: Path, record: dict, threads: int | None = None):
        from executorch.runtime import Runtime

        method = Runtime.get().load_program(str(folder / self.model_file)).load_method("forward")

        def run(images: np.ndarray) -> np.ndarray:
            return method.execute([torch.from_numpy(images)])[0].numpy()

        return run


def lower_to_xnnpack(net: torch.nn.Module, example: torch.Tensor):
    """The edge program with every op XNNPACK takes inside its delegate; the rest runs in ExecuTorch's portable
    kernels (one thread, 2-70x slower). Constants are folded first: a pooling matrix is then a static weight."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    program = constant_prop_pass(torch.export.export(net, (example,)))
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
