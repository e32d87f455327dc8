"""TorchScript (traced): LibTorch in C++ and PyTorch Mobile load it without Python or seglite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from seglite.export.base import ExportRequest, Format


class TorchScriptFormat(Format):
    name = "torchscript"
    title = "TorchScript (LibTorch)"
    model_file = "model.torchscript"

    def export(self, request: ExportRequest) -> None:
        import warnings

        with warnings.catch_warnings():  # the tracer warns about shape arithmetic that is constant at a fixed size
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(request.net, request.example, check_trace=False)
        torch.jit.save(
            torch.jit.freeze(traced.eval()),
            str(request.folder / self.model_file),
            _extra_files={"seglite.json": json.dumps(request.record)},
        )

    def load(self, folder: Path, record: dict, threads: int):
        import warnings

        with warnings.catch_warnings():  # "torch.jit.load is deprecated": still what LibTorch users load
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(folder / self.model_file), map_location="cpu").eval()

        def run(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(images)).float().numpy()

        return run
