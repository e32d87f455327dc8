"""ExecuTorch program (.pte) lowered to the XNNPACK delegate: PyTorch's own on-device runtime (Android, iOS,
embedded Linux)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import numpy as np
import torch

from seglite.errors import InputError
from seglite.export.base import ExportRequest, Format

_runners: weakref.WeakSet = weakref.WeakSet()  # the loaded programs' runners: each one's XNNPACK holds the pool


class ExecuTorchFormat(Format):
    name = "executorch"
    title = "ExecuTorch (XNNPACK)"
    model_file = "model.pte"
    portable = True
    matrix_pooling = True  # ESPNetv2's pyramid pooling as matmuls: the whole net is one XNNPACK delegate
    modules = ("executorch",)

    def export(self, request: ExportRequest) -> None:
        program = lower_to_xnnpack(request.net, request.example).to_executorch()
        (request.folder / self.model_file).write_bytes(program.buffer)

    def load(self, folder: Path, record: dict, threads: int):
        from executorch.runtime import Runtime

        size_thread_pool(threads)
        method = Runtime.get().load_program(str(folder / self.model_file)).load_method("forward")

        def run(images: np.ndarray) -> np.ndarray:
            return method.execute([torch.from_numpy(images)])[0].numpy()

        _runners.add(run)
        return run


def size_thread_pool(threads: int) -> None:
    """XNNPACK runs on ExecuTorch's one process-wide thread pool, sized by its own default. Resizing it frees the
    pool that loaded programs still point to (they would hang or crash), so it is resized only while none is loaded."""
    from executorch.extension.pybindings import portable_lib

    current = portable_lib._threadpool_get_thread_count()
    if current == threads:
        return
    if _runners:
        gc.collect()  # a program kept only by garbage (a reference cycle) is not loaded any more
    if _runners:
        raise InputError(
            f"ExecuTorch runs every program in a process on one thread pool, now {current} threads, which a program "
            f"loaded earlier holds: load this one with {current} threads too, or release the other first"
        )
    portable_lib._unsafe_reset_threadpool(threads)


def lower_to_xnnpack(net: torch.nn.Module, example: torch.Tensor):
    """The edge program with every op XNNPACK takes inside its delegate; the rest runs in ExecuTorch's portable
    kernels (one thread, 2-70x slower). Constants are folded first: a pooling matrix is then a static weight."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.exir.passes.constant_prop_pass import constant_prop_pass

    program = constant_prop_pass(torch.export.export(net, (example,)))
    return to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner()])
