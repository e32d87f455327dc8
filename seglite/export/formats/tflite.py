"""LiteRT (TensorFlow Lite) flatbuffer through litert-torch: Android, iOS, Raspberry Pi and microcontrollers run
it with the XNNPACK delegate on CPU. The input stays NCHW, as in PyTorch."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from seglite.export.base import ExportRequest, Format


class TfliteFormat(Format):
    name = "tflite"
    title = "LiteRT (TFLite)"
    model_file = "model.tflite"
    portable = True
    modules = ("litert_torch", "ai_edge_litert")

    def export(self, request: ExportRequest) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the converter's C++ logging
        logging.getLogger("absl").setLevel(logging.ERROR)
        import litert_torch

        converted = litert_torch.convert(request.net, (request.example,))
        converted.export(str(request.folder / self.model_file))

    def load(self, folder: Path, record: dict, threads: int | None = None):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(folder / self.model_file), num_threads=threads or os.cpu_count())
        interpreter.allocate_tensors()
        source = interpreter.get_input_details()[0]["index"]
        target = interpreter.get_output_details()[0]["index"]

        def run(images: np.ndarray) -> np.ndarray:
            interpreter.set_tensor(source, images)
            interpreter.invoke()
            return interpreter.get_tensor(target).copy()

        return run
