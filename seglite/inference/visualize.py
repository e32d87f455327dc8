"""Colour masks and overlays in the Cityscapes palette."""

from __future__ import annotations

import numpy as np

from seglite.data.labels import PALETTE_RGB

PALETTE_BGR = np.ascontiguousarray(PALETTE_RGB[:, ::-1])


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """HxW trainIds -> HxWx3 BGR colour mask (ignore is black)."""
    return PALETTE_BGR[train_ids]


def overlay(image_bgr: np.ndarray, train_ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour mask over the image; ignored pixels keep the image."""
    mask = colorize(train_ids).astype(np.float32)
    blended = image_bgr.astype(np.float32) * (1.0 - alpha) + mask * alpha
    keep = train_ids == 255
    blended[keep] = image_bgr[keep]
    return blended.astype(np.uint8)
