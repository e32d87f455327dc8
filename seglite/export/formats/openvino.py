"""OpenVINO IR (model.xml + model.bin) for Intel CPUs, iGPUs and NPUs: fp32, fp16 weights, and INT8 by NNCF's
post-training quantization calibrated on real frames."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglite.export.base import ExportRequest, Format


class OpenVinoFormat(Format):
    name = "openvino"
    title = "OpenVINO IR"
    model_file = "model.xml"
    precisions = ("fp32", "fp16", "int8")
    modules = ("openvino",)

    def export(self, request: ExportRequest) -> None:
        import openvino as ov

        model = ov.convert_model(request.net, example_input=request.example)
        if request.precision == "int8":
            model = quantize(model, request.calibration)
        ov.save_model(model, str(request.folder / self.model_file), compress_to_fp16=request.precision == "fp16")

    def load(self, folder: Path, record: dict, threads: int):
        import openvino as ov

        config = {"PERFORMANCE_HINT": "LATENCY"}
        if record.get("precision") != "fp16":
            # Otherwise OpenVINO runs the float parts in bf16 on CPUs that have it: ESPNetv2 s1.0 INT8 then agreed
            # with PyTorch on 37 % of the pixels of Cityscapes val frames, 96 % with f32 (Xeon with AMX).
            config["INFERENCE_PRECISION_HINT"] = "f32"
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        compiled = ov.Core().compile_model(str(folder / self.model_file), "CPU", config)
        request = compiled.create_infer_request()

        def run(images: np.ndarray) -> np.ndarray:
            request.infer({0: images})
            return request.get_output_tensor(0).data.copy()

        return run


def quantize(model, calibration: list[np.ndarray]):
    """NNCF post-training INT8 (min-max ranges over the calibration frames; FastBiasCorrection keeps the means)."""
    from seglite.errors import InputError

    try:
        import nncf
    except ImportError:
        raise InputError("--precision int8 for openvino needs nncf: pip install 'seglite[export]'") from None
    return nncf.quantize(
        model,
        nncf.Dataset(calibration),
        preset=nncf.QuantizationPreset.MIXED,  # symmetric weights, asymmetric activations (PReLU outputs are signed)
        subset_size=len(calibration),
    )
