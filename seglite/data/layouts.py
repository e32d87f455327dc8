"""Data sets that have no data set YAML: annotation tools' exports (Roboflow's semantic masks and COCO, Pascal VOC
and CVAT's copy of it) and the home-made `images/` beside `masks/`, recognised by their layout so that `--data
FOLDER` reads them as they are. A new layout is one function here (the data set keys it needs) and an entry in
EXPORTS."""

from __future__ import annotations

import csv
import functools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from seglite.errors import DataError

VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")  # fmt: skip
SPLIT_FOLDERS = (("train", "train"), ("val", "valid"), ("val", "val"), ("test", "test"))  # key, Roboflow's folder
SPLIT_NAMES = (("train", ("train", "training")), ("val", ("val", "valid", "validation")), ("test", ("test", "testing")))
MASK_FOLDERS = ("masks", "mask", "annotations", "labels", "label", "gt", "ground_truth", "groundtruth", "segmentations")
MASK_ENDINGS = ("", "_mask", "_label", "_labels", "_gt", "_seg", "_segmentation")  # x.jpg -> x_mask.png
SURVEYED_MASKS = 200  # masks read for the classes they hold: a few seconds at most, spread over the whole split


@dataclass(frozen=True)
class Files:
    """What seglite.data.datasets knows of files, handed down to the recognisers (this module sits below it)."""

    image_suffixes: tuple[str, ...]
    read_mask: Callable[[Path], np.ndarray]  # an index mask's raw values; a DataError for a mask of colours


def _voc(folder: Path, _files: Files) -> dict | None:
    """Pascal VOC's layout (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/*.txt of stems). CVAT's
    "Segmentation mask" export is that layout with RGB masks and their colours in labelmap.txt (`name:r,g,b::`
    lines); without one, VOC's own 21 classes and index masks."""
    lists = folder / "ImageSets" / "Segmentation"
    if not ((folder / "JPEGImages").is_dir() and (folder / "SegmentationClass").is_dir() and lists.is_dir()):
        return None
    found = {p.stem: p.relative_to(folder).as_posix() for p in lists.glob("*.txt")}
    keys = {key: found[stem] for key, stem in (("train", "train"), ("val", "val"), ("test", "test")) if stem in found}
    keys = keys or ({"train": found["default"]} if "default" in found else {})  # CVAT's one subset
    if not keys:
        return None
    keys["masks_dir"] = {"JPEGImages": "SegmentationClass"}
    try:
        entries = [row.split(":") for row in (folder / "labelmap.txt").read_text().splitlines() if ":" in row]
        colours = {e[0].strip(): [int(v) for v in e[1].split(",")] for e in entries if not e[0].startswith("#")}
    except OSError:
        return keys | {"names": list(VOC_NAMES)}
    except (ValueError, IndexError):
        return None
    return keys | {"mask_format": "color", "names": list(colours), "palette": list(colours.values())}


def _coco(folder: Path, _files: Files) -> dict | None:
    """COCO annotation files: an `_annotations.coco.json` in each split folder beside its images (Roboflow),
    `annotations/instances_*.json` with the images under `images/` (COCO, CVAT), or Label Studio's `result.json`."""
    keys = {key: f"{name}/_annotations.coco.json" for key, name in SPLIT_FOLDERS
            if (folder / name / "_annotations.coco.json").is_file()}  # fmt: skip
    for path in sorted((folder / "annotations").glob("instances_*.json")):
        subset = path.stem.removeprefix("instances_")
        key = next(
            (k for k in ("train", "val", "test") if subset.startswith(k)), "train" if subset == "default" else None
        )
        if key is not None:
            keys.setdefault(key, f"annotations/{path.name}")
    if not keys and (folder / "result.json").is_file() and (folder / "images").is_dir():
        keys["train"] = "result.json"
    return keys if "train" in keys else None


def _roboflow_semantic(folder: Path, files: Files) -> dict | None:
    """Roboflow's "Semantic Segmentation Masks" export: train/, valid/, test/ of `x.jpg` + `x_mask.png`, each with
    `_classes.csv` of `Pixel Value, Class`."""
    keys = {key: name for key, name in SPLIT_FOLDERS if (folder / name / "_classes.csv").is_file()}
    if "train" not in keys:
        return None
    try:
        with open(folder / keys["train"] / "_classes.csv", newline="") as table:
            rows = [[cell.strip() for cell in row] for row in csv.reader(table) if row]
        classes = {int(row[0]): row[1] for row in rows[1:]}
    except (OSError, ValueError, IndexError):
        return None
    suffixes = Counter(p.suffix for p in (folder / keys["train"]).iterdir() if p.suffix.lower() in files.image_suffixes
                       and not p.stem.endswith("_mask"))  # fmt: skip
    if not suffixes or sorted(classes) != list(range(len(classes))):
        return None
    suffix = {"image": suffixes.most_common(1)[0][0], "mask": "_mask.png"}
    return keys | {"mask_suffix": suffix, "names": list(classes.values())}


def _images_and_masks(folder: Path, files: Files) -> dict | None:
    """A home-made layout: `images/` beside `masks/` (or labels/, annotations/, gt/ ...) of index PNGs named as the
    images (`x.png` or `x_mask.png` for `x.jpg`), whole or split (`images/train` beside `masks/train`, ADE20K's
    `images/training` beside `annotations/training`, or `train/images` beside `train/masks`). The classes are the
    values the masks hold: 0/255 (or 0/1) masks are background and foreground, others `class N` (255 is ignored)."""
    for masks in MASK_FOLDERS:
        if (folder / "images").is_dir() and (folder / masks).is_dir():
            keys = _splits(folder / "images", "images/") or {"train": "images"}
        else:
            keys = {key: f"{name}/images" for key, name in _splits(folder, "").items()
                    if (folder / name / "images").is_dir() and (folder / name / masks).is_dir()}  # fmt: skip
        if "train" not in keys:
            continue
        images = sorted(p for split in keys.values() for p in (folder / split).rglob("*")
                        if p.suffix.lower() in files.image_suffixes and p.is_file())  # fmt: skip
        first = images[:: max(1, len(images) // 20)]  # how the masks are named, from a few images
        ending = next((e for e in MASK_ENDINGS if any(_mask_of(folder, i, masks, e).is_file() for i in first)), None)
        if ending is None:
            if any(_mask_of(folder, i, masks, "").with_suffix(s).is_file() for i in first for s in (".jpg", ".jpeg")):
                raise DataError(
                    f"{folder / masks}: the masks are JPEGs, and JPEG blurs a mask's values at every edge (a pixel "
                    "between road and car becomes a class of neither): save them as PNG"
                )
            continue
        spread = images[:: max(1, len(images) // SURVEYED_MASKS)][:SURVEYED_MASKS]  # not a stat of every mask
        surveyed = tuple(mask for image in spread if (mask := _mask_of(folder, image, masks, ending)).is_file())
        classes = _classes_in(surveyed, files.read_mask)
        if ending:  # x.jpg -> x_mask.png: the images' usual suffix
            suffix = Counter(image.suffix for image in images).most_common(1)[0][0]
            keys["mask_suffix"] = {"image": suffix, "mask": f"{ending}.png"}
        return keys | {"masks_dir": {"images": masks}, **classes} if classes else None
    return None


def _splits(parent: Path, prefix: str) -> dict[str, str]:
    """The split folders under `parent` ({train: images/training, ...}), each under the first name it has there."""
    found = {key: next((name for name in names if (parent / name).is_dir()), None) for key, names in SPLIT_NAMES}
    return {key: f"{prefix}{name}" for key, name in found.items() if name}


def _mask_of(folder: Path, image: Path, masks: str, ending: str) -> Path:
    """As DatasetSpec finds it with masks_dir {images: masks} (and a mask_suffix for an ending): the first
    `images` folder swapped, the stem and ending a .png."""
    parts = list(image.relative_to(folder).parts)
    parts[parts.index("images")] = masks
    return folder.joinpath(*parts[:-1], f"{image.stem}{ending}.png")


@functools.lru_cache(maxsize=4)  # every command reads the data set a few times: the masks are surveyed once
def _classes_in(masks: tuple[Path, ...], read_mask: Callable[[Path], np.ndarray]) -> dict | None:
    """names (and the label_mapping of 0/255 masks) from the values the masks hold; None for masks of colours."""
    values: set[int] = set()
    for mask in masks:
        try:
            raw = read_mask(mask)
        except DataError:  # colours, or not a mask: a palette to write by hand
            return None
        if raw.ndim != 2:
            return None
        values.update(np.unique(raw).tolist())
    if values <= {0, 255} and 255 in values:
        return {"names": ["background", "foreground"], "label_mapping": {0: 0, 255: 1}}
    count = max(values - {255}, default=0) + 1
    if count < 2:
        return None
    return {"names": ["background", "foreground"] if count == 2 else [f"class {i}" for i in range(count)]}


EXPORTS: tuple[tuple[str, Callable[[Path, Files], dict | None]], ...] = (
    ("a Roboflow semantic segmentation export", _roboflow_semantic),
    ("a COCO segmentation export", _coco),
    ("laid out as Pascal VOC (CVAT's segmentation mask export too)", _voc),
    ("images with their masks beside them (the classes: the values the masks hold)", _images_and_masks),
)


def recognise_export(folder: Path, files: Files) -> tuple[str, dict] | None:
    """What the folder is, and the data set keys that read it; None for none of EXPORTS. An export of one subset
    gets `val: 10%` (a tenth of train held out)."""
    for kind, keys_for in EXPORTS:
        if keys := keys_for(folder, files):
            if "val" not in keys:
                keys = {"train": keys.pop("train"), "val": "10%", **keys}
                kind += " with one subset (val: 10% holds a tenth of it out)"
            return kind, keys
    return None


def one_line(keys: dict) -> str:
    """Data set keys as the one YAML line to save as the export's data.yaml."""
    return yaml.safe_dump(keys, default_flow_style=True, sort_keys=False, width=1 << 20).strip()
