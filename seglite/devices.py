"""Device choice shared by every command."""

from __future__ import annotations

import torch

from seglite.errors import DeviceError


def resolve_device(device: str = "auto") -> torch.device:
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DeviceError(f"--device {device}: no CUDA GPU is visible to PyTorch; use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise DeviceError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
