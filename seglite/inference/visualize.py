"""Colour masks and overlays in the Cityscapes palette."""

from __future__ import annotations

import cv2
import numpy as np

from seglite.data.labels import PALETTE_RGB

PALETTE_BGR = np.ascontiguousarray(PALETTE_RGB[:, ::-1])


def colorize(train_ids: np.ndarray) -> np.ndarray:
    """HxW trainIds -> HxWx3 BGR colour mask (ignore is black)."""
    return PALETTE_BGR[train_ids]


def overlay(image_bgr: np.ndarray, train_ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour mask over the image; ignored pixels keep the image."""
    blended = cv2.addWeighted(image_bgr, 1.0 - alpha, colorize(train_ids), alpha, 0.0)
    keep = train_ids == 255
    blended[keep] = image_bgr[keep]
    return blended
