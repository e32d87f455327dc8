"""Annotation tools' exports that have no data set YAML (Roboflow's semantic masks and COCO, Pascal VOC and CVAT's
copy of it), recognised by their layout so that `--data FOLDER` reads them as they are. A new layout is one
function here (the data set keys it needs) and an entry in EXPORTS."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import yaml

VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")  # fmt: skip
SPLIT_FOLDERS = (("train", "train"), ("val", "valid"), ("val", "val"), ("test", "test"))  # key, Roboflow's folder


def _voc(folder: Path, _image_suffixes: tuple[str, ...]) -> dict | None:
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


def _coco(folder: Path, _image_suffixes: tuple[str, ...]) -> dict | None:
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


def _roboflow_semantic(folder: Path, image_suffixes: tuple[str, ...]) -> dict | None:
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
    suffixes = Counter(p.suffix for p in (folder / keys["train"]).iterdir() if p.suffix.lower() in image_suffixes
                       and not p.stem.endswith("_mask"))  # fmt: skip
    if not suffixes or sorted(classes) != list(range(len(classes))):
        return None
    suffix = {"image": suffixes.most_common(1)[0][0], "mask": "_mask.png"}
    return keys | {"mask_suffix": suffix, "names": list(classes.values())}


EXPORTS: tuple[tuple[str, Callable[[Path, tuple[str, ...]], dict | None]], ...] = (
    ("a Roboflow semantic segmentation export", _roboflow_semantic),
    ("a COCO segmentation export", _coco),
    ("laid out as Pascal VOC (CVAT's segmentation mask export too)", _voc),
)


def recognise_export(folder: Path, image_suffixes: tuple[str, ...]) -> tuple[str, dict] | None:
    """What the folder is, and the data set keys that read it; None for none of EXPORTS. An export of one subset
    gets `val: 10%` (a tenth of train held out). `image_suffixes`: the data sets' (this module sits below
    seglite.data.datasets, which asks it)."""
    for kind, keys_for in EXPORTS:
        if keys := keys_for(folder, image_suffixes):
            if "val" not in keys:
                keys = {"train": keys.pop("train"), "val": "10%", **keys}
                kind += " with one subset (val: 10% holds a tenth of it out)"
            return kind, keys
    return None


def one_line(keys: dict) -> str:
    """Data set keys as the one YAML line to save as the export's data.yaml."""
    return yaml.safe_dump(keys, default_flow_style=True, sort_keys=False, width=1 << 20).strip()
