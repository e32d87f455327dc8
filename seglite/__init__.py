"""seglite: fast, lightweight semantic segmentation of street scenes."""

import os

# FFmpeg (inside OpenCV) prints decoder complaints straight to stderr; seglite reports damaged inputs itself.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # e.g. V4L2's "can't open camera by index": seglite names it itself

from seglite.errors import SegliteError
from seglite.models.registry import create_model, list_models

__version__ = "0.5.0"

__all__ = ["Segmenter", "SegliteError", "create_model", "list_models", "load_weights", "__version__"]


def __getattr__(name: str):
    # Segmenter and load_weights pull in OpenCV; import them on first use to keep `import seglite` fast.
    if name == "Segmenter":
        from seglite.inference.segmenter import Segmenter

        return Segmenter
    if name == "load_weights":
        from seglite.zoo.checkpoint import load_weights

        return load_weights
    raise AttributeError(name)
