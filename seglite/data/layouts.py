"""Annotation tools' exports that have no data set YAML (Roboflow's semantic masks and COCO, Pascal VOC and CVAT's
copy of it), recognised by their layout so that `--data FOLDER` can print the one line that reads them. A new
layout is one function here and an entry in EXPORTS."""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

VOC_NAMES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
             "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")  # fmt: skip


def _voc_yaml(folder: Path, _image_suffixes: tuple[str, ...]) -> str | None:
    """The one-line YAML for Pascal VOC's layout (JPEGImages/, SegmentationClass/, ImageSets/Segmentation/*.txt of
    stems). CVAT's "Segmentation mask" export is that layout with RGB masks and their colours in labelmap.txt
    (`name:r,g,b::` lines); without one, VOC's own 21 classes and index masks. None for another folder."""
    lists = folder / "ImageSets" / "Segmentation"
    if not ((folder / "JPEGImages").is_dir() and (folder / "SegmentationClass").is_dir() and lists.is_dir()):
        return None
    found = {p.stem: p for p in lists.glob("*.txt")}
    splits = {key: found[stem] for key, stem in (("train", "train"), ("val", "val"), ("test", "test")) if stem in found}
    splits = splits or ({"train": found["default"]} if "default" in found else {})  # CVAT's one subset
    if not splits:
        return None
    keys = ", ".join(f"{key}: {path.relative_to(folder).as_posix()}" for key, path in splits.items())
    line = f"{{{keys}, masks_dir: {{JPEGImages: SegmentationClass}}"
    try:
        entries = [row.split(":") for row in (folder / "labelmap.txt").read_text().splitlines() if ":" in row]
        colours = {e[0].strip(): [int(v) for v in e[1].split(",")] for e in entries if not e[0].startswith("#")}
    except OSError:
        return f"{line}, names: [{', '.join(VOC_NAMES)}]}}"
    except (ValueError, IndexError):
        return None
    names = ", ".join(json.dumps(name) for name in colours)
    return f"{line}, mask_format: color, names: [{names}], palette: {list(colours.values())}}}"


def _coco_yaml(folder: Path, _image_suffixes: tuple[str, ...]) -> str | None:
    """The one-line YAML for split folders that each hold an `_annotations.coco.json` beside their images
    (Roboflow), or for `annotations/instances_*.json` with the images under `images/` (COCO, CVAT)."""
    found = {key: f"{name}/_annotations.coco.json" for key, name in (("train", "train"), ("val", "valid"),
             ("val", "val"), ("test", "test")) if (folder / name / "_annotations.coco.json").is_file()}  # fmt: skip
    for path in sorted((folder / "annotations").glob("instances_*.json")):  # COCO's and CVAT's own layout
        subset = path.stem.removeprefix("instances_")
        key = next(
            (k for k in ("train", "val", "test") if subset.startswith(k)), "train" if subset == "default" else None
        )
        if key is not None:
            found.setdefault(key, f"annotations/{path.name}")
    return "{" + ", ".join(f"{key}: {value}" for key, value in found.items()) + "}" if "train" in found else None


def _roboflow_semantic_yaml(folder: Path, image_suffixes: tuple[str, ...]) -> str | None:
    """The one-line YAML that reads Roboflow's "Semantic Segmentation Masks" export (train/, valid/, test/ of
    `x.jpg` + `x_mask.png`, each with `_classes.csv` of `Pixel Value, Class`); None for another folder."""
    splits = {split: name for split, name in (("train", "train"), ("val", "valid"), ("test", "test"))
              if (folder / name / "_classes.csv").is_file()}  # fmt: skip
    if "train" not in splits:
        return None
    try:
        with open(folder / splits["train"] / "_classes.csv", newline="") as table:
            rows = [[cell.strip() for cell in row] for row in csv.reader(table) if row]
        classes = {int(row[0]): row[1] for row in rows[1:]}
    except (OSError, ValueError, IndexError):
        return None
    suffixes = Counter(p.suffix for p in (folder / splits["train"]).iterdir() if p.suffix.lower() in image_suffixes
                       and not p.stem.endswith("_mask"))  # fmt: skip
    if not suffixes or sorted(classes) != list(range(len(classes))):
        return None
    names = ", ".join(json.dumps(name) for name in classes.values())
    split_keys = ", ".join(f"{split}: {name}" for split, name in splits.items())
    return (
        f"{{{split_keys}, mask_suffix: {{image: {suffixes.most_common(1)[0][0]}, mask: _mask.png}}, names: [{names}]}}"
    )


EXPORTS: tuple[tuple[str, Callable[[Path, tuple[str, ...]], str | None]], ...] = (
    ("a Roboflow semantic segmentation export", _roboflow_semantic_yaml),
    ("a COCO segmentation export", _coco_yaml),
    ("laid out as Pascal VOC (CVAT's segmentation mask export too)", _voc_yaml),
)


def recognise_export(folder: Path, image_suffixes: tuple[str, ...]) -> tuple[str, str] | None:
    """What the folder is, and the one-line data set YAML that reads it; None for none of EXPORTS. `image_suffixes`:
    the data sets' (this module sits below seglite.data.datasets, which asks it)."""
    for kind, line_for in EXPORTS:
        if line := line_for(folder, image_suffixes):
            return kind, line
    return None
