"""TensorRT engine: built on, and for, one NVIDIA GPU (Jetson or desktop) from the ONNX export."""

from __future__ import annotations

import importlib.util

from seglite.export.base import Format


class TensorRtFormat(Format):
    name = "engine"
    title = "TensorRT engine"
    model_file = "model.engine"
    precisions = ("fp32", "fp16")
    modules = ("tensorrt",)

    def missing(self) -> str | None:
        import torch

        if not torch.cuda.is_available():
            return (
                "--format engine builds a TensorRT engine on the NVIDIA GPU that will run it, and this machine has "
                "none: run the export there (pip install tensorrt), or export --format onnx and build it with trtexec"
            )
        if importlib.util.find_spec("tensorrt") is None:
            return "--format engine needs tensorrt: pip install tensorrt (the version for your CUDA)"
        return "--format engine: not built by this seglite version yet; export --format onnx and run trtexec"
