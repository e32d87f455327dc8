"""Ultralytics' segmentation labels (`labels/*.txt`, a line per object: `class x1 y1 x2 y2 ...`, coordinates as
fractions of the image's width and height) drawn as a class-id mask, so a data set exported for YOLO (Roboflow,
CVAT, Label Studio all write it) trains here unchanged.

Hand-written because Ultralytics itself is not a dependency (its `polygons2masks` draws one mask per object for
instance heads); OpenCV's fillPoly does the drawing."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from seglite.errors import DataError

ORIENTATION_TAG = 0x0112  # EXIF
BACKGROUND = "background"  # class 0 of a YOLO data set here: the pixels no polygon covers


def upright_size(image: Image.Image) -> tuple[int, int]:
    """An image's width and height as it is read (cv2 turns a photo upright by its EXIF orientation; 5-8 turn it by
    a quarter), from the header alone."""
    width, height = image.size
    return (height, width) if image.getexif().get(ORIENTATION_TAG, 1) in (5, 6, 7, 8) else (width, height)


def read_polygon_mask(label: Path, image: Path, objects: int) -> np.ndarray:
    """Class ids (0 background, YOLO class k as k + 1) at the image's upright size. Larger polygons are drawn first,
    so an object inside another stays visible (Ultralytics orders overlapping masks so too). A missing label file is
    an image with no object (Ultralytics' background images)."""
    try:
        with Image.open(image) as opened:
            width, height = upright_size(opened)
    except OSError as exc:
        raise DataError(f"{image}: unreadable image ({exc})") from None
    mask = np.zeros((height, width), np.uint8)
    if not label.is_file():
        return mask
    polygons = []
    for line_no, line in enumerate(label.read_text().splitlines(), 1):
        values = line.split()
        if not values:
            continue
        try:
            numbers = [float(v) for v in values]
        except ValueError:
            raise DataError(f"{label}:{line_no}: expected `class x1 y1 x2 y2 ...` (numbers), found {line!r}") from None
        cls = numbers[0]
        if not cls.is_integer() or not 0 <= cls < objects:
            raise DataError(f"{label}:{line_no}: class {values[0]} is not one of the data set's 0..{objects - 1}")
        points = numbers[1:]
        if len(points) == 4:
            raise DataError(
                f"{label}:{line_no}: a box (class x y w h), not a polygon: a detection label; export the data set "
                "for segmentation"
            )
        if len(points) < 6 or len(points) % 2:
            raise DataError(f"{label}:{line_no}: a polygon needs x y pairs, at least 3, found {len(points)} numbers")
        xy = np.asarray(points, np.float64).reshape(-1, 2) * (width, height)
        polygons.append((int(cls) + 1, np.round(xy).astype(np.int32)))
    for value, xy in sorted(polygons, key=lambda item: -abs(cv2.contourArea(item[1]))):
        cv2.fillPoly(mask, [xy], value)
    return mask
