"""Core ML (.mlpackage, ML program) for iPhone, iPad and Mac. coremltools converts on Linux, but only Apple systems
run the result: here seglite checks the converted spec (input, output, metadata) and says it did not run it."""

from __future__ import annotations

import json
import warnings

import numpy as np
import torch

from seglite.errors import SegliteError
from seglite.export.base import ExportRequest, Format


class CoreMlFormat(Format):
    name = "coreml"
    title = "Core ML"
    model_file = "model.mlpackage"
    precisions = ("fp32", "fp16")
    portable = True
    matrix_pooling = True
    modules = ("coremltools",)
    runs_here_note = "Core ML runs only on Apple systems: the converted spec was checked, the model was not run here"

    def missing(self) -> str | None:
        if (why := super().missing()) is not None:
            return why
        from importlib.metadata import version

        tools, numbers = version("coremltools"), np.__version__
        if _release(tools) <= (9, 0) and _release(numbers) >= (2, 4):
            return (
                f"--format coreml: coremltools {tools} cannot convert with numpy {numbers} (it needs numpy < 2.4): "
                "export Core ML from an environment with pip install 'numpy<2.4'"
            )
        return None

    def export(self, request: ExportRequest) -> None:
        import coremltools as ct

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(request.net, request.example, check_trace=False).eval())
        shape = tuple(request.example.shape)
        try:
            model = ct.convert(
                traced,
                inputs=[ct.TensorType(name="image", shape=shape)],
                outputs=[ct.TensorType(name="logits")],
                convert_to="mlprogram",
                compute_precision=ct.precision.FLOAT16 if request.precision == "fp16" else ct.precision.FLOAT32,
                minimum_deployment_target=ct.target.iOS16,
            )
        except TypeError as exc:
            if "0-dimensional" in str(exc):  # coremltools 9 casts 1-element arrays with int(), which numpy 2.4 refuses
                raise SegliteError(
                    f"coremltools {ct.__version__} cannot convert with numpy {np.__version__} "
                    "(it needs numpy < 2.4): export Core ML from an environment with pip install 'numpy<2.4'"
                ) from None
            raise
        model.user_defined_metadata["seglite"] = json.dumps(request.record)
        model.short_description = f"seglite {request.record['model']} ({len(request.record['classes'])} classes)"
        spec = model.get_spec()
        inputs = [tuple(i.type.multiArrayType.shape) for i in spec.description.input]
        if inputs != [shape] or len(spec.description.output) != 1:
            raise SegliteError(f"Core ML conversion gave inputs {inputs} and {len(spec.description.output)} outputs")
        model.save(str(request.folder / self.model_file))


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())
