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

from seglite.data.cityscapes import PACKED, where_it_is
from seglite.data.coco import coco_image_size
from seglite.data.datasets import SPLITS, DatasetSpec, read_index_mask
from seglite.data.yolo import upright_size
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
    pixels: np.ndarray | None = None  # pixels of each class, then the ignored ones (when the masks were read)

    @property
    def common_size(self) -> tuple[int, int] | None:
        return self.sizes.most_common(1)[0][0] if self.sizes else None

    @property
    def ignored_share(self) -> float | None:
        """The share of mask pixels that are ignore_index (None when no mask was read)."""
        total = 0 if self.pixels is None else int(self.pixels.sum())
        return int(self.pixels[-1]) / total if total else None

    def absent_classes(self, names: Sequence[str]) -> list[str]:
        """The classes no mask of this split has a pixel of."""
        if self.pixels is None or not self.pixels.sum():
            return []
        return [name for name, count in zip(names, self.pixels[:-1], strict=True) if count == 0]


@dataclass
class SampleCheck:
    labelled: int = 0
    problems: list[str] = field(default_factory=list)
    unmapped: Counter = field(default_factory=Counter)
    size: tuple[int, int] | None = None  # the image's width and height, if its header reads
    pixels: np.ndarray | None = None  # as SplitReport.pixels, for this mask


def check_dataset(
    spec: DatasetSpec,
    splits: tuple[str, ...] | None = None,
    read_labels: bool = True,
    progress=None,
    train_split: str = "train",
) -> list[SplitReport]:
    """Counts, missing pairs, size mismatches (from headers) and, with read_labels, values that are no class and a
    training split whose masks hold fewer than two classes."""
    spec.root()
    reports = []
    for split in splits or SPLITS:
        if not spec.has_split(split) or (splits is None and split == "test" and not spec.split_on_disk(split)):
            continue  # a test split is often not downloaded (CamVid's, Cityscapes' unlabelled one): nothing missing
        report = SplitReport(split)
        try:
            samples = spec.samples(split, require_labels=False)
        except DataError as exc:
            report.problems.append(str(exc))
            reports.append(report)
            continue
        report.images = len(samples)
        check = functools.partial(_check_sample, spec, split, read_labels)
        for checked in _map(check, samples, progress):
            report.labelled += checked.labelled
            report.problems += checked.problems
            report.unmapped.update(checked.unmapped)
            if checked.size is not None:
                report.sizes[checked.size] += 1
            if checked.pixels is not None:
                report.pixels = checked.pixels if report.pixels is None else report.pixels + checked.pixels
        if split == train_split and report.pixels is not None and not report.problems:
            report.problems += _too_few_classes(spec, report)
        reports.append(report)
    if not reports:
        wanted = splits or SPLITS
        hint = where_it_is(spec.root(), f"leftImg8bit/{wanted[0]}", PACKED) if spec.layout == "cityscapes" else ""
        raise DataError(f"data set {spec.name!r} at {spec.root()}: none of the splits {', '.join(wanted)}{hint}")
    return reports


def _too_few_classes(spec: DatasetSpec, report: SplitReport) -> list[str]:
    """A training split that shows the network one class (or none) teaches it nothing. The usual cause is a 0/255
    binary mask: 255 is ignore_index, so the foreground is never seen."""
    present = [name for name, count in zip(spec.names, report.pixels[:-1], strict=True) if count]
    if len(present) >= 2:
        return []
    share = f"{100 * report.ignored_share:.1f} % of their pixels are ignored"
    seen = f"only {present[0]!r}" if present else "no class"
    if spec.layout == "cityscapes":
        hint = "check the gtFine *_labelIds.png files"
    elif spec.mask_format == "color":
        hint = "check `palette` (one RGB colour per class, as the masks draw them) and `ignore_colors`"
    elif spec.mask_format == "yolo":
        hint = "check that the label files hold polygons (class x1 y1 x2 y2 ...) for the images"
    elif spec.mask_format == "coco":
        hint = "check that the annotation file holds segmentations (polygons or masks) for the images"
    else:
        example = {0: 0, spec.ignore_index: 1}
        hint = (
            f"map the values that mark your classes with label_mapping (0/{spec.ignore_index} masks: "
            f"label_mapping: {example}), or fix the masks"
        )
    return [
        f"{spec.name}: the {report.split} masks ({report.labelled}) show {seen} of {spec.num_classes}; {share}: {hint}"
    ]


def usual_frame_size(spec: DatasetSpec, split: str, looked_at: int = 5) -> tuple[int, int] | None:
    """The most common (upright) size of a few of the split's images, spread over it, from their headers: what a
    recipe is fitted to before the data set is checked. None where the split has no readable image."""
    try:
        samples = spec.samples(split)
    except DataError:
        return None
    sizes = Counter()
    for sample in samples[:: max(1, len(samples) // looked_at)][:looked_at]:
        try:
            with Image.open(sample.image) as image:
                sizes[upright_size(image)] += 1
        except OSError:  # the data check names it
            continue
    return sizes.most_common(1)[0][0] if sizes else None


def _label_size(spec: DatasetSpec, sample) -> tuple[int, int] | None:
    """A mask's width and height as its file gives them; None for YOLO's polygons, drawn at the image's size."""
    if spec.mask_format == "yolo":
        return None
    if spec.mask_format == "coco":
        return coco_image_size(sample.label, sample.image)
    with Image.open(sample.label) as label:
        return label.size


def _check_sample(spec: DatasetSpec, split: str, read_labels: bool, sample) -> SampleCheck:
    """One image and its mask."""
    checked = SampleCheck()
    try:
        with Image.open(sample.image) as image:
            checked.size = upright_size(image)
            if sample.label is None:
                checked.problems = [spec.missing_mask(split, sample)] if split != "test" else []
                return checked
            checked.labelled = 1
        label_size = _label_size(spec, sample)
        if label_size is not None and checked.size != label_size:
            width, height = checked.size
            sizes = f"mask is {label_size[0]}x{label_size[1]}, image {width}x{height}"
            checked.problems = [f"{sample.label}: {sizes}"]
            return checked
        if read_labels and spec.label_mapping is not None and spec.mask_format == "index":
            raw = read_index_mask(sample.label)  # read once: its classes, and the raw values the mapping leaves out
            checked.pixels = _class_pixels(spec.classes_of(raw, sample.label), spec.num_classes)
            checked.unmapped = _unmapped_values(spec, raw)
        elif read_labels:
            checked.pixels = _class_pixels(spec.read_label(sample), spec.num_classes)
    except (OSError, DataError) as exc:
        checked.labelled = int(sample.label is not None)
        checked.problems = [str(exc) if isinstance(exc, DataError) else f"{sample.image}: unreadable ({exc})"]
    return checked


def _class_pixels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels of each class, then the ignored ones. OpenCV's histogram: a tenth of np.bincount's time, which would
    add 70 % to reading a Cityscapes mask."""
    histogram = np.rint(cv2.calcHist([labels], [0], None, [256], [0, 256]).ravel()).astype(np.int64)
    return np.append(histogram[:num_classes], histogram[num_classes:].sum())


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
    return _class_pixels(spec.read_label(sample), spec.num_classes)[:-1]


def _unmapped_values(spec: DatasetSpec, raw: np.ndarray) -> Counter:
    """Raw mask values label_mapping leaves out (read as ignore), with their pixel counts."""
    counts = np.bincount(raw.ravel(), minlength=256) if raw.dtype != np.uint8 else _class_pixels(raw, 256)[:-1]
    mapped = set(spec.label_mapping or {}) | {spec.ignore_index}
    return Counter({int(v): int(c) for v, c in enumerate(counts) if c and v not in mapped})


def class_frequencies(spec: DatasetSpec, split: str = "train", progress=None) -> np.ndarray:
    """Pixel frequency of each class over a split's masks (ignore excluded)."""
    counts = np.zeros(spec.num_classes, np.int64)
    for sample_counts in _map(functools.partial(_label_counts, spec), spec.samples(split), progress):
        counts += sample_counts
    if counts.sum() == 0:
        raise DataError(f"data set {spec.name!r}: split {split!r} has no labelled pixels")
    return frequencies(counts)


def frequencies(counts: np.ndarray) -> np.ndarray:
    """Class pixel counts as shares of the labelled pixels."""
    return counts / counts.sum()


def espnet_class_weights(frequencies: np.ndarray) -> np.ndarray:
    """ESPNet's (ERFNet's) class weights: w = 1 / ln(1.10 + p)."""
    return 1.0 / np.log(1.10 + frequencies)
