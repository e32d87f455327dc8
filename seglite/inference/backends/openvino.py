"""OpenVINO on the CPU: the network converted in memory at the fixed input size (cached on disk per weights, size
and batch), fp32 math (OpenVINO would run bf16 on CPUs that have it, which changes ESPNetv2's predictions)."""

from __future__ import annotations

import importlib.util
import os
import warnings

import torch

from seglite.errors import SegliteError
from seglite.inference.backends.base import Backend, BackendContext


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def convert_torch(model: torch.nn.Module, example: torch.Tensor):
    """`ov.convert_model` of a network at one input size, without the tracer's warnings (shape arithmetic that is
    constant at a fixed size, torch.jit.trace's deprecation: a screen of them on a first run means nothing to a
    user; the backend trial and the export check the converted model's labels)."""
    import openvino as ov

    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return ov.convert_model(model, example_input=example)


class OpenVinoBackend(Backend):
    name = "openvino"

    def __init__(self, context: BackendContext):
        super().__init__(context)
        context.require_fixed_cpu("--backend openvino")
        if not openvino_available():
            raise SegliteError("--backend openvino needs openvino: pip install 'seglite[export]'")
        self.requests: dict[int, object] = {}

    def serves(self, batch: torch.Tensor) -> bool:
        return self.fits_size(batch)

    def request(self, batch_size: int):
        if batch_size not in self.requests:
            import openvino as ov

            core = ov.Core()
            path = self._cached_model(batch_size)
            config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
            if (threads := torch.get_num_threads()) != os.cpu_count():
                config["INFERENCE_NUM_THREADS"] = threads
            self.requests[batch_size] = core.compile_model(str(path), "CPU", config).create_infer_request()
        return self.requests[batch_size]

    def _cached_model(self, batch_size: int):
        import openvino as ov

        from seglite import __version__
        from seglite.files import temporary_name
        from seglite.inference.onnx_export import cache_key
        from seglite.zoo.registry import seglite_home

        loaded, (width, height) = self.context.loaded, self.context.size
        key = cache_key(loaded, (width, height), batch_size, __version__)
        path = seglite_home() / "openvino" / f"{key}.xml"
        if not path.is_file():
            example = torch.zeros(batch_size, 3, height, width)
            model = convert_torch(self.context.model.float(), example)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = temporary_name(path)  # the .bin beside it takes the same stem: rename both once complete
            ov.save_model(model, str(tmp.with_suffix(".xml")), compress_to_fp16=False)
            os.replace(tmp.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(tmp.with_suffix(".xml"), path)
        return path

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        request = self.request(batch.shape[0])
        request.infer({0: batch.float().contiguous().numpy()})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())
