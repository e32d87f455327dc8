"""CUDA paths: every family forward/backward in fp32/fp16/bf16, and `--half` inference agreeing with CPU fp32 on a
real frame. Skipped without a GPU; `SEGLITE_TEST_DEVICE=cpu` runs the same assertions on the CPU (what
`scripts/gpu_check.py --dry-run` does, so they cannot rot while no GPU is at hand)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import torch
from conftest import require_realdata

import seglite
from seglite.devices import cpu_supports_bf16

pytestmark = pytest.mark.cuda
FAMILIES = ("espnetv1", "espnetv2_s1.0", "deeplabv3p_lcnet_050", "deeplabv3p_mnv3l_050")


@pytest.fixture(scope="module")
def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("SEGLITE_TEST_DEVICE") == "cpu":
        return torch.device("cpu")
    pytest.skip("no CUDA device (set SEGLITE_TEST_DEVICE=cpu to run these assertions on the CPU)")


def _dtypes(device: torch.device) -> list[torch.dtype]:
    if device.type == "cuda":
        return [torch.float32, torch.float16] + ([torch.bfloat16] if torch.cuda.is_bf16_supported() else [])
    return [torch.float32] + ([torch.bfloat16] if cpu_supports_bf16() else [])


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_backward_in_every_precision(name, device):
    for dtype in _dtypes(device):
        torch.manual_seed(0)
        model = seglite.create_model(name, num_classes=19).to(device)
        x = torch.randn(2, 3, 128, 256, device=device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), torch.randint(0, 19, (2, 128, 256), device=device))
        loss.backward()
        assert logits.shape == (2, 19, 128, 256) and torch.isfinite(loss), (name, dtype)
        grads = [p.grad for p in model.parameters() if p.requires_grad]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), (name, dtype)


def test_half_inference_agrees_with_cpu_fp32_on_a_real_frame(device):
    from seglite.inference.segmenter import Segmenter

    weights = str(require_realdata("weights", "espnetv2", "espnetv2_s_2.0_city_1024x512.pth"))
    frame = cv2.imread(str(require_realdata("cityscapes_val_sample", "leftImg8bit", "val", "frankfurt",
                                            "frankfurt_000000_000576_leftImg8bit.png")))  # fmt: skip
    size = (1024, 512) if device.type == "cuda" else (512, 256)
    reference = Segmenter(weights=weights, device="cpu", size=size, backend="torch")(frame)
    if device.type == "cpu" and not cpu_supports_bf16():
        pytest.skip("this CPU has no bf16 instructions: --half is refused here")
    half = Segmenter(weights=weights, device=str(device), size=size, half=True, backend="torch")(frame)
    agreement = float(np.mean(reference == half))
    assert agreement >= 0.99, agreement
