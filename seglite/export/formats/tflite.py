"""LiteRT (TensorFlow Lite) flatbuffer through litert-torch: Android, iOS, Raspberry Pi and microcontrollers run
it with the XNNPACK delegate on CPU. The input stays NCHW, as in PyTorch. fp16 (weights stored as float16, what
GPU delegates run in half precision) and full-integer INT8 (int8 weights and activations, ranges from real frames)
come from ai-edge-quantizer, Google's post-training quantizer for LiteRT models. The INT8 model's input and output
are int8 too, with the scale and zero point in the model's tensor details."""

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
    precisions = ("fp32", "fp16", "int8")
    # ESPNetv2 s1.0 at 1024x512 (Xeon), unrolled -> matmuls: fp32 10.2 -> 3.5 MB, 314 -> 186 ms; fp16 9.8 -> 2.0 MB,
    # 315 -> 210 ms; int8 3.2 -> 1.4 MB, 690 -> 595 ms, the same mIoU.
    matrix_pooling = True
    modules = ("litert_torch", "ai_edge_litert", "ai_edge_quantizer")

    def export(self, request: ExportRequest) -> None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # the converter's C++ logging
        logging.getLogger("absl").setLevel(logging.ERROR)
        import litert_torch

        target = request.folder / self.model_file
        converted = litert_torch.convert(request.net, (request.example,))
        if request.precision == "fp32":
            converted.export(str(target))
            return
        floating = request.folder / "float.tflite"
        converted.export(str(floating))
        quantize(floating, target, request.precision, request.calibration)
        floating.unlink()

    def load(self, folder: Path, record: dict, threads: int):
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(folder / self.model_file), num_threads=threads)
        interpreter.allocate_tensors()
        source, target = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        to_input, from_output = _quantizer(source), _dequantizer(target)

        def run(images: np.ndarray) -> np.ndarray:
            interpreter.set_tensor(source["index"], to_input(images))
            interpreter.invoke()
            return from_output(interpreter.get_tensor(target["index"]))

        return run


def _quantizer(detail: dict):
    """A full-integer model takes int8: x / scale + zero point, as the app on the device must do too."""
    if detail["dtype"] == np.float32:
        return lambda x: x
    scale, zero = detail["quantization"]
    info = np.iinfo(detail["dtype"])
    return lambda x: np.clip(np.round(x / scale + zero), info.min, info.max).astype(detail["dtype"])


def _dequantizer(detail: dict):
    if detail["dtype"] == np.float32:
        return lambda q: q.copy()
    scale, zero = detail["quantization"]
    return lambda q: (q.astype(np.float32) - zero) * np.float32(scale)


def quantize(floating: Path, target: Path, precision: str, calibration: list[np.ndarray]) -> None:
    """fp16: every weight cast to float16; int8: static int8 weights and activations (min-max over the frames)."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_quantizer import algorithm_manager, qtyping, quantizer, recipe

    engine = quantizer.Quantizer(str(floating))
    if precision == "fp16":
        engine.add_weight_only_config(
            ".*",
            qtyping.TFLOperationName.ALL_SUPPORTED,
            16,
            algorithm_key=algorithm_manager.AlgorithmName.FLOAT_CASTING,
        )
        result = engine.quantize(enable_progress_report=False)
    else:
        engine.load_quantization_recipe(recipe.static_wi8_ai8())
        signatures = Interpreter(model_path=str(floating)).get_signature_list()
        key = next(iter(signatures))
        (input_name,) = signatures[key]["inputs"]
        frames = [{input_name: frame.astype(np.float32)} for frame in calibration]
        result = engine.quantize(engine.calibrate({key: frames}), enable_progress_report=False)
    result.export_model(str(target), overwrite=True)
