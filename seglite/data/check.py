"""`seglite data check` and `seglite data stats`: is a Cityscapes root usable, and what is in it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from seglite.data.cityscapes import find_samples
from seglite.data.dataset import read_checked_train_ids
from seglite.data.labels import NUM_CLASSES
from seglite.errors import DataError

SPLITS = ("train", "val", "test")
FULL_COUNTS = {"train": 2975, "val": 500, "test": 1525}


@dataclass
class SplitReport:
    split: str
    images: int = 0
    labelled: int = 0
    problems: list[str] = field(default_factory=list)


def check_dataset(
    root: str | Path, splits: tuple[str, ...] = SPLITS, read_labels: bool = True, progress=None
) -> list[SplitReport]:
    """Counts, missing pairs, size mismatches (from headers) and, with read_labels, unknown label values."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data root {root}: no such folder")
    reports = []
    for split in splits:
        if not (root / "leftImg8bit" / split).is_dir():
            continue
        report = SplitReport(split)
        try:
            samples = find_samples(root, split, require_labels=False)
        except DataError as exc:
            report.problems.append(str(exc))
            reports.append(report)
            continue
        report.images = len(samples)
        for sample in samples:
            if progress:
                progress()
            if sample.label is None:
                if split != "test":
                    report.problems.append(f"{sample.image}: no gtFine label")
                continue
            report.labelled += 1
            try:
                with Image.open(sample.image) as image, Image.open(sample.label) as label:
                    if image.size != label.size:
                        report.problems.append(
                            f"{sample.label}: {label.size[0]}x{label.size[1]}, image {image.size[0]}x{image.size[1]}"
                        )
                        continue
                if read_labels:
                    read_checked_train_ids(sample)
            except (OSError, DataError) as exc:
                report.problems.append(
                    str(exc) if isinstance(exc, DataError) else f"{sample.image}: unreadable ({exc})"
                )
        reports.append(report)
    if not reports:
        raise DataError(f"{root}: no leftImg8bit/{{train,val,test}} folders; is this a Cityscapes root?")
    return reports


def class_frequencies(root: str | Path, split: str = "train", progress=None) -> np.ndarray:
    """Pixel frequency of each of the 19 classes over a split's labels (ignore excluded)."""
    counts = np.zeros(NUM_CLASSES, np.int64)
    for sample in find_samples(root, split):
        labels = read_checked_train_ids(sample)
        counts += np.bincount(labels[labels < NUM_CLASSES].ravel(), minlength=NUM_CLASSES)
        if progress:
            progress()
    total = counts.sum()
    if total == 0:
        raise DataError(f"{root}: split {split!r} has no labelled pixels")
    return counts / total


def espnet_class_weights(frequencies: np.ndarray) -> np.ndarray:
    """ESPNet's (ERFNet's) class weights: w = 1 / ln(1.10 + p)."""
    return 1.0 / np.log(1.10 + frequencies)
