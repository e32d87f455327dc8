"""TensorRT engine: built on, and for, one NVIDIA GPU (Jetson or desktop) from the ONNX export. An engine runs only
on the GPU model and TensorRT version that built it, so it is built where it will run (scripts/gpu_check.py does
on a lent GPU). Input and output stay fp32; `--precision fp16` lets TensorRT pick half-precision kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglite.export.base import ExportRequest, Format


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
        if super().missing():
            return "--format engine needs tensorrt: pip install tensorrt (the version for your CUDA)"
        return None

    def export(self, request: ExportRequest) -> None:
        import tensorrt as trt

        from seglite.inference.onnx_export import export_onnx

        onnx_file = request.folder / "model.onnx"
        export_onnx(request.net, (request.example.shape[-1], request.example.shape[-2]), onnx_file)
        logger = trt.Logger(trt.Logger.ERROR)
        builder = trt.Builder(logger)
        # TensorRT 10 has only explicit-batch networks; 8.x must be asked for one
        flags = (
            0
            if int(trt.__version__.split(".")[0]) >= 10
            else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
        )
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_file.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT cannot parse the ONNX export: {errors}")
        config = builder.create_builder_config()
        if request.precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError("TensorRT built no engine for this network (its log above says why)")
        (request.folder / self.model_file).write_bytes(bytes(serialized))
        onnx_file.unlink()

    def load(self, folder: Path, record: dict, threads: int):
        import tensorrt as trt
        import torch

        logger = trt.Logger(trt.Logger.ERROR)
        engine = trt.Runtime(logger).deserialize_cuda_engine((folder / self.model_file).read_bytes())
        if engine is None:
            raise RuntimeError("TensorRT cannot load this engine: it was built for another GPU or TensorRT version")
        context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        source = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        target = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        output = torch.empty(tuple(engine.get_tensor_shape(target)), device="cuda", dtype=torch.float32)
        context.set_tensor_address(target, output.data_ptr())  # the output buffer is the same every call
        stream = torch.cuda.Stream()

        def run(images: np.ndarray) -> np.ndarray:
            with torch.cuda.stream(stream):
                inputs = torch.from_numpy(np.ascontiguousarray(images)).to("cuda", non_blocking=True)
                context.set_tensor_address(source, inputs.data_ptr())
                context.execute_async_v3(stream.cuda_stream)
                return output.cpu().numpy()  # a blocking copy on this stream: the engine has finished

        return run
