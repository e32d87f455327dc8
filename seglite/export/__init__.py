"""Deployment formats: one file per runtime in `formats/` (an exporter plus a runner), one line each in FORMATS.

An exported artifact is a folder (`<name>_<format>_model/`) holding the runtime's files and `seglite.yaml`, the
record that makes it self-describing (classes, palette, preprocessing, input size, source weights' sha256); a
single `.onnx` file carries the same record in its metadata. `open_artifact` turns either back into LoadedWeights
whose network is the runtime, so predict, eval and bench take an artifact as --weights (Ultralytics' AutoBackend).
Modules load on first use: importing seglite pulls in no converter or runtime."""

from __future__ import annotations

import importlib

from seglite.errors import InputError
from seglite.export.base import Format

FORMATS = {  # name -> "module:class", in the order `seglite benchmark` tries them
    "onnx": "seglite.export.formats.onnx:OnnxFormat",
    "torchscript": "seglite.export.formats.torchscript:TorchScriptFormat",
    "openvino": "seglite.export.formats.openvino:OpenVinoFormat",
    "tflite": "seglite.export.formats.tflite:TfliteFormat",
    "ncnn": "seglite.export.formats.ncnn:NcnnFormat",
    "executorch": "seglite.export.formats.executorch:ExecuTorchFormat",
    "coreml": "seglite.export.formats.coreml:CoreMlFormat",
    "engine": "seglite.export.formats.engine:TensorRtFormat",
}


def get_format(name: str) -> Format:
    key = name.lower().replace("-", "")
    key = {"litert": "tflite", "openvino_ir": "openvino", "tensorrt": "engine", "pte": "executorch"}.get(key, key)
    if key not in FORMATS:
        raise InputError(f"--format {name!r}: expected one of {', '.join(FORMATS)}")
    module, _, cls = FORMATS[key].partition(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["FORMATS", "Format", "get_format"]
