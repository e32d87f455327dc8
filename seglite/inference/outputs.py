"""The files `predict` writes per input: overlay, colour mask, trainId and labelId PNGs (a JPEG's overlay: JPEG)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from seglite.data.labels import CLASS_NAMES, train_ids_to_label_ids
from seglite.errors import InputError
from seglite.files import atomic_write_bytes, write_failure
from seglite.inference.visualize import colorize, overlay

FORMATS = ("overlay", "color", "trainid", "labelid")
# A JPEG input's overlay is written as JPEG (quality 95, full-resolution colour so class edges stay crisp), as
# Ultralytics writes predictions: at 2048x1024 it encodes in ~10 ms against ~100 for PNG, at a fifth of the size, and
# the photo under it was lossy already. Masks and colour maps are always PNG: their ids and colours must stay exact.
JPEG_SUFFIXES = (".jpg", ".jpeg")
_JPEG_PARAMS = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]


def output_name(stem: str, fmt: str, input_suffix: str = ".png") -> str:
    """`<stem>_<fmt>.png`, or `.jpg` for the overlay of a JPEG input."""
    jpeg = fmt == "overlay" and input_suffix.lower() in JPEG_SUFFIXES
    return f"{stem}_{fmt}{'.jpg' if jpeg else '.png'}"


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(f"--format {text!r}: choose from {', '.join(FORMATS)} (comma-separated)")
    return formats


def check_formats(formats: tuple[str, ...], classes: tuple[str, ...], dataset_name: str) -> None:
    """labelid is Cityscapes' submission format: weights trained on other classes (whatever their data set is
    called) have no labelIds."""
    if "labelid" in formats and tuple(classes) != CLASS_NAMES:
        raise InputError(
            f"--format labelid is Cityscapes' submission format; these weights predict {dataset_name} classes: "
            "use trainid (class ids), color or overlay"
        )


def render(
    fmt: str, image_bgr: np.ndarray, train_ids: np.ndarray, alpha: float, lut: np.ndarray | None = None
) -> np.ndarray:
    """`lut`: the weights' colours (seglite.inference.visualize.palette_lut); None = Cityscapes'."""
    if fmt == "overlay":
        return overlay(image_bgr, train_ids, alpha, lut)
    if fmt == "color":
        return colorize(train_ids, lut)
    if fmt == "trainid":
        return train_ids
    return train_ids_to_label_ids(train_ids)


def write_outputs(
    out_dir: Path,
    stem: str,
    image_bgr: np.ndarray,
    train_ids: np.ndarray,
    formats: tuple[str, ...],
    alpha: float,
    lut: np.ndarray | None = None,
    input_suffix: str = ".png",
) -> list[Path]:
    written = []
    for fmt in formats:
        path = out_dir / output_name(stem, fmt, input_suffix)
        params = _JPEG_PARAMS if path.suffix == ".jpg" else []
        ok, encoded = cv2.imencode(path.suffix, render(fmt, image_bgr, train_ids, alpha, lut), params)
        if not ok:
            raise InputError(f"{path}: could not be encoded as {path.suffix[1:].upper()}")
        try:
            atomic_write_bytes(encoded.tobytes(), path)
        except OSError as exc:
            raise write_failure(exc, path) from None
        written.append(path)
    return written
