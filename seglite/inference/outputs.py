"""The files `predict` writes per input: overlay, colour mask, trainId and labelId PNGs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from seglite.data.labels import train_ids_to_label_ids
from seglite.errors import InputError
from seglite.inference.visualize import colorize, overlay

FORMATS = ("overlay", "color", "trainid", "labelid")


def parse_formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise InputError(f"--format {text!r}: choose from {', '.join(FORMATS)} (comma-separated)")
    return formats


def render(fmt: str, image_bgr: np.ndarray, train_ids: np.ndarray, alpha: float) -> np.ndarray:
    if fmt == "overlay":
        return overlay(image_bgr, train_ids, alpha)
    if fmt == "color":
        return colorize(train_ids)
    if fmt == "trainid":
        return train_ids
    return train_ids_to_label_ids(train_ids)


def ensure_writable(folder: Path) -> Path:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".seglite-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"{folder}: output folder cannot be written ({exc.strerror or exc}); pass --out DIR") from None
    return folder


def write_outputs(
    out_dir: Path, stem: str, image_bgr: np.ndarray, train_ids: np.ndarray, formats: tuple[str, ...], alpha: float
) -> list[Path]:
    written = []
    for fmt in formats:
        path = out_dir / f"{stem}_{fmt}.png"
        if not cv2.imwrite(str(path), render(fmt, image_bgr, train_ids, alpha)):
            raise InputError(f"{path}: could not be written")
        written.append(path)
    return written
