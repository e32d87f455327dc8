"""ONNX (opset 17, static shape): ONNX Runtime, TensorRT, OpenCV DNN, and most edge toolchains start from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglite.export.base import ExportRequest, Format


class OnnxFormat(Format):
    name = "onnx"
    title = "ONNX (ONNX Runtime)"
    model_file = "model.onnx"
    precisions = ("fp32", "fp16")
    modules = ("onnx", "onnxruntime")

    def export(self, request: ExportRequest) -> None:
        from seglite.inference.onnx_export import export_onnx

        record = request.record
        metadata = {  # the fields older seglite versions read, plus the whole record
            "model": record["model"],
            "preprocess": record["preprocess"],
            "classes": record["classes"],
            "precision": request.precision,
            "weights": record["source_weights"],
            "seglite": record,
        }
        net = request.net.half() if request.precision == "fp16" else request.net
        width, height = request.example.shape[-1], request.example.shape[-2]
        try:
            export_onnx(
                net, (width, height), request.folder / self.model_file, metadata=metadata, dynamic=request.dynamic
            )
        finally:
            request.net.float()

    def load(self, folder: Path, record: dict, threads: int):
        from seglite.inference.onnx_export import ort_session

        path = folder if folder.is_file() else folder / self.model_file
        session = ort_session(path, threads)
        half = session.get_inputs()[0].type == "tensor(float16)"

        def run(images: np.ndarray) -> np.ndarray:
            out = session.run(None, {"image": images.astype(np.float16) if half else images})[0]
            return out.astype(np.float32, copy=False)

        return run
