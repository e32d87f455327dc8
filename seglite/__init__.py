"""seglite: fast, lightweight semantic segmentation of street scenes."""

import os

# FFmpeg (inside OpenCV) prints decoder complaints straight to stderr; seglite reports damaged inputs itself.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # e.g. V4L2's "can't open camera by index": seglite names it itself

from seglite.errors import SegliteError

__version__ = "0.5.0"

# name -> module that defines it; each imported on first use, so `import seglite` stays fast and the CLI can set
# OpenMP's wait policy before torch loads (seglite.sharing).
_LAZY = {
    "Segmenter": "seglite.inference.segmenter",
    "create_model": "seglite.models.registry",
    "list_models": "seglite.models.registry",
    "load_weights": "seglite.zoo.checkpoint",
    "load_dataset": "seglite.data.datasets",
    "evaluate": "seglite.evaluation.evaluator",
    "EvalOptions": "seglite.evaluation.evaluator",
    "load_config": "seglite.training.config",
    "Trainer": "seglite.training.trainer",
    "export_model": "seglite.export.exporter",
}

__all__ = ["SegliteError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'seglite' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
