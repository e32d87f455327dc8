"""seglite: fast, lightweight semantic segmentation of street scenes."""

import os

# FFmpeg (inside OpenCV) prints decoder complaints straight to stderr; seglite reports damaged inputs itself.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")  # e.g. V4L2's "can't open camera by index": seglite names it itself

from seglite.errors import SegliteError

__version__ = "0.5.0"

__all__ = ["Segmenter", "SegliteError", "create_model", "list_models", "load_weights", "__version__"]


def __getattr__(name: str):
    # Everything here pulls in torch or OpenCV: imported on first use, so `import seglite` stays fast and the CLI can
    # set OpenMP's wait policy before torch loads (seglite.sharing).
    if name in ("create_model", "list_models"):
        from seglite.models import registry

        return getattr(registry, name)
    if name == "Segmenter":
        from seglite.inference.segmenter import Segmenter

        return Segmenter
    if name == "load_weights":
        from seglite.zoo.checkpoint import load_weights

        return load_weights
    raise AttributeError(name)
