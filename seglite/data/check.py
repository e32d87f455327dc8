"""`seglite data check` and `seglite data stats`: is a data set usable, and what is in it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from seglite.data.datasets import SPLITS, DatasetSpec
from seglite.errors import DataError

FULL_COUNTS = {
    "cityscapes": {"train": 2975, "val": 500, "test": 1525},
    "camvid": {"train": 367, "val": 101, "test": 233},
}


@dataclass
class SplitReport:
    split: str
    images: int = 0
    labelled: int = 0
    problems: list[str] = field(default_factory=list)
    unmapped: Counter = field(default_factory=Counter)  # raw mask values label_mapping leaves out (ignored): pixels


def check_dataset(
    spec: DatasetSpec, splits: tuple[str, ...] | None = None, read_labels: bool = True, progress=None
) -> list[SplitReport]:
    """Counts, missing pairs, size mismatches (from headers) and, with read_labels, values that are no class."""
    spec.root()
    reports = []
    for split in splits or SPLITS:
        if not spec.has_split(split):
            continue
        report = SplitReport(split)
        try:
            samples = spec.samples(split, require_labels=False)
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
                    report.problems.append(f"{sample.image}: no mask")
                continue
            report.labelled += 1
            try:
                with Image.open(sample.image) as image, Image.open(sample.label) as label:
                    if image.size != label.size:
                        report.problems.append(
                            f"{sample.label}: mask is {label.size[0]}x{label.size[1]}, image "
                            f"{image.size[0]}x{image.size[1]}"
                        )
                        continue
                if read_labels:
                    spec.read_label(sample)
                    if spec.label_mapping is not None and spec.mask_format == "index":
                        report.unmapped.update(_unmapped_values(spec, sample.label))
            except (OSError, DataError) as exc:
                report.problems.append(
                    str(exc) if isinstance(exc, DataError) else f"{sample.image}: unreadable ({exc})"
                )
        reports.append(report)
    if not reports:
        raise DataError(f"data set {spec.name!r} at {spec.root()}: none of the splits {', '.join(splits or SPLITS)}")
    return reports


def _unmapped_values(spec: DatasetSpec, path) -> Counter:
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    values, counts = np.unique(raw, return_counts=True)
    mapped = set(spec.label_mapping or {}) | {spec.ignore_index}
    return Counter({int(v): int(c) for v, c in zip(values, counts, strict=True) if int(v) not in mapped})


def class_frequencies(spec: DatasetSpec, split: str = "train", progress=None) -> np.ndarray:
    """Pixel frequency of each class over a split's masks (ignore excluded)."""
    counts = np.zeros(spec.num_classes, np.int64)
    for sample in spec.samples(split):
        labels = spec.read_label(sample)
        counts += np.bincount(labels[labels < spec.num_classes].ravel(), minlength=spec.num_classes)
        if progress:
            progress()
    total = counts.sum()
    if total == 0:
        raise DataError(f"data set {spec.name!r}: split {split!r} has no labelled pixels")
    return counts / total


def espnet_class_weights(frequencies: np.ndarray) -> np.ndarray:
    """ESPNet's (ERFNet's) class weights: w = 1 / ln(1.10 + p)."""
    return 1.0 / np.log(1.10 + frequencies)
