"""Data sets described by data: a built-in name (`cityscapes`, `camvid`) or a YAML file in the conventions users
know from Ultralytics and mmseg, so an existing data set needs no conversion.

Every data set reads labels into one in-memory form: HxW uint8 class ids 0..C-1, 255 = ignore. Training,
evaluation and `seglite data` only see that form, whatever the files hold (index masks, colour masks, raw ids
remapped through `label_mapping`, list files, Cityscapes labelIds).
"""

from __future__ import annotations

import difflib
import glob
import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath, PureWindowsPath

import cv2
import numpy as np

from seglite.data.cityscapes import PACKED, Sample, find_samples, read_checked_train_ids, where_it_is
from seglite.data.coco import coco_class_names, coco_images, read_coco_mask
from seglite.data.labels import CLASS_NAMES, IGNORE_INDEX, PALETTE_RGB
from seglite.data.layouts import Files, one_line, recognise_export
from seglite.data.yolo import BACKGROUND, read_polygon_mask
from seglite.errors import DataError
from seglite.yamlfile import read_mapping

BUILTIN_DIR = Path(__file__).parent / "builtin"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SPLITS = ("train", "val", "test")
KEYS = (
    "base",
    "name",
    "path",
    "train",
    "val",
    "test",
    "names",
    "palette",
    "ignore_index",
    "label_mapping",
    "mask_format",
    "masks_dir",
    "mask_suffix",
    "strip_prefix",
    "ignore_colors",
    "layout",
    "download",
    "nc",  # Ultralytics' class count: checked against `names`
    "roboflow",  # Roboflow's export metadata: not read
)
_INVALID = np.uint16(0xFFFF)  # a raw mask value that is neither a class nor ignore


def builtin_datasets() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def distinct_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """RGB colours for data sets without a palette: golden-ratio hues, so neighbouring ids look different."""
    colours = []
    for index in range(count):
        hue = int((index * 0.618034 % 1.0) * 180)
        value = 255 if index % 2 == 0 else 190
        hsv = np.uint8([[[hue, 200, value]]])
        colours.append(tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]))
    return tuple(colours)


CITYSCAPES_SITE = "cityscapes-dataset.com"  # `download: from:` for its packages, behind an account's login


@dataclass(frozen=True)
class Download:
    """A data set's zips and where they come from: `source` is the URL of the one zip (or a folder URL ending in
    `/` that each name is appended to), or `cityscapes-dataset.com` (an account's login); `folder` is the zips'
    folder that becomes the data root ("" for their top level)."""

    zips: tuple[str, ...]
    source: str
    folder: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set's images and masks are and what its classes are (docs/guides/own-data.md)."""

    name: str
    names: tuple[str, ...]
    path: Path | None = None
    splits: dict[str, str] = field(default_factory=dict)
    palette: tuple[tuple[int, int, int], ...] | None = None
    ignore_index: int = IGNORE_INDEX
    label_mapping: dict[int, int] | None = None
    mask_format: str = "index"
    masks_dir: dict[str, str] = field(default_factory=dict)
    mask_suffix: tuple[str, str] | None = None
    strip_prefix: str | None = None
    ignore_colors: tuple[tuple[int, int, int], ...] = ()
    layout: str = "generic"  # "cityscapes": leftImg8bit/ + gtFine/, labelIds read through the official table
    source: str = ""
    download: Download | None = None  # where `seglite data get` fetches it from
    read_as: str = ""  # an annotation tool's export given as a folder: what it is, and the line that reads it

    @property
    def num_classes(self) -> int:
        return len(self.names)

    @property
    def colours(self) -> tuple[tuple[int, int, int], ...]:
        """The palette, else distinct colours with a class named background black (an overlay leaves it unpainted)."""
        if self.palette:
            return self.palette
        return tuple((0, 0, 0) if name.lower() == BACKGROUND else colour
                     for name, colour in zip(self.names, distinct_palette(self.num_classes), strict=True))  # fmt: skip

    @property
    def own_file(self) -> Path | None:
        """The user's YAML it was read from, or the export folder read without one (None for a built-in or an
        inline data set)."""
        path = Path(self.source) if self.source else None
        if path is None or path.parent == BUILTIN_DIR or not (path.is_file() or (self.read_as and path.is_dir())):
            return None
        return path.resolve()

    def with_root(self, root: str | Path | None) -> DatasetSpec:
        return self if root is None else replace(self, path=Path(root))

    def root(self) -> Path:
        if self.path is not None and self.path.is_dir():
            return self.path
        fetch = f", or fetch it: seglite data get --data {self.own_file or self.name}" if self.download else ""
        if self.path is None:
            raise DataError(
                f"data set {self.name!r}: no data root; pass --data-root DIR (or set `path:` in its YAML){fetch}"
            )
        beside = self.own_file.parent if self.own_file else None
        splits = [value for value in self.splits.values() if not value.endswith("%")]
        if beside is not None and any(_entry_under(beside, value).exists() for value in splits):
            raise DataError(
                f"data set {self.name!r}: data root {self.path} is no folder (a YAML written on another machine?); "
                f"its splits are beside it: pass --data-root {beside}, or delete `path:` from it"
            )
        raise DataError(f"data set {self.name!r}: data root {self.path} is no folder; pass --data-root DIR{fetch}")

    def has_split(self, split: str) -> bool:
        if self.layout == "cityscapes":
            return (self.root() / "leftImg8bit" / split).is_dir()
        return split in self.splits

    def split_on_disk(self, split: str) -> bool:
        """Whether a split's folder or list file is there."""
        if self.layout == "cityscapes":
            return self.has_split(split)
        return split in self.splits and self.split_entry(split).exists()

    def held_out(self, split: str) -> float | None:
        """`val: 10%`: the share of the train split this split is (an export with one subset, CVAT's, has no val)."""
        value = self.splits.get(split, "")
        return float(value[:-1]) / 100 if split != "train" and value.endswith("%") else None

    def split_entry(self, split: str) -> Path:
        """A split's folder or list file. Roboflow's YOLO exports say `../train/images` for the `train/images`
        beside their data.yaml; Ultralytics reads that without the `../` where only that exists, and so does this."""
        return _entry_under(self.root(), self.splits["train" if self.held_out(split) else split])

    # ---- finding pairs ------------------------------------------------------------------------------------
    def samples(self, split: str, require_labels: bool = True) -> list[Sample]:
        """All (image, mask) pairs of a split, sorted; a DataError naming the first missing file or bad line. A
        split given as a share of train (`val: 10%`) is those of train's images, always the same, that train then
        leaves out."""
        if self.layout == "cityscapes":
            return find_samples(self.root(), split, require_labels)
        if split not in self.splits:
            defined = ", ".join(self.splits) or "none"
            raise DataError(f"data set {self.name!r} has no split {split!r} (defined: {defined})")
        shares = {other: share for other in self.splits if (share := self.held_out(other))}
        if not shares:
            return self._read_split(split, require_labels)
        train = self._read_split("train", require_labels)
        ranked = sorted(train, key=lambda sample: hashlib.md5(sample.stem.encode()).hexdigest())  # stable, spread
        taken: dict[str, set[str]] = {}
        for other, share in shares.items():
            start = sum(len(stems) for stems in taken.values())
            taken[other] = {s.stem for s in ranked[start : start + max(1, round(share * len(train)))]}
        if split in taken:
            return [sample for sample in train if sample.stem in taken[split]]
        if split == "train":
            kept = [sample for sample in train if not any(sample.stem in stems for stems in taken.values())]
            if not kept:
                raise DataError(f"data set {self.name!r}: {len(train)} train image(s) leave none after {shares}")
            return kept
        return self._read_split(split, require_labels)

    def _read_split(self, split: str, require_labels: bool) -> list[Sample]:
        root = self.root()
        entry = self.split_entry(split)
        if entry.is_file() and self.mask_format == "coco":
            samples = [
                Sample(_below(image, entry.parent, root).with_suffix("").as_posix(), image, entry)
                for image in coco_images(entry, root)
            ]
        elif entry.is_file():
            samples = self._list_file_samples(entry)
        elif entry.is_dir():
            samples = self._folder_samples(root, entry)
        else:
            raise DataError(
                f"data set {self.name!r}, split {split!r}: {entry} is neither a folder nor a list file"
                + where_it_is(root, self.splits[split])
            )
        if not samples:
            raise DataError(f"data set {self.name!r}, split {split!r}: no images in {entry}")
        if require_labels:
            missing = [s for s in samples if s.label is None]
            if missing:
                raise DataError(
                    f"{self.missing_mask(split, missing[0])}; {len(missing)} of {len(samples)} image(s) in split "
                    f"{split!r} lack one"
                )
        return samples

    def missing_mask(self, split: str, sample: Sample) -> str:
        """Why a sample has no mask: where it was looked for, and a file of the same stem that is there instead."""
        root = self.root()
        if self.layout == "cityscapes":
            expected = f"gtFine/{split}/{sample.image.parent.name}/*_gtFine_labelIds.png"
            return f"{sample.image}: no mask (expected {expected}){where_it_is(root, f'gtFine/{split}', PACKED)}"
        if self.split_entry(split).is_file() and not (
            (self.masks_dir or self.mask_suffix) and sample.image.is_relative_to(root)
        ):
            return (
                f"{sample.image}: no mask on its line of {self.split_entry(split)} (add it after a tab, or set "
                "`masks_dir`/`mask_suffix` to find it from the image's path)"
            )
        expected = self._mask_for(root, sample.image)
        problem = f"{sample.image}: no mask (looked for {expected})"
        others = sorted(expected.parent.glob(f"{glob.escape(expected.stem)}.*")) if expected.parent.is_dir() else []
        if not others:
            return problem
        if others[0].suffix.lower() in (".jpg", ".jpeg"):
            return (
                f"{problem}; {others[0].name} is there, but JPEG blurs a mask's values at every edge: save masks as PNG"
            )
        rule = {"image": sample.image.suffix, "mask": others[0].suffix}
        return f"{problem}; {others[0].name} is there: set `mask_suffix: {rule}`".replace("'", "")

    def _mask_for(self, root: Path, image: Path) -> Path:
        parts = list(image.relative_to(root).parts)
        for index, part in enumerate(parts[:-1]):
            if part in self.masks_dir:
                parts[index] = self.masks_dir[part]
                break
        name = parts[-1]
        if self.mask_suffix and name.endswith(self.mask_suffix[0]):
            name = name[: -len(self.mask_suffix[0])] + self.mask_suffix[1]
        else:
            name = Path(name).stem + (".txt" if self.mask_format == "yolo" else ".png")
        return root.joinpath(*parts[:-1], name)

    def _folder_samples(self, root: Path, folder: Path) -> list[Sample]:
        if not self.masks_dir and not self.mask_suffix:
            raise DataError(
                f"data set {self.name!r}: split folder {folder} needs `masks_dir` (e.g. {{images: masks}}) to find "
                "its masks, or `mask_suffix` (e.g. {image: .jpg, mask: _mask.png}) for masks beside the images, or "
                "use a list file of `image mask` lines"
            )
        found = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        # Masks beside their images (Roboflow's `x.jpg` + `x_mask.png`) are in the listing too: they are no images.
        mask_of = {image: self._mask_for(root, image) for image in found}
        masks = {mask for image, mask in mask_of.items() if mask != image}
        samples = []
        for image in (image for image in found if image not in masks):
            mask = mask_of[image]
            if mask == image:
                raise DataError(f"{image}: its mask path is the image itself; check `masks_dir` and `mask_suffix`")
            present = mask.is_file() or self.mask_format == "yolo"  # no label file: an image of no object
            samples.append(Sample(str(image.relative_to(folder).with_suffix("")), image, mask if present else None))
        return samples

    def _stripped(self, text: str) -> Path:
        if self.strip_prefix and text.startswith(self.strip_prefix):
            text = text[len(self.strip_prefix) :]
        return Path(text)

    def _listed(self, text: str) -> Path:
        path = self._stripped(text)
        if "\\" in str(path) and not (self.root() / path).exists():  # a list written on Windows
            path = Path(str(path).replace("\\", "/"))
        return path if path.is_absolute() else self.root() / path

    def _missing_listed(self, text: str, list_file: Path, line_no: int) -> DataError:
        stripped = self._stripped(text)
        written_on = PureWindowsPath if PureWindowsPath(stripped).drive else PurePosixPath
        if not (stripped.is_absolute() or written_on is PureWindowsPath):
            return DataError(f"{list_file}:{line_no}: {self._listed(text)} does not exist")
        parts = written_on(text).parts
        separator = "\\" if written_on is PureWindowsPath else "/"
        tails = (separator.join(parts[i:]) for i in range(1, len(parts)))
        tail = next((tail for tail in tails if text.endswith(tail) and self._listed(tail).exists()), None)
        fix = f"`strip_prefix: {text[: -len(tail)]!r}`" if tail else "`strip_prefix` to the part before the data root"
        return DataError(
            f"{list_file}:{line_no}: {text} does not exist; for lists written on another machine set {fix}"
        )

    def _image_of_stem(self, stem: str) -> Path | None:
        """Pascal VOC's lists (and CVAT's, mmseg's) name images by stem: `2007_000032` is JPEGImages/2007_000032.jpg,
        the images folder being the one `masks_dir` maps to the masks'."""
        if "/" in stem or "\\" in stem or not self.masks_dir:
            return None
        for folder in self.masks_dir:
            for suffix in IMAGE_EXTENSIONS:
                if (image := self.root() / folder / f"{stem}{suffix}").is_file():
                    return image
        return None

    def _split_listed(self, line: str, list_file: Path, line_no: int) -> tuple[Path, Path | None]:
        """A line's image and mask. Names may hold spaces: a tab separates the two when there is one, else the
        line is read as one image or split at the space that leaves two existing files."""
        if "\t" not in line:
            whole = self._listed(line)
            if whole.is_file():
                return whole, None
            if (named := self._image_of_stem(line)) is not None:
                return named, None
            words = line.split(" ")
            cuts = ((" ".join(words[:cut]).strip(), " ".join(words[cut:]).strip()) for cut in range(1, len(words)))
            found = [(path, mask) for image, mask in cuts if image and mask and (path := self._listed(image)).is_file()]
            for image, mask in found:
                if (mask_path := self._listed(mask)).is_file():
                    return image, mask_path
            if found:  # the image is there, its mask not
                raise self._missing_listed(found[0][1], list_file, line_no)
            if len(line.split()) > 2:
                raise DataError(
                    f"{list_file}:{line_no}: expected `image [mask]`, found {len(line.split())} fields and no split "
                    "of them into two existing files; separate a name that holds spaces from the other with a tab"
                )
        fields = line.split("\t") if "\t" in line else line.split()
        fields = [part.strip() for part in fields if part.strip()]
        if len(fields) > 2:
            raise DataError(f"{list_file}:{line_no}: expected `image<TAB>mask`, found {len(fields)} fields")
        missing = next((part for part in fields if not self._listed(part).is_file()), None)
        if missing is not None:
            raise self._missing_listed(missing, list_file, line_no)
        return self._listed(fields[0]), self._listed(fields[1]) if len(fields) == 2 else None

    def _list_file_samples(self, list_file: Path) -> list[Sample]:
        pairs = []
        root = self.root()
        for line_no, line in enumerate(list_file.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            image, mask = self._split_listed(line, list_file, line_no)
            if mask is None and (self.masks_dir or self.mask_suffix) and image.is_relative_to(root):
                derived = self._mask_for(root, image)  # Ultralytics' lists name images only
                found = derived.is_file() or self.mask_format == "yolo"  # no label file: an image of no object
                mask = derived if found and derived != image else None
            pairs.append((image, mask))
        # Named as a folder split names them, below the folder they share: a/x.png and b/x.png stay apart.
        try:
            common = Path(os.path.commonpath([image.parent for image, _ in pairs])) if pairs else root
        except ValueError:  # on two drives (Windows): no shared folder, the stems alone
            return [Sample(image.stem, image, mask) for image, mask in pairs]
        return [Sample(image.relative_to(common).with_suffix("").as_posix(), image, mask) for image, mask in pairs]

    # ---- reading masks ------------------------------------------------------------------------------------
    def lookup_table(self, size: int = 256) -> np.ndarray:
        """raw mask value -> class id (255 ignore, 0xFFFF not allowed), for index masks. A label_mapping entry for
        the ignore_index value wins over it: `{0: 0, 255: 1}` reads 0/255 binary masks."""
        lut = np.full(size, _INVALID, np.uint16)
        if self.label_mapping is None:
            lut[: min(self.num_classes, size)] = np.arange(min(self.num_classes, size))
            if self.ignore_index < size:
                lut[self.ignore_index] = IGNORE_INDEX
        else:
            lut[:] = IGNORE_INDEX  # values the mapping leaves out are ignored: the user listed what they want
            for raw, target in self.label_mapping.items():
                if raw < size:
                    lut[raw] = target
        return lut

    def read_label(self, sample: Sample) -> np.ndarray:
        """A sample's mask as uint8 class ids (255 = ignore); a DataError naming the file for any unknown value."""
        if self.layout == "cityscapes":
            return read_checked_train_ids(sample)
        path = sample.label
        if self.mask_format == "color":
            return self._read_colour_mask(path)
        if self.mask_format == "yolo":
            return read_polygon_mask(path, sample.image, self.num_classes - 1)
        if self.mask_format == "coco":
            return read_coco_mask(path, sample.image, self.names)
        return self.classes_of(read_index_mask(path), path)

    def classes_of(self, raw: np.ndarray, path: Path) -> np.ndarray:
        """An index mask's raw values (read_index_mask) as class ids, through label_mapping where there is one."""
        mapped = self.lookup_table(256 if raw.dtype == np.uint8 else 65536)[raw]
        bad = mapped == _INVALID
        if bad.any():
            value = int(raw[bad].flat[0])
            raise DataError(
                f"{path}: mask value {value} is no class (0..{self.num_classes - 1}) and not ignore_index "
                f"({self.ignore_index}); map it with label_mapping or fix the mask"
            )
        return mapped.astype(np.uint8)

    def _read_colour_mask(self, path: Path) -> np.ndarray:
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise DataError(f"{path}: unreadable colour mask")
        code = (bgr[:, :, 2].astype(np.int32) << 16) | (bgr[:, :, 1].astype(np.int32) << 8) | bgr[:, :, 0]
        values, inverse = np.unique(code, return_inverse=True)
        table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(self.colours)}
        table.update({(r << 16) | (g << 8) | b: IGNORE_INDEX for r, g, b in self.ignore_colors})
        mapped = np.empty(len(values), np.uint8)
        for index, value in enumerate(values.tolist()):
            if value not in table:
                colour = (value >> 16, (value >> 8) & 255, value & 255)
                distances = [sum((a - b) ** 2 for a, b in zip(colour, c, strict=True)) for c in self.colours]
                nearest = int(np.argmin(distances))
                raise DataError(
                    f"{path}: colour {colour} is in no class of the palette (nearest: {self.names[nearest]} "
                    f"{tuple(self.colours[nearest])}); add it to `palette` or `ignore_colors`"
                )
            mapped[index] = table[value]
        return mapped[inverse.reshape(code.shape)]

    def to_record(self) -> dict:
        """What a checkpoint keeps of the data set it was trained on; its YAML and root (where they are files on
        this machine) are where `eval` and `quantize` look when not told."""
        return {
            "name": self.name,
            "names": list(self.names),
            "palette": [list(c) for c in self.colours],
            "ignore_index": self.ignore_index,
            "label_mapping": dict(self.label_mapping) if self.label_mapping else None,
            "file": str(self.own_file) if self.own_file else None,
            "root": str(self.path.resolve()) if self.path is not None and self.path.is_dir() else None,
        }


def read_index_mask(path: Path) -> np.ndarray:
    """An index mask's raw values, 2-D uint8 or uint16, or a DataError naming the file."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is not None and raw.ndim == 3:
        raw = _palette_indices(path, raw)
    if raw is None or raw.ndim != 2 or raw.dtype not in (np.uint8, np.uint16):
        raise DataError(
            f"{path}: unreadable or not an 8/16-bit index mask (masks that draw classes in colours: set "
            "mask_format: color and a palette)"
        )
    return raw


def _palette_indices(path: Path, bgr: np.ndarray) -> np.ndarray | None:
    """OpenCV expands palette PNGs to colours; their indices are what an index mask means. A grey mask saved as
    RGB (three equal channels, perhaps with alpha) holds its indices in every channel."""
    from PIL import Image

    with Image.open(path) as image:
        if image.mode == "P":
            return np.asarray(image)
    if bgr.shape[2] in (3, 4) and (bgr[:, :, 0] == bgr[:, :, 1]).all() and (bgr[:, :, 1] == bgr[:, :, 2]).all():
        return bgr[:, :, 0]
    return bgr


# ---- loading ------------------------------------------------------------------------------------------------
def load_dataset(data: str | Path | dict | None, root: str | Path | None = None) -> DatasetSpec:
    """`--data` as every command takes it: a built-in name, a YAML path or an inline mapping; `root` overrides
    `path`. None means Cityscapes (seglite's default before data sets were configurable)."""
    if data is None:
        data = "cityscapes"
    read_as = ""
    if isinstance(data, dict):
        raw, where, folder = dict(data), "inline data set", Path.cwd()
    else:
        raw, where, folder, read_as = _read_yaml(data)
    raw = _resolve_base(raw, where, folder)
    if raw.get("path") is None and where != "inline data set" and str(data) not in builtin_datasets():
        raw["path"] = str(folder.resolve())  # as in Ultralytics: a YAML without `path` lies in the data set's folder
    if raw.get("names") is None and _coco_splits(raw):
        raw = {**raw, "names": _coco_names(raw, Path(root) if root else folder / str(raw.get("path") or "."), where)}
    spec = _build(raw, where, folder).with_root(root)
    if not {"mask_format", "masks_dir", "mask_suffix"} & set(raw) and _yolo_labels_beside(spec):
        spec = _build({**raw, "mask_format": "yolo"}, where, folder).with_root(root)  # an Ultralytics YAML as it is
    return replace(spec, read_as=read_as) if read_as else spec


def _entry_under(root: Path, value: str) -> Path:
    entry = root / value
    if not entry.exists() and value.startswith("../") and (root / value[3:]).exists():
        return root / value[3:]  # Roboflow's `../train/images`, read as Ultralytics reads it
    return entry


def _is_share(text: str) -> bool:
    try:
        return 0 < float(text) < 50
    except ValueError:
        return False


def _below(path: Path, *folders: Path) -> Path:
    """`path` relative to the first of `folders` that holds it (its name where none does)."""
    return next((path.relative_to(folder) for folder in folders if path.is_relative_to(folder)), Path(path.name))


def _coco_splits(raw: dict) -> list[str]:
    return [str(raw[s]) for s in SPLITS if str(raw.get(s) or "").lower().endswith(".json")]


def _coco_names(raw: dict, root: Path, where: str) -> list[str]:
    """A COCO data set's classes where its YAML names none: the categories of its first split's file."""
    first = root / _coco_splits(raw)[0]
    if not first.is_file():
        raise DataError(f"{where}: names: none given, and {first} (to read its categories from) is not there")
    return coco_class_names(first)


def _yolo_labels_beside(spec: DatasetSpec) -> bool:
    """An `images/` split folder with `labels/*.txt` beside it: Ultralytics' layout, whose YAML names no format."""
    if spec.layout != "generic" or spec.path is None or not spec.path.is_dir():
        return False
    for split in spec.splits:
        entry = spec.split_entry(split)
        if entry.is_dir() and "images" in entry.parts:
            parts = list(entry.parts)
            index = len(parts) - 1 - parts[::-1].index("images")
            labels = Path(*parts[:index], "labels", *parts[index + 1 :])
            if labels.is_dir() and next(labels.rglob("*.txt"), None) is not None:
                return True
    return False


@dataclass(frozen=True)
class TrainedData:
    """The data set weights were trained on, found from the record their checkpoint or export keeps."""

    spec: DatasetSpec
    given_as: str  # the YAML path or built-in name it was loaded from
    moved_to: str | None = None  # the root training read, taken because the data set's own `path` is not here


def trained_dataset(
    record: dict | None, data: str | Path | None = None, root: str | Path | None = None
) -> TrainedData | None:
    """`data` as load_dataset reads it, else the data set the record names: its YAML where that is still there, else
    a built-in by name. At `root`, else at its own `path`, else (the same data set) at the root training read. None
    where neither is given nor recorded on this machine."""
    record = record or {}
    name, file, trained_root = record.get("name"), record.get("file"), record.get("root")
    given_as = data if data is not None else (file if file and Path(file).exists() else None)
    given_as = given_as or (name if name in builtin_datasets() else None)
    if given_as is None:
        return None
    spec = load_dataset(given_as, root)
    here = spec.path is not None and spec.path.is_dir()
    if root is None and trained_root and spec.name == name and not here and Path(trained_root).is_dir():
        return TrainedData(spec.with_root(trained_root), str(given_as), trained_root)
    return TrainedData(spec, str(given_as))


def _read_yaml(data: str | Path) -> tuple[dict, str, Path, str]:
    """The data set's keys, where they were read (for messages), the folder its relative paths start from, and
    what an export folder read without a YAML was recognised as ("" for a YAML)."""
    text = str(data)
    builtin = BUILTIN_DIR / f"{text}.yaml" if text in builtin_datasets() else None
    path = builtin or Path(text)
    if path.is_dir() and (path / "data.yaml").is_file():  # an exported data set's folder: its YAML is data.yaml
        path = path / "data.yaml"
    if path.is_dir():
        keys, kind = _read_folder(path, text)
        line = one_line(keys)
        read_as = f"{path} is {kind}; read as {line} (save that as {path / 'data.yaml'} to rename classes)"
        return {"name": path.resolve().name, **keys}, str(path), path, read_as
    if not path.is_file():
        yamls = [str(p) for p in path.parent.glob("*.y*ml")] if path.parent.is_dir() else []
        close = (
            [str(p) for p in _beside(path)]
            or difflib.get_close_matches(text, builtin_datasets(), n=1)
            or difflib.get_close_matches(str(path), yamls, n=1)
        )
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(
            f"--data {text!r}: no such built-in data set or YAML file; {hint}built-in: {', '.join(builtin_datasets())}"
        )
    raw = read_mapping(path, DataError, f"a mapping of data set keys ({', '.join(KEYS)})")
    return raw, str(path), (path.parent if builtin is None else Path.cwd()), ""


def _beside(path: Path) -> list[Path]:
    """`mydata.yaml` for `--data mydata`."""
    return [
        yaml for yaml in (path.with_name(path.name + ".yaml"), path.with_name(path.name + ".yml")) if yaml.is_file()
    ]


def _read_folder(folder: Path, text: str) -> tuple[dict, str]:
    """A folder given as --data without a data.yaml: an annotation tool's export (layouts.EXPORTS) read as it
    is (its keys, and what it is); else the --data that reads it: a built-in data set laid out there, a YAML in
    it, or one to write."""
    for name in builtin_datasets():
        spec = load_dataset(name, folder)
        if all(spec.split_on_disk(split) for split in ("train", "val")):
            how = f"it is laid out as {name}: pass --data {name} --data-root {folder}"
            break
    else:
        yamls = [*_beside(folder), *sorted(folder.glob("*.y*ml"))]
        if yamls:
            how = f"pass its data set YAML, e.g. --data {yamls[0]}"
        elif recognised := recognise_export(folder, Files(IMAGE_EXTENSIONS, read_index_mask)):
            kind, keys = recognised
            return keys, kind
        else:
            how = (
                f"describe it in a YAML (path: {folder.resolve()}, train:, val:, masks_dir: or mask_suffix:, "
                "names:) and pass that; see the own-data guide"
            )
    raise DataError(f"--data {text!r}: is a folder, not a data set; {how}")


def _resolve_base(raw: dict, where: str, folder: Path) -> dict:
    """`base: camvid` (or a YAML path) inherits every key it does not set: one line for a relabelled data set."""
    if "base" not in raw:
        return raw
    base_name = str(raw.pop("base"))
    candidate = folder / base_name
    base_raw, base_where, base_folder, _ = _read_yaml(candidate if candidate.is_file() else base_name)
    base_raw = _resolve_base(base_raw, base_where, base_folder)
    if "path" in base_raw and base_raw["path"] is not None and base_folder != Path.cwd():
        base_raw["path"] = str(base_folder / base_raw["path"])
    relabelled = "names" in raw and "palette" not in raw
    base_raw.pop("name", None)  # another data set than the base: named after its own YAML unless it says
    merged = {**base_raw, **raw}
    if relabelled:  # new classes: the base's colours no longer describe them
        merged.pop("palette", None)
    return merged


def _build(raw: dict, where: str, folder: Path) -> DatasetSpec:
    for key in raw:
        if key not in KEYS:
            close = difflib.get_close_matches(str(key), KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise DataError(f"{where}: unknown key {key!r}{hint} (allowed: {', '.join(KEYS)})")
    layout = str(raw.get("layout", "generic"))
    if layout not in ("generic", "cityscapes"):
        raise DataError(f"{where}: layout {layout!r}: expected generic or cityscapes")
    names = _names(raw.get("names"), where) if layout == "generic" else CLASS_NAMES
    listed_names = len(names)
    palette = _colours(raw.get("palette"), where, "palette")
    if layout == "cityscapes" and palette is None:
        palette = tuple(tuple(int(v) for v in PALETTE_RGB[i]) for i in range(len(CLASS_NAMES)))
    if palette is not None and len(palette) != len(names):
        raise DataError(f"{where}: `names` has {len(names)} classes but `palette` {len(palette)} colours")
    ignore_index = raw.get("ignore_index", IGNORE_INDEX)
    if not isinstance(ignore_index, int) or not 0 <= ignore_index <= 65535:
        raise DataError(f"{where}: ignore_index {ignore_index!r}: expected a whole number 0..65535")
    mapping = _label_mapping(raw.get("label_mapping"), len(names), where)
    mask_format = str(raw.get("mask_format", "coco" if _coco_splits(raw) else "index"))
    if mask_format not in ("index", "color", "yolo", "coco"):
        raise DataError(f"{where}: mask_format {mask_format!r}: expected index, color, yolo or coco")
    if mask_format in ("yolo", "coco"):  # classes of objects: the pixels no polygon covers are class 0 here
        if mapping is not None:
            kind = {"yolo": "YOLO labels hold class ids", "coco": "COCO annotations hold categories"}[mask_format]
            raise DataError(f"{where}: label_mapping reads mask values; {kind}: leave it out")
        if mask_format == "yolo" or names[0].lower() != BACKGROUND:  # (YOLO's reader counts its classes from 1)
            names = (BACKGROUND, *names)
        if palette is not None and len(palette) == len(names) - 1:
            palette = ((0, 0, 0), *palette)
        if mask_format == "yolo" and not raw.get("masks_dir") and not raw.get("mask_suffix"):
            raw["masks_dir"] = {"images": "labels"}  # Ultralytics' layout
    if mask_format == "color" and palette is None:
        raise DataError(f"{where}: mask_format color needs `palette` (one RGB colour per class)")
    masks_dir = raw.get("masks_dir") or {}
    if not isinstance(masks_dir, dict):
        raise DataError(f"{where}: masks_dir: expected a mapping of folder names, e.g. {{images: masks}}")
    suffix = raw.get("mask_suffix")
    if suffix is not None:
        if not (isinstance(suffix, dict) and set(suffix) == {"image", "mask"}):
            raise DataError(
                f"{where}: mask_suffix: expected {{image: _leftImg8bit.png, mask: _gtFine_labelIds.png}} (both keys)"
            )
        suffix = (str(suffix["image"]), str(suffix["mask"]))
    if raw.get("nc") is not None and raw["nc"] != listed_names:
        raise DataError(f"{where}: nc is {raw['nc']!r} but `names` lists {listed_names}")
    listed = next((s for s in SPLITS if isinstance(raw.get(s), list)), None)
    if listed:
        raise DataError(
            f"{where}: {listed}: a list of folders; give one folder or a list file (a .txt of image paths) per split"
        )
    splits = {s: str(raw[s]) for s in SPLITS if raw.get(s) is not None}
    for split, value in splits.items():
        if value.endswith("%") and (split == "train" or not _is_share(value[:-1])):
            raise DataError(
                f"{where}: {split}: {value!r}: a share of train is written `{'val' if split == 'train' else split}: "
                "10%` (more than 0, under 50), on val or test"
            )
    if layout == "generic" and not splits:
        raise DataError(f"{where}: no split; set at least one of train, val, test (a folder or a list file)")
    path = raw.get("path")
    if path is not None:
        path = Path(str(path)).expanduser()
        if not path.is_absolute():
            path = folder / path
    return DatasetSpec(
        name=str(raw.get("name") or _name_of(Path(where))),
        names=names,
        path=path,
        splits=splits,
        palette=palette,
        ignore_index=ignore_index,
        label_mapping=mapping,
        mask_format=mask_format,
        masks_dir={str(k): str(v) for k, v in masks_dir.items()},
        mask_suffix=suffix,
        strip_prefix=str(raw["strip_prefix"]) if raw.get("strip_prefix") else None,
        ignore_colors=_colours(raw.get("ignore_colors"), where, "ignore_colors") or (),
        layout=layout,
        source=where,
        download=_download(raw.get("download"), where, folder),
    )


def _name_of(yaml_file: Path) -> str:
    """A data set's name: its YAML's stem, or its folder's name for the `data.yaml` every YOLO export is called."""
    if yaml_file.stem.lower() in ("data", "dataset"):
        return yaml_file.resolve().parent.name or yaml_file.stem
    return yaml_file.stem


def _download(value, where: str, folder: Path) -> Download | None:
    if value is None:
        return None
    example = "{zips: [data.zip], from: https://host/data.zip, folder: data}"
    if isinstance(value, str) and "\n" not in value.strip():  # Ultralytics' form: the one zip's URL (or path)
        if not value.strip().lower().endswith(".zip"):
            raise DataError(f"{where}: download: {value.strip()!r}: seglite unpacks .zip files; expected a .zip URL")
        value = {"zips": [value.strip().rsplit("/", 1)[-1]], "from": value.strip()}
    elif isinstance(value, str):
        raise DataError(
            f"{where}: download: a script (Ultralytics runs it); seglite runs no code from a data set YAML: fetch the "
            f"data yourself, or write {example}"
        )
    if not isinstance(value, dict) or not {"zips", "from"} <= set(value) or set(value) - {"zips", "from", "folder"}:
        raise DataError(f"{where}: download: expected {example} (folder optional)")
    zips = value["zips"] if isinstance(value["zips"], list) else [value["zips"]]
    if not zips or not all(isinstance(z, str) and z.endswith(".zip") and "/" not in z for z in zips):
        raise DataError(f"{where}: download: zips: expected file names ending in .zip, e.g. {example}")
    source = str(value["from"])
    if "://" not in source and source != CITYSCAPES_SITE:  # a path here (a share, a disk), from the YAML's folder
        local = (folder / Path(source).expanduser()).resolve()
        source = local.as_uri() + ("/" if source.endswith("/") else "")
    if len(zips) > 1 and "://" in source and not source.endswith("/"):
        raise DataError(f"{where}: download: from: several zips need a folder URL ending in / (each name is appended)")
    return Download(tuple(zips), source, str(value.get("folder") or "").strip("/"))


def _names(value, where: str) -> tuple[str, ...]:
    if isinstance(value, dict):
        try:
            ids = sorted(int(k) for k in value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: names: ids must be whole numbers, e.g. {{0: road, 1: other}}") from None
        if ids != list(range(len(ids))):
            raise DataError(f"{where}: names: ids must be 0..{len(ids) - 1} without gaps, found {ids}")
        value = [value[k] if k in value else value[str(k)] for k in ids]
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: names: expected a list of class names (or {{id: name}})")
    if len(value) < 2:
        raise DataError(f"{where}: names: at least 2 classes (e.g. [background, road])")
    if len(value) > 255:
        raise DataError(f"{where}: names: at most 255 classes (ids are stored as bytes, 255 = ignore)")
    names = tuple(str(v) for v in value)
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise DataError(f"{where}: names: {sorted(duplicates)[0]!r} appears twice")
    return names


def _colours(value, where: str, key: str) -> tuple[tuple[int, int, int], ...] | None:
    if value is None:
        return None
    try:
        colours = tuple(tuple(int(c) for c in colour) for colour in value)
    except (TypeError, ValueError):
        raise DataError(f"{where}: {key}: expected a list of [R, G, B] triples") from None
    bad = next((c for c in colours if len(c) != 3 or not all(0 <= v <= 255 for v in c)), None)
    if bad is not None:
        raise DataError(f"{where}: {key}: {list(bad)} is not an RGB colour (three values 0..255)")
    return colours


def _label_mapping(value, num_classes: int, where: str) -> dict[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise DataError(f"{where}: label_mapping: expected {{raw value: class id}}, e.g. {{0: 255, 7: 0}}")
    mapping = {}
    for raw, target in value.items():
        try:
            raw_value, target_value = int(raw), int(target)
        except (TypeError, ValueError):
            raise DataError(f"{where}: label_mapping {raw!r}: {target!r}: expected whole numbers") from None
        if not (0 <= target_value < num_classes or target_value == IGNORE_INDEX):
            raise DataError(
                f"{where}: label_mapping {raw_value}: {target_value}: no such class (0..{num_classes - 1}, or 255 "
                "for ignore)"
            )
        mapping[raw_value] = target_value
    return mapping
