"""COCO segmentation annotations (`_annotations.coco.json` of Roboflow, CVAT, Label Studio; `instances_*.json`)
drawn as class-id masks, so a data set exported as COCO trains here unchanged. pycocotools decodes the polygons
and run-length masks; what is hand-written is the class table and the drawing order."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seglite.errors import DataError


@dataclass(frozen=True)
class CocoFile:
    categories: dict[int, str]  # id -> name, without Roboflow's umbrella category
    images: dict[str, tuple[int, int, int]]  # file_name -> (image id, height, width)
    annotations: dict[int, list[dict]]  # image id -> its annotations
    by_base: dict[str, tuple[int, int, int] | None]  # file name without folders -> entry (None: two share it)


def read_coco(path: Path) -> CocoFile:
    """The file's tables, read once per process (a split's JSON is consulted for every one of its images)."""
    return _read(str(path.resolve()), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read(path: str, _mtime: int) -> CocoFile:
    try:
        raw = json.loads(Path(path).read_text())
        categories = {int(c["id"]): str(c["name"]) for c in raw["categories"]}
        images = {str(i["file_name"]): (int(i["id"]), int(i["height"]), int(i["width"])) for i in raw["images"]}
        annotations: dict[int, list[dict]] = {}
        for annotation in raw.get("annotations", []):
            annotations.setdefault(int(annotation["image_id"]), []).append(annotation)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path}: not a COCO annotation file ({type(exc).__name__}: {exc})") from None
    # Roboflow's exports open with an umbrella category (the project's name) that is every other one's
    # supercategory and labels nothing: not a class.
    used = {int(a["category_id"]) for group in annotations.values() for a in group}
    umbrellas = {c.get("supercategory") for c in raw["categories"]}
    categories = {k: v for k, v in categories.items() if k in used or v not in umbrellas}
    by_base: dict[str, tuple[int, int, int] | None] = {}
    for name, entry in images.items():
        base = name.rsplit("/", 1)[-1]
        by_base[base] = None if base in by_base else entry
    return CocoFile(categories, images, annotations, by_base)


def coco_class_names(path: Path) -> list[str]:
    return [name for _, name in sorted(read_coco(path).categories.items())]


def coco_images(path: Path, root: Path) -> list[Path]:
    """The images a COCO file annotates: beside it (Roboflow, CVAT), else under the data root."""
    found = []
    for name in read_coco(path).images:
        candidates = (path.parent / name, root / name, root / "images" / name)
        image = next((c for c in candidates if c.is_file()), None)
        if image is None:
            raise DataError(f"{path}: its image {name!r} is neither beside it nor under {root}")
        found.append(image)
    return found


def _entry(coco: CocoFile, path: Path, image: Path) -> tuple[int, int, int]:
    entry = coco.by_base.get(image.name) or next(  # Label Studio names them images/x.jpg
        (value for name, value in coco.images.items() if image.as_posix().endswith("/" + name)), None
    )
    if entry is None:
        raise DataError(f"{path}: has no entry for {image.name}")
    return entry


def coco_image_size(path: Path, image: Path) -> tuple[int, int]:
    """The width and height the file gives the image (its masks are drawn at that size)."""
    _, height, width = _entry(read_coco(path), path, image)
    return width, height


def read_coco_mask(path: Path, image: Path, names: tuple[str, ...]) -> np.ndarray:
    """Class ids (0: what no annotation covers) at the size the file gives the image. Larger regions are drawn
    first, so an object inside another stays visible."""
    from pycocotools import mask as coco_mask

    coco = read_coco(path)
    image_id, height, width = _entry(coco, path, image)
    mask = np.zeros((height, width), np.uint8)
    drawn = []
    for annotation in coco.annotations.get(image_id, []):
        name = coco.categories.get(int(annotation["category_id"]))
        if name not in names:
            raise DataError(
                f"{path}: annotation {annotation.get('id')} of {image.name} is of category "
                f"{annotation['category_id']} ({name or 'not in categories'}), not one of the data set's names"
            )
        segmentation = annotation.get("segmentation")
        if not segmentation:
            raise DataError(
                f"{path}: annotation {annotation.get('id')} of {image.name} has no segmentation (a box only: a "
                "detection export); export the data set for segmentation"
            )
        try:
            if isinstance(segmentation, list):  # polygons in pixels
                rle = coco_mask.merge(coco_mask.frPyObjects([p for p in segmentation if len(p) >= 6], height, width))
            elif isinstance(segmentation["counts"], list):  # an uncompressed run-length mask
                rle = coco_mask.frPyObjects(segmentation, height, width)
            else:
                rle = segmentation
            region = coco_mask.decode(rle).astype(bool)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            raise DataError(f"{path}: annotation {annotation.get('id')} of {image.name}: unreadable ({exc})") from None
        drawn.append((int(region.sum()), names.index(name), region))
    for _, value, region in sorted(drawn, key=lambda item: -item[0]):
        mask[region] = value
    return mask
