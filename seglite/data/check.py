"""`seglite data check` and `seglite data stats`: is a data set usable, and what is in it."""

from __future__ import annotations

import functools
import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import cv2
import numpy as np
from PIL import Image

from seglite.data.datasets import SPLITS, DatasetSpec
from seglite.errors import DataError

T, R = TypeVar("T"), TypeVar("R")
PARALLEL_FROM = 200  # images from which `data check` / `data stats` use worker processes
MAX_WORKERS = 8

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
    sizes: Counter = field(default_factory=Counter)  # (width, height) of the readable images: how many of each

    @property
    def common_size(self) -> tuple[int, int] | None:
        return self.sizes.most_common(1)[0][0] if self.sizes else None


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
        check = functools.partial(_check_sample, spec, split, read_labels)
        for labelled, problems, unmapped, size in _map(check, samples, progress):
            report.labelled += labelled
            report.problems += problems
            report.unmapped.update(unmapped)
            if size is not None:
                report.sizes[size] += 1
        reports.append(report)
    if not reports:
        raise DataError(f"data set {spec.name!r} at {spec.root()}: none of the splits {', '.join(splits or SPLITS)}")
    return reports


def _check_sample(
    spec: DatasetSpec, split: str, read_labels: bool, sample
) -> tuple[int, list[str], Counter, tuple[int, int] | None]:
    """One image and its mask: (1 if labelled, problems, raw mask values that label_mapping leaves out, the image's
    width and height if its header reads)."""
    size = None
    try:
        with Image.open(sample.image) as image:
            size = image.size
            if sample.label is None:
                return 0, ([f"{sample.image}: no mask"] if split != "test" else []), Counter(), size
            with Image.open(sample.label) as label:
                if image.size != label.size:
                    sizes = f"mask is {label.size[0]}x{label.size[1]}, image {image.size[0]}x{image.size[1]}"
                    return 1, [f"{sample.label}: {sizes}"], Counter(), size
        if read_labels:
            spec.read_label(sample)
            if spec.label_mapping is not None and spec.mask_format == "index":
                return 1, [], _unmapped_values(spec, sample.label), size
    except (OSError, DataError) as exc:
        problem = str(exc) if isinstance(exc, DataError) else f"{sample.image}: unreadable ({exc})"
        return int(sample.label is not None), [problem], Counter(), size
    return 1, [], Counter(), size


def _map(function: Callable[[T], R], items: Sequence[T], progress=None) -> Iterator[R]:
    """`function` over `items` in order; a large data set in worker processes (its images are independent, and
    decoding PNGs is most of the time), a small one in this process (workers take ~1 s to start)."""
    workers = min(len(os.sched_getaffinity(0)), MAX_WORKERS)
    if len(items) < PARALLEL_FROM or workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        for item in items:
            result = function(item)
            if progress:
                progress()
            yield result
        return
    # fork, as PyTorch's DataLoader workers: the workers only decode images (no torch), and unlike spawn it never
    # re-runs the caller's script (a user script without `if __name__ == "__main__"` would run again in each worker).
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        for result in pool.map(function, items, chunksize=16):
            if progress:
                progress()
            yield result


def _label_counts(spec: DatasetSpec, sample) -> np.ndarray:
    labels = spec.read_label(sample)
    return np.bincount(labels[labels < spec.num_classes].ravel(), minlength=spec.num_classes)


def _unmapped_values(spec: DatasetSpec, path) -> Counter:
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    values, counts = np.unique(raw, return_counts=True)
    mapped = set(spec.label_mapping or {}) | {spec.ignore_index}
    return Counter({int(v): int(c) for v, c in zip(values, counts, strict=True) if int(v) not in mapped})


def class_frequencies(spec: DatasetSpec, split: str = "train", progress=None) -> np.ndarray:
    """Pixel frequency of each class over a split's masks (ignore excluded)."""
    counts = np.zeros(spec.num_classes, np.int64)
    for sample_counts in _map(functools.partial(_label_counts, spec), spec.samples(split), progress):
        counts += sample_counts
    total = counts.sum()
    if total == 0:
        raise DataError(f"data set {spec.name!r}: split {split!r} has no labelled pixels")
    return counts / total


def espnet_class_weights(frequencies: np.ndarray) -> np.ndarray:
    """ESPNet's (ERFNet's) class weights: w = 1 / ln(1.10 + p)."""
    return 1.0 / np.log(1.10 + frequencies)
