"""ncnn (model.ncnn.param + model.ncnn.bin) through pnnx: Tencent's runtime for phones, Raspberry Pi and other ARM
boards (and x86), with fp16 storage where the CPU has it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from seglite.errors import SegliteError
from seglite.export.base import ExportRequest, Format


class NcnnFormat(Format):
    name = "ncnn"
    title = "ncnn"
    model_file = "model.ncnn.param"
    precisions = ("fp32", "fp16")
    portable = True
    modules = ("pnnx", "ncnn")

    def export(self, request: ExportRequest) -> None:
        import pnnx

        folder = request.folder
        keep = {self.model_file, "model.ncnn.bin"}
        pnnx.export(
            request.net,
            str(folder / "model.pt"),
            (request.example,),
            check_trace=False,
            fp16=request.precision == "fp16",
        )
        for path in folder.iterdir():  # pnnx also leaves its own IR, a traced .pt and Python scripts
            if path.name not in keep and path.is_file():
                path.unlink()
        if not (folder / self.model_file).is_file():
            raise SegliteError("pnnx could not convert the network to ncnn (its log is below)")

    def load(self, folder: Path, record: dict, threads: int):
        import ncnn

        net = ncnn.Net()
        half = record.get("precision") == "fp16"
        net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = half
        net.opt.use_bf16_storage = False
        net.opt.num_threads = threads
        if net.load_param(str(folder / self.model_file)) or net.load_model(str(folder / "model.ncnn.bin")):
            raise OSError(f"ncnn could not read {folder}")

        def run(images: np.ndarray) -> np.ndarray:
            with net.create_extractor() as extractor:
                extractor.input("in0", ncnn.Mat(np.ascontiguousarray(images[0])))
                _, out = extractor.extract("out0")
                return np.array(out)[None]

        return run
