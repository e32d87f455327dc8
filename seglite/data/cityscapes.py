"""The Cityscapes folder layout: finding image/label pairs and reading labels as trainIds."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from seglite.data.labels import IGNORE_INDEX, NUM_CLASSES, VALID_LABEL_IDS, label_ids_to_train_ids
from seglite.errors import DataError

IMAGE_SUFFIX = "_leftImg8bit.png"
_VALID_IDS = np.zeros(256, bool)
_VALID_IDS[list(VALID_LABEL_IDS)] = True


@dataclass(frozen=True)
class Sample:
    stem: str  # city_seq_frame
    image: Path
    label: Path | None  # *_gtFine_labelTrainIds.png when present, else *_gtFine_labelIds.png

    @property
    def city(self) -> str:
        return self.image.parent.name


def find_samples(root: str | Path, split: str, require_labels: bool = True) -> list[Sample]:
    """All images of a split, sorted, with their fine labels; a clear DataError when the layout is off."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root}: no such folder (expected leftImg8bit/ and gtFine/ inside)")
    image_dir = root / "leftImg8bit" / split
    if not image_dir.is_dir():
        raise DataError(
            f"{image_dir}: missing; a Cityscapes root holds leftImg8bit/{split}/<city>/*{IMAGE_SUFFIX}"
            + where_it_is(root, f"leftImg8bit/{split}", PACKED)
        )
    samples = []
    for image in sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}")):
        stem = image.name[: -len(IMAGE_SUFFIX)]
        label_dir = root / "gtFine" / split / image.parent.name
        label = next(
            (
                p
                for p in (label_dir / f"{stem}_gtFine_labelTrainIds.png", label_dir / f"{stem}_gtFine_labelIds.png")
                if p.is_file()
            ),
            None,
        )
        samples.append(Sample(stem, image, label))
    if not samples:
        raise DataError(f"{image_dir}: no *{IMAGE_SUFFIX} images in any city folder")
    if require_labels:
        unlabeled = [s for s in samples if s.label is None]
        if len(unlabeled) == len(samples):
            raise DataError(
                f"{root / 'gtFine' / split}: no *_gtFine_labelIds.png labels for split {split!r}"
                + where_it_is(root, f"gtFine/{split}", PACKED)
            )
        if unlabeled:
            raise DataError(
                f"{unlabeled[0].image}: no label (expected gtFine/{split}/{unlabeled[0].city}/"
                f"{unlabeled[0].stem}_gtFine_labelIds.png); {len(unlabeled)} image(s) lack one"
            )
    return samples


PACKED = ("leftImg8bit", "gtFine")  # the names Cityscapes' zips start with


@functools.lru_cache(maxsize=64)  # data check asks once per image without a mask: one look at the folder
def where_it_is(root: Path, relative: str, packed: tuple[str, ...] = ("",)) -> str:
    """Why `root/relative` is missing, for every layout: a download's zips (named `packed`...`.zip`) not unpacked in
    `root` yet, the data root one folder further down, or what the folder holds instead ("" when none applies)."""
    zips = sorted({p.name for prefix in packed for p in root.glob(f"{prefix}*.zip")})
    if zips:
        unzip = " && ".join(f"unzip -q {name}" for name in zips)
        return f"; {', '.join(zips)} {'is' if len(zips) == 1 else 'are'} still packed: cd {root} && {unzip}"
    depth = len(Path(relative).parts)
    inside = sorted(p for p in root.glob(f"*/{relative}") if p.exists())
    if inside:
        return f"; found {inside[0]}: pass --data-root {inside[0].parents[depth - 1]}"
    parent = (root / relative).parent
    if parent != root and parent.is_dir():
        held = sorted(d.name for d in parent.iterdir() if not d.name.startswith("."))
        return f"; {parent} holds {', '.join(held[:8]) or 'nothing'}"
    return ""


def read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{path}: unreadable image")
    return image


def read_train_ids(path: Path) -> np.ndarray:
    """A label file as uint8 trainIds (255 = ignore): labelTrainIds as is, labelIds through the official map."""
    label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if label is None or label.ndim != 2:
        raise DataError(f"{path}: unreadable or not a single-channel label image")
    if path.name.endswith("_labelTrainIds.png"):
        return label.astype(np.uint8)
    if label.dtype != np.uint8:
        raise DataError(f"{path}: labelIds must be 8-bit, found {label.dtype}")
    return label_ids_to_train_ids(label)


def read_checked_train_ids(sample: Sample) -> np.ndarray:
    """trainIds of a sample's label, refusing ids that are no Cityscapes class (a corrupt or foreign label)."""
    raw = cv2.imread(str(sample.label), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2:
        raise DataError(f"{sample.label}: unreadable or not a single-channel label image")
    if sample.label.name.endswith("_labelTrainIds.png"):
        bad = raw[(raw >= NUM_CLASSES) & (raw != IGNORE_INDEX)]
    else:
        bad = raw[~_VALID_IDS[raw]] if raw.dtype == np.uint8 else raw
    if bad.size:
        raise DataError(f"{sample.label}: label value {int(bad.flat[0])} is not a Cityscapes class id")
    if sample.label.name.endswith("_labelTrainIds.png"):
        return raw.astype(np.uint8)
    return label_ids_to_train_ids(raw)
