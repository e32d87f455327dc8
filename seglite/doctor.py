"""`seglite doctor`: the facts a bug report needs (versions, backends, CPU features, caches), in one place."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def export_formats() -> dict[str, str]:
    """Each deployment format: 'ready', or why not (a missing extra, no GPU)."""
    from seglite.export import FORMATS, get_format

    status = {}
    for name in FORMATS:
        fmt = get_format(name)
        why = fmt.missing()
        status[name] = (
            "ready" + (f" (export only: {fmt.runs_here_note})" if fmt.runs_here_note else "") if not why else why
        )
    return status


def report(shared_cpu_note: str | None = None) -> dict:
    import torch

    from seglite import __version__
    from seglite.devices import cpu_info, cpu_supports_bf16
    from seglite.inference import native
    from seglite.zoo.registry import seglite_home

    cpu, flags = cpu_info()
    try:
        import onnxruntime

        providers = onnxruntime.get_available_providers()
    except ImportError:
        providers = []
    home = seglite_home()
    return {
        "seglite": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": {
            name: _version(name)
            for name in (
                "torch",
                "torchvision",
                "timm",
                "segmentation-models-pytorch",
                "onnxruntime",
                "onnx",
                "opencv-python-headless",
                "albumentations",
                "numpy",
            )
        },
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "shared_cpu": shared_cpu_note or "all threads (no core busy at start, or OMP_NUM_THREADS set)",
        "cpu_features": {
            "avx2": "avx2" in flags,
            "avx512f": "avx512f" in flags,
            "avx512_vnni": "avx512_vnni" in flags,
            "amx": "amx_bf16" in flags,
            "bf16 (--half on CPU)": cpu_supports_bf16(),
        },
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device visible",
        "onnxruntime_providers": providers,
        "export formats (seglite export --format)": export_formats(),
        "torch.compile C++ compiler": shutil.which("g++") or shutil.which("clang++") or shutil.which("c++") or "none",
        "C compiler (native CPU labels kernel)": native.compiler() or "none: the OpenCV labels path, slower",
        "caches": {
            "SEGLITE_HOME": str(home),
            "weights": str(home / "weights"),
            "onnx exports and backend choices": str(home / "onnx"),
            "native kernels": str(native.library_dir()),
        },
    }
