"""Inference backends behind one contract (base.Backend). A new backend is one file in this folder plus one line
in BACKENDS; modules load on first use, so importing the Segmenter pulls in neither ONNX Runtime nor Inductor."""

from __future__ import annotations

import importlib

from seglite.errors import SegliteError
from seglite.inference.backends.base import Backend, BackendContext

BACKENDS = {  # name -> "module:class"
    "torch": "seglite.inference.backends.eager:EagerBackend",
    "torch.compile": "seglite.inference.backends.compiled:CompiledBackend",
    "onnx": "seglite.inference.backends.onnx:OnnxBackend",
    "openvino": "seglite.inference.backends.openvino:OpenVinoBackend",
    "int8": "seglite.inference.backends.int8:Int8Backend",
    "artifact": "seglite.inference.backends.artifact:ArtifactBackend",
}


def create_backend(name: str, context: BackendContext) -> Backend:
    if name not in BACKENDS:
        raise SegliteError(f"backend {name!r}: expected one of {', '.join(BACKENDS)}")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(context)


__all__ = ["BACKENDS", "Backend", "BackendContext", "create_backend"]
