"""The backend contract: every backend gives eager's argmax on a real frame, and a batch a backend does not serve
runs in eager PyTorch (one place: Segmenter.forward)."""

from __future__ import annotations

import warnings

import cv2
import pytest
import torch
from conftest import require_realdata

import seglite
from seglite.data.labels import CLASS_NAMES
from seglite.inference.backends import BACKENDS, Backend, create_backend
from seglite.inference.segmenter import Segmenter
from seglite.zoo.checkpoint import LoadedWeights, load_weights
from seglite.zoo.preprocess import IMAGENET

SIZE = (512, 256)


def _family(name: str) -> LoadedWeights:
    if name == "espnetv1":
        return load_weights(require_realdata("weights", "espnet_v1", "decoder_espnet_p_2_q_8.pth"))
    if name == "espnetv2_s0.5":
        return load_weights(require_realdata("weights", "espnetv2", "espnetv2_s_0.5_city_512x256.pth"))
    torch.manual_seed(0)
    model = seglite.create_model(name).eval()
    return LoadedWeights(model, name, CLASS_NAMES, IMAGENET, "random init")


@pytest.fixture(scope="module")
def frame():
    path = require_realdata("cityscapes_val_sample", "leftImg8bit", "val", "frankfurt")
    return cv2.imread(str(path / "frankfurt_000000_000576_leftImg8bit.png"))


@pytest.mark.parametrize("family", ["espnetv1", "espnetv2_s0.5", "deeplabv3p_lcnet_050"])
@pytest.mark.parametrize(
    "backend",
    ["onnx", pytest.param("openvino", marks=pytest.mark.export), pytest.param("torch.compile", marks=pytest.mark.slow)],
)
def test_every_backend_agrees_with_eager_on_a_real_frame(family, backend, frame, tmp_path, monkeypatch):
    # torch.compile (10-40 s a compile here) runs with -m slow, as does
    # tests/test_predict.py::test_compile_gives_the_eager_predictions. INT8: test_int8_is_cached_only_when_accepted.
    monkeypatch.setenv("SEGLITE_HOME", str(tmp_path))
    segmenter = Segmenter.from_loaded(_family(family), size=SIZE)
    eager = segmenter.predict_batch([frame])[0]
    segmenter.runtime = create_backend(backend, segmenter.context)
    assert segmenter.backend == backend
    with warnings.catch_warnings():  # a first run's conversion (trace, export) shows the user no warnings
        warnings.simplefilter("error")
        labels = segmenter.predict_batch([frame])[0]
    assert (labels == eager).mean() >= 0.999


def test_a_batch_the_backend_does_not_serve_runs_eager(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLITE_HOME", str(tmp_path))
    torch.manual_seed(0)
    loaded = LoadedWeights(seglite.create_model("espnetv2_s0.5").eval(), "espnetv2_s0.5", ("a", "b"), IMAGENET, "t")
    segmenter = Segmenter.from_loaded(loaded, size=(256, 128))
    calls = []

    class Static(Backend):
        name = "static"

        def serves(self, batch):
            return self.fits_size(batch)

        def __call__(self, batch):
            calls.append(tuple(batch.shape))
            return torch.zeros(batch.shape[0], 19, *batch.shape[-2:])

    segmenter.runtime = Static(segmenter.context)
    served = torch.randn(1, 3, 128, 256)
    other = torch.randn(1, 3, 96, 160)
    assert segmenter.forward(served).abs().sum() == 0 and calls == [(1, 3, 128, 256)]
    assert torch.equal(segmenter.forward(other), segmenter.eager(other)) and calls == [(1, 3, 128, 256)]


def test_a_new_backend_is_one_registry_line():
    assert set(BACKENDS) == {"torch", "torch.compile", "onnx", "int8", "openvino", "artifact"}
    for target in BACKENDS.values():
        module, _, cls = target.partition(":")
        assert module.startswith("seglite.inference.backends.") and cls.endswith("Backend")
