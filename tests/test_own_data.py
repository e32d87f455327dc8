"""Own data: data set YAML (folders, list files, colour masks, label_mapping), any class count, fine-tuning from
published weights with linked classes, cross-data-set evaluation, and CamVid as real data."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import REALDATA, cli, require_realdata
from PIL import Image

import seglite
from seglite.data.classmap import link_classes, load_class_map
from seglite.data.datasets import load_dataset
from seglite.data.labels import CLASS_NAMES
from seglite.errors import DataError, InputError, SegliteError
from seglite.evaluation.evaluator import prediction_lookup
from seglite.evaluation.metrics import ConfusionMatrix
from seglite.inference.onnx_export import export_onnx, ort_session

CAMVID_NAMES = [
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
]


def _seglite(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "seglite", *args], capture_output=True, text=True, env=env, cwd=cwd)


def _binary_set(root: Path, count: int = 4, size=(64, 48), mask_value_road: int = 1) -> Path:
    """A 2-class data set in the Ultralytics layout: images/{train,val}, masks/{train,val}; bottom half is road."""
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "masks" / split).mkdir(parents=True)
        for i in range(count):
            image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            mask = np.zeros((size[1], size[0]), np.uint8)
            mask[size[1] // 2 :] = mask_value_road
            image[size[1] // 2 :] = (90, 90, 90)
            cv2.imwrite(str(root / "images" / split / f"f{i}.jpg"), image)
            cv2.imwrite(str(root / "masks" / split / f"f{i}.png"), mask)
    return root


def _roboflow_semantic_export(root: Path, name: str) -> Path:
    """Roboflow's "Semantic Segmentation Masks" export of background and `name`: train/ and valid/, one frame each."""
    for split in ("train", "valid"):
        (root / split).mkdir(parents=True)
        (root / split / "_classes.csv").write_text(f"Pixel Value, Class\n0, background\n1, {name}\n")
        cv2.imwrite(str(root / split / "a_jpg.rf.1.jpg"), np.full((30, 40, 3), 60, np.uint8))
        cv2.imwrite(str(root / split / "a_jpg.rf.1_mask.png"), np.eye(30, 40, dtype=np.uint8))
    return root


def _write_yaml(path: Path, content: dict) -> Path:
    path.write_text(yaml.safe_dump(content))
    return path


def _binary_yaml(tmp_path: Path, **extra) -> Path:
    root = _binary_set(tmp_path / "drive")
    content = {
        "path": str(root),
        "train": "images/train",
        "val": "images/val",
        "masks_dir": {"images": "masks"},
        "names": ["background", "road"],
        **extra,
    }
    return _write_yaml(tmp_path / "drive.yaml", content)


# ---- data set files --------------------------------------------------------------------------------------------
def test_folder_data_set_pairs_images_with_masks(tmp_path):
    spec = load_dataset(_binary_yaml(tmp_path))
    samples = spec.samples("train")
    assert [s.image.name for s in samples] == ["f0.jpg", "f1.jpg", "f2.jpg", "f3.jpg"]
    assert all(s.label.parent.name == "train" and s.label.parent.parent.name == "masks" for s in samples)
    label = spec.read_label(samples[0])
    assert label.dtype == np.uint8 and set(np.unique(label)) == {0, 1} and label[-1, 0] == 1


def test_names_as_id_mapping_and_palette_defaults(tmp_path):
    spec = load_dataset(_binary_yaml(tmp_path, names={0: "background", 1: "road"}))
    assert spec.names == ("background", "road") and len(spec.colours) == 2 and spec.colours[0] != spec.colours[1]


def test_label_mapping_turns_raw_values_into_classes_and_the_rest_into_ignore(tmp_path):
    root = _binary_set(tmp_path / "d", mask_value_road=7)
    mask = cv2.imread(str(root / "masks" / "train" / "f0.png"), cv2.IMREAD_UNCHANGED)
    mask[0, :5] = 3  # a value the mapping leaves out
    cv2.imwrite(str(root / "masks" / "train" / "f0.png"), mask)
    path = _write_yaml(
        tmp_path / "d.yaml",
        {
            "path": str(root),
            "train": "images/train",
            "masks_dir": {"images": "masks"},
            "names": ["other", "road"],
            "label_mapping": {0: 0, 7: 1},
        },
    )
    spec = load_dataset(path)
    label = spec.read_label(spec.samples("train")[0])
    assert (label[0, :5] == 255).all() and label[-1, 0] == 1 and label[1, 0] == 0
    result = _seglite("data", "check", "--data", str(path))
    assert result.returncode == 0, result.stderr
    assert "values outside label_mapping, read as ignore: 3 (5 px)" in result.stdout


def test_mask_value_outside_the_classes_is_named(tmp_path):
    root = _binary_set(tmp_path / "d", mask_value_road=5)
    path = _write_yaml(
        tmp_path / "d.yaml",
        {"path": str(root), "train": "images/train", "masks_dir": {"images": "masks"}, "names": ["a", "b"]},
    )
    with pytest.raises(DataError, match=r"f0.png: mask value 5 is no class \(0..1\)"):
        spec = load_dataset(path)
        spec.read_label(spec.samples("train")[0])
    result = cli("data", "check", "--data", str(path))
    assert result.returncode == 2 and "mask value 5" in result.stderr and "Traceback" not in result.stderr


def test_binary_0_255_masks_are_refused_with_the_mapping_that_reads_them(tmp_path):
    """255 is ignore_index, so a 0/255 mask shows the network one class: refused before training, with the fix."""
    root = _binary_set(tmp_path / "d", mask_value_road=255)
    content = {"path": str(root), "train": "images/train", "val": "images/val", "masks_dir": {"images": "masks"}}
    path = _write_yaml(tmp_path / "d.yaml", content | {"names": ["background", "road"]})
    result = cli("data", "check", "--data", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "train masks (4) show only 'background' of 2; 50.0 % of their pixels are ignored" in result.stderr
    assert "label_mapping: {0: 0, 255: 1}" in result.stderr
    assert "train: no pixel of 'road' in any mask" in result.stdout
    from seglite.training.config import load_config
    from seglite.training.trainer import Trainer

    config = load_config("configs/synth_espnetv2_s0.5.yaml", [f"data.dataset={path}", "data.root=null"])
    with pytest.raises(SegliteError, match=r"show only 'background' of 2"):
        Trainer(config, tmp_path / "run", show_progress=False).run()
    assert not (tmp_path / "run" / "last.pt").exists()

    fixed = _write_yaml(
        tmp_path / "fixed.yaml", content | {"names": ["background", "road"], "label_mapping": {0: 0, 255: 1}}
    )
    spec = load_dataset(fixed)
    label = spec.read_label(spec.samples("train")[0])
    assert label[-1, 0] == 1 and label[0, 0] == 0 and 255 not in label
    result = cli("data", "check", "--data", str(fixed))
    assert result.returncode == 0, result.stderr
    assert "0.0 %" in result.stdout and "no pixel" not in result.stdout


@pytest.mark.parametrize(
    ("extension", "hint"),
    [
        (".jpg", "JPEG blurs a mask's values at every edge: save masks as PNG"),
        (".bmp", "mask_suffix: {image: .jpg, mask: .bmp}"),
    ],
)
def test_a_mask_saved_in_another_format_is_named_with_the_fix(tmp_path, extension, hint):
    path = _binary_yaml(tmp_path)
    for mask in (tmp_path / "drive" / "masks").rglob("*.png"):
        cv2.imwrite(str(mask.with_suffix(extension)), cv2.imread(str(mask), cv2.IMREAD_UNCHANGED))
        mask.unlink()
    result = cli("data", "check", "--data", str(path))
    expected = tmp_path / "drive" / "masks" / "train" / "f0.png"
    assert (
        result.returncode == 2 and f"f0.jpg: no mask (looked for {expected}); f0{extension} is there" in result.stderr
    )
    assert hint in result.stderr
    with pytest.raises(DataError, match="4 of 4 image"):
        load_dataset(path).samples("train")
    if extension == ".bmp":
        content = yaml.safe_load(path.read_text()) | {"mask_suffix": {"image": ".jpg", "mask": ".bmp"}}
        result = cli("data", "check", "--data", str(_write_yaml(path, content)))
        assert result.returncode == 0, result.stderr


def test_a_phone_photo_pairs_with_a_mask_drawn_on_it_upright(tmp_path):
    """Training reads a photo turned upright by its EXIF orientation; data check compares the mask with that size."""
    from PIL import Image

    path = _binary_yaml(tmp_path)
    image = tmp_path / "drive" / "images" / "train" / "f0.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64x48, shown (and read) 48x64
    Image.open(image).save(image, exif=exif.tobytes())
    mask = tmp_path / "drive" / "masks" / "train" / "f0.png"
    stored = cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
    result = cli("data", "check", "--data", str(path))
    assert result.returncode == 2 and f"{mask}: mask is 64x48, image 48x64" in result.stderr
    cv2.imwrite(str(mask), cv2.rotate(stored, cv2.ROTATE_90_CLOCKWISE))
    result = cli("data", "check", "--data", str(path))
    assert result.returncode == 0, result.stderr
    assert "64x48 (+1 other)" in result.stdout


def test_a_grey_mask_saved_as_rgb_reads_as_its_indices(tmp_path):
    root = _binary_set(tmp_path / "d", mask_value_road=7)
    first = root / "masks" / "train" / "f0.png"
    grey = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
    grey[0, :5] = 3  # a value the mapping leaves out
    for mask in (root / "masks").rglob("*.png"):
        values = grey if mask == first else cv2.imread(str(mask), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(mask), cv2.merge([values, values, values]))
    content = {"path": str(root), "train": "images/train", "masks_dir": {"images": "masks"}, "names": ["other", "road"]}
    path = _write_yaml(tmp_path / "d.yaml", content | {"label_mapping": {0: 0, 7: 1}})
    spec = load_dataset(path)
    label = spec.read_label(spec.samples("train")[0])
    assert label.shape == (48, 64) and label[-1, 0] == 1 and label[1, 0] == 0 and (label[0, :5] == 255).all()
    result = cli("data", "check", "--data", str(path))
    assert result.returncode == 0, result.stderr
    assert "values outside label_mapping, read as ignore: 3 (5 px)" in result.stdout
    colour = cv2.imread(str(first), cv2.IMREAD_UNCHANGED)
    colour[0, 0] = (0, 0, 9)  # channels that differ: a colour mask, not an index one
    cv2.imwrite(str(first), colour)
    with pytest.raises(DataError, match="f0.png: unreadable or not an 8/16-bit index mask .*mask_format: color"):
        spec.read_label(spec.samples("train")[0])


def test_a_class_no_mask_shows_is_named(tmp_path):
    path = _binary_yaml(tmp_path, names=["background", "road", "sky"])
    result = cli("data", "check", "--data", str(path))
    assert result.returncode == 0, result.stderr
    assert "train: no pixel of 'sky' in any mask (the network cannot learn them)" in result.stdout
    assert (
        "val: no pixel of 'sky' in any mask (each counts as IoU 0 where it is predicted, else is left out"
        in result.stdout
    )
    from seglite.training.config import load_config
    from seglite.training.trainer import Trainer

    config = load_config("configs/synth_espnetv2_s0.5.yaml", [f"data.dataset={path}", "data.root=null"])
    trainer = Trainer(config, tmp_path / "run", show_progress=False)
    trainer._check_data()
    assert "no mask of split 'train' has a pixel of 'sky': the network cannot learn them" in trainer.messages


def test_list_file_with_prefix_and_a_missing_file(tmp_path):
    root = _binary_set(tmp_path / "d")
    lines = [f"/old/place/images/train/f{i}.jpg /old/place/masks/train/f{i}.png" for i in range(3)]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    base = {"path": str(root), "train": "train.txt", "names": ["a", "b"]}
    no_prefix = load_dataset(_write_yaml(tmp_path / "a.yaml", base))
    with pytest.raises(DataError, match=r"train.txt:1: /old/place/images/train/f0.jpg does not exist.*"):
        no_prefix.samples("train")
    with pytest.raises(DataError, match=r"written on another machine set `strip_prefix: '/old/place/'`$"):
        no_prefix.samples("train")
    # A list written on Windows: its separators are read as such, and its drive named for strip_prefix.
    windows = [rf"D:\work\images\train\f{i}.jpg D:\work\masks\train\f{i}.png" for i in range(3)]
    (root / "train.txt").write_text("\r\n".join(windows) + "\r\n")
    with pytest.raises(DataError, match=re.escape(r"set `strip_prefix: 'D:\\work\\'`") + "$"):
        no_prefix.samples("train")
    windows_set = load_dataset(_write_yaml(tmp_path / "w.yaml", {**base, "strip_prefix": "D:\\work\\"}))
    assert [s.label.name for s in windows_set.samples("train")] == ["f0.png", "f1.png", "f2.png"]
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    spec = load_dataset(_write_yaml(tmp_path / "b.yaml", {**base, "strip_prefix": "/old/place/"}))
    assert [s.label.name for s in spec.samples("train")] == ["f0.png", "f1.png", "f2.png"]
    (root / "train.txt").write_text("\n".join([*lines, "/old/place/images/train/gone.jpg x.png"]) + "\n")
    with pytest.raises(DataError, match=r"train.txt:4: .*gone.jpg does not exist"):
        spec.samples("train")


def test_list_files_take_names_with_spaces_and_image_only_lines(tmp_path):
    root = _binary_set(tmp_path / "d")
    for split in ("train", "val"):
        for image in sorted((root / "images" / split).glob("*.jpg")):
            image.rename(image.with_name(f"my {image.name}"))
        for mask in sorted((root / "masks" / split).glob("*.png")):
            mask.rename(mask.with_name(f"my {mask.name}"))
    train = sorted((root / "images" / "train").glob("*.jpg"))
    lines = [f"images/train/{p.name} masks/train/{p.stem}.png" for p in train]  # split at the space that works
    lines[1] = lines[1].replace(".jpg ", ".jpg\t")  # or at a tab
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "val.txt").write_text(
        "".join(f"images/val/{p.name}\n" for p in sorted((root / "images" / "val").glob("*.jpg")))
    )
    base = {"path": str(root), "train": "train.txt", "val": "val.txt", "names": ["a", "b"]}
    spec = load_dataset(_write_yaml(tmp_path / "a.yaml", base))
    assert [(s.image.name, s.label.name) for s in spec.samples("train")] == [(p.name, f"{p.stem}.png") for p in train]
    assert [s.stem for s in spec.samples("train")] == [p.stem for p in train]  # eval --save-predictions' names
    # A line of an image alone finds its mask as a folder split does (Ultralytics' lists), when told how.
    with pytest.raises(DataError, match=r"my f0.jpg: no mask on its line of .*val.txt .*`masks_dir`"):
        spec.samples("val")
    spec = load_dataset(_write_yaml(tmp_path / "b.yaml", {**base, "masks_dir": {"images": "masks"}}))
    assert all(s.label == root / "masks" / "val" / f"{s.image.stem}.png" for s in spec.samples("val"))
    (root / "masks" / "val" / "my f0.png").unlink()
    with pytest.raises(DataError, match=r"my f0.jpg: no mask \(looked for .*masks/val/my f0.png\)"):
        spec.samples("val")
    for line in ("images/train/my f0.jpg masks/train/nothing here.png", "images/train/my f0.jpg\tmasks/train/no.png"):
        (root / "train.txt").write_text(line + "\n")
        with pytest.raises(DataError, match=r"train.txt:1: .*masks/train/no(thing here)?.png does not exist"):
            spec.samples("train")
    # Images of one name in two folders keep apart, as in a folder split (their saved predictions do not collide).
    (root / "train.txt").write_text("images/train/my f0.jpg masks/train/my f0.png\nimages/val/my f1.jpg\n")
    assert [s.stem for s in spec.samples("train")] == ["train/my f0", "val/my f1"]
    (root / "train.txt").write_text("images/train/a photo.jpg masks/train/its mask.png\n")
    with pytest.raises(DataError, match=r"train.txt:1: expected `image \[mask\]`, found 4 fields .*with a tab"):
        spec.samples("train")


def test_yolo_polygon_labels_read_as_class_masks_with_background_as_class_0(tmp_path):
    """Ultralytics' segmentation layout: images/ and labels/*.txt (`class x1 y1 x2 y2 ...`, fractions of the size)."""
    from seglite.data.check import check_dataset

    root = tmp_path / "yolo"
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / "images" / split / f"f{i}.jpg"), np.full((60, 80, 3), 40 * i, np.uint8))
    big, small = "0 0.0 0.0 1.0 0.0 1.0 1.0 0.0 1.0", "1 0.25 0.25 0.75 0.25 0.5 0.75"
    for split in ("train", "val"):  # the small sign first in the file: drawn after the road that holds it
        (root / "labels" / split / "f1.txt").write_text(f"{small}\n\n{big}\n")
    data = _write_yaml(tmp_path / "yolo.yaml", {"path": str(root), "train": "images/train", "val": "images/val",
                                                 "mask_format": "yolo", "names": {0: "road", 1: "sign"}})  # fmt: skip
    spec = load_dataset(data)
    assert spec.names == ("background", "road", "sign")
    empty, labelled = spec.samples("train")  # f0 has no label file: an image of no object
    assert not empty.label.exists() and (spec.read_label(empty) == 0).all()
    expected = np.full((60, 80), 1, np.uint8)
    cv2.fillPoly(expected, [np.round(np.array([[20, 15], [60, 15], [40, 45]])).astype(np.int32)], 2)
    np.testing.assert_array_equal(spec.read_label(labelled), expected)
    reports = check_dataset(spec)
    assert [(r.split, r.labelled, r.problems) for r in reports] == [("train", 2, []), ("val", 2, [])]
    # Ultralytics' list files name images only; one without a label file is background there too.
    (root / "train.txt").write_text("images/train/f0.jpg\n./images/train/f1.jpg\n")
    listed = load_dataset(_write_yaml(tmp_path / "l.yaml", {**yaml.safe_load(data.read_text()), "train": "train.txt"}))
    empty, labelled = listed.samples("train")
    assert (listed.read_label(empty) == 0).all()
    np.testing.assert_array_equal(listed.read_label(labelled), expected)
    bad_lines = {
        "3 0.1 0.1 0.2 0.2 0.3 0.1": r"f1.txt:1: class 3 is not one of the data set's 0..1",
        "0 0.5 0.5 0.2 0.2": r"f1.txt:1: a box \(class x y w h\), not a polygon: a detection label",
        "1 0.1 0.1 0.2 0.2 0.3": r"f1.txt:1: a polygon needs x y pairs, at least 3, found 5 numbers",
    }
    for line, message in bad_lines.items():
        (root / "labels" / "train" / "f1.txt").write_text(line + "\n")
        with pytest.raises(DataError, match=message):
            spec.read_label(labelled)
    mapped = _write_yaml(tmp_path / "m.yaml", {**yaml.safe_load(data.read_text()), "label_mapping": {0: 1}})
    with pytest.raises(DataError, match=r"label_mapping reads mask values; YOLO labels hold class ids"):
        load_dataset(mapped)


def test_a_roboflow_yolo_export_reads_as_it_is(tmp_path, monkeypatch):
    """Roboflow's "YOLOv8 segmentation" zip: data.yaml (no `path`, `nc`, `roboflow:`, splits as `../train/images`)
    beside train/ and valid/, each images/ + labels/. It was "unknown key 'nc'"; now nothing needs editing."""
    root = tmp_path / "potholes"
    for split in ("train", "valid"):
        for folder in ("images", "labels"):
            (root / split / folder).mkdir(parents=True)
        for i in range(2):
            cv2.imwrite(str(root / split / "images" / f"img{i}_jpg.rf.0a{i}.jpg"), np.full((40, 60, 3), 99, np.uint8))
            (root / split / "labels" / f"img{i}_jpg.rf.0a{i}.txt").write_text("1 0.5 0.5 1.0 0.5 1.0 1.0 0.5 1.0\n")
    content = {"train": "../train/images", "val": "../valid/images", "test": "../test/images", "nc": 2,
               "names": ["crack", "pothole"], "roboflow": {"workspace": "w", "project": "p", "version": 1}}  # fmt: skip
    (root / "data.yaml").write_text(yaml.safe_dump(content))
    monkeypatch.chdir(tmp_path)  # the YAML named from another folder: its own folder is the root
    spec = load_dataset("potholes/data.yaml")
    assert load_dataset("potholes") == spec  # the export's folder: its data.yaml
    assert (spec.root(), spec.names, spec.mask_format) == (root, ("background", "crack", "pothole"), "yolo")
    assert spec.name == "potholes"  # every YOLO export's YAML is data.yaml: named after its folder
    (root / "colab.yaml").write_text(yaml.safe_dump({**content, "path": "/content/datasets/potholes"}))
    with pytest.raises(
        DataError,
        match=rf"\(a YAML written on another machine\?\); its splits are beside it: pass --data-root {root}, or",
    ):
        load_dataset(root / "colab.yaml").samples("train")
    assert [s.stem for s in spec.samples("train")] == ["img0_jpg.rf.0a0", "img1_jpg.rf.0a1"]
    assert spec.split_on_disk("val") and not spec.split_on_disk("test")  # Roboflow left the test split out
    label = spec.read_label(spec.samples("val")[0])
    assert (label[20:, 30:] == 2).all() and (label[:19] == 0).all()
    for change, message in (({"nc": 3}, r"nc is 3 but `names` lists 2"),
                            ({"train": ["../train/images", "extra"]}, r"train: a list of folders; give one folder")):  # fmt: skip
        (root / "bad.yaml").write_text(yaml.safe_dump({**content, **change}))
        with pytest.raises(DataError, match=message):
            load_dataset(root / "bad.yaml")


def test_a_coco_segmentation_export_reads_as_it_is(tmp_path):
    """Roboflow's "COCO Segmentation" zip: train/ and valid/, each its images and `_annotations.coco.json` (polygons
    in pixels, run-length masks, and an umbrella category that labels nothing). No YAML needed but the line it prints."""
    from pycocotools import mask as coco_mask

    from seglite.data.check import check_dataset

    root = tmp_path / "roads"
    square = np.zeros((60, 80), np.uint8, order="F")
    square[40:50, 60:70] = 1
    for split in ("train", "valid"):
        (root / split).mkdir(parents=True)
        images, annotations = [], []
        for i in range(2):
            cv2.imwrite(str(root / split / f"f{i}_jpg.rf.{i}.jpg"), np.full((60, 80, 3), 50 * i, np.uint8))
            images.append({"id": i, "file_name": f"f{i}_jpg.rf.{i}.jpg", "height": 60, "width": 80})
            compressed = coco_mask.encode(square)
            annotations += [  # the pothole inside the road, listed first: drawn after the larger road
                {"id": 3 * i, "image_id": i, "category_id": 2, "segmentation": [[20, 10, 40, 10, 40, 30, 20, 30]]},
                {"id": 3 * i + 1, "image_id": i, "category_id": 1, "segmentation": [[0, 0, 80, 0, 80, 35, 0, 35]]},
                {"id": 3 * i + 2, "image_id": i, "category_id": 2, "iscrowd": 1,  # CVAT's uncompressed RLE; then compressed
                 "segmentation": {"size": [60, 80], "counts": [0, 4800]} if i else {**compressed, "counts": compressed["counts"].decode()}},
            ]  # fmt: skip
        categories = [{"id": 0, "name": "roads", "supercategory": "none"},
                      {"id": 1, "name": "road", "supercategory": "roads"},
                      {"id": 2, "name": "pothole", "supercategory": "roads"}]  # fmt: skip
        (root / split / "_annotations.coco.json").write_text(
            json.dumps({"images": images, "annotations": annotations, "categories": categories})
        )
    spec = load_dataset(root)  # the folder as it is: what it was read as is said, with the line to save
    assert re.fullmatch(
        rf"{root} is a COCO segmentation export; read as (.*) \(save that as .*data.yaml .*", spec.read_as
    )
    assert spec.own_file == root.resolve() and spec.to_record()["file"] == str(root.resolve())
    (root / "data.yaml").write_text(re.search(r"read as (\{.*\}) \(save", spec.read_as)[1])
    assert load_dataset(root / "data.yaml") == replace(spec, source=str(root / "data.yaml"), read_as="")
    assert (spec.name, spec.names, spec.mask_format) == ("roads", ("background", "road", "pothole"), "coco")
    first, second = spec.samples("train")
    expected = np.zeros((60, 80), np.uint8)
    expected[:35] = 1  # pixel x is inside where its centre is: the polygon (20,10)-(40,30) covers [20, 40) x [10, 30)
    expected[10:30, 20:40] = 2
    expected[40:50, 60:70] = 2
    np.testing.assert_array_equal(spec.read_label(first), expected)
    whole = np.where(expected == 0, 2, expected)  # a run-length pothole of the whole frame: largest, drawn first
    np.testing.assert_array_equal(spec.read_label(second), whole)
    assert [(r.split, r.labelled, r.problems) for r in check_dataset(spec)] == [("train", 2, []), ("val", 2, [])]
    # What goes wrong, named: a detection export, an image the file gives another size, a category not in names.
    boxes = json.loads((root / "train/_annotations.coco.json").read_text())
    boxes["annotations"] = [{"id": 9, "image_id": 0, "category_id": 1, "bbox": [0, 0, 5, 5], "segmentation": []}]
    boxes["images"][1]["width"] = 90
    (root / "train/_annotations.coco.json").write_text(json.dumps(boxes))
    with pytest.raises(DataError, match=r"annotation 9 of f0_jpg.rf.0.jpg has no segmentation \(a box only"):
        spec.read_label(spec.samples("train")[0])
    problems = check_dataset(spec, splits=("train",), read_labels=False)[0].problems
    assert problems == [f"{root / 'train/_annotations.coco.json'}: mask is 90x60, image 80x60"]
    relabelled = load_dataset(_write_yaml(tmp_path / "r.yaml", {"path": str(root), "val": "valid/_annotations.coco.json",
                                                                "names": ["road", "crack"]}))  # fmt: skip
    with pytest.raises(DataError, match=r"annotation 0 of f0_jpg.rf.0.jpg is of category 2 \(pothole\), not one of"):
        relabelled.read_label(relabelled.samples("val")[0])
    # COCO's own layout, as CVAT exports it: annotations/instances_default.json, the images under images/.
    cvat = tmp_path / "cvat"
    (cvat / "annotations").mkdir(parents=True)
    shutil.copytree(root / "valid", cvat / "images", ignore=shutil.ignore_patterns("*.json"))
    shutil.copy(root / "valid/_annotations.coco.json", cvat / "annotations/instances_default.json")
    line = r"with one subset \(val: 10% holds .*\); read as \{train: annotations/instances_default.json, val: 10%\} "
    assert re.search(line, load_dataset(cvat).read_as)
    # Label Studio's: result.json beside images/, whose names it gives as images/x.jpg.
    studio = tmp_path / "studio"
    shutil.copytree(cvat / "images", studio / "images")
    listed = json.loads((cvat / "annotations/instances_default.json").read_text())
    listed["images"] = [{**entry, "file_name": f"images/{entry['file_name']}"} for entry in listed["images"]]
    (studio / "result.json").write_text(json.dumps(listed))
    from_studio = load_dataset(studio)
    assert "read as {train: result.json, val: 10%} (save" in from_studio.read_as
    assert len(from_studio.samples("train")) == len(from_studio.samples("val")) == 1
    np.testing.assert_array_equal(from_studio.read_label(from_studio.samples("train")[0]), expected)
    spec = load_dataset(
        _write_yaml(tmp_path / "c.yaml", {"path": str(cvat), "train": "annotations/instances_default.json"})
    )
    np.testing.assert_array_equal(spec.read_label(spec.samples("train")[0]), expected)
    # One subset only: `val: 25%` holds a quarter of train out, the same images on every read, and train leaves them.
    for image in (cvat / "images").glob("*.jpg"):
        for copy in range(3):
            shutil.copy(image, image.with_name(f"{image.stem}_{copy}.jpg"))
    coco = json.loads((cvat / "annotations/instances_default.json").read_text())
    coco["images"] += [{**entry, "file_name": f"{Path(entry['file_name']).stem}_{copy}.jpg"}
                       for entry in coco["images"] for copy in range(3)]  # fmt: skip
    (cvat / "annotations/instances_default.json").write_text(json.dumps(coco))
    one = {"path": str(cvat), "train": "annotations/instances_default.json"}
    held = load_dataset(_write_yaml(tmp_path / "h.yaml", {**one, "val": "25%"}))
    train, val = {s.stem for s in held.samples("train")}, {s.stem for s in held.samples("val")}
    assert (len(train), len(val), train & val) == (6, 2, set()) and val == {s.stem for s in held.samples("val")}
    assert [(r.split, r.labelled, r.problems) for r in check_dataset(held)] == [("train", 6, []), ("val", 2, [])]
    for key, value in (("train", "10%"), ("val", "60%"), ("val", "ten%")):
        with pytest.raises(DataError, match=r"a share of train is written `val: 10%` \(more than 0, under 50\)"):
            load_dataset(_write_yaml(tmp_path / "b.yaml", {**one, "names": ["road", "pothole"], key: value}))


def test_colour_masks_map_through_the_palette_and_an_unknown_colour_is_named(tmp_path):
    root = _binary_set(tmp_path / "d")
    palette = [[0, 0, 0], [128, 64, 128]]
    for mask_path in (root / "masks").rglob("*.png"):
        index = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        rgb = np.asarray(palette, np.uint8)[index]
        cv2.imwrite(str(mask_path), rgb[:, :, ::-1])
    base = {
        "path": str(root),
        "train": "images/train",
        "masks_dir": {"images": "masks"},
        "names": ["other", "road"],
        "palette": palette,
        "mask_format": "color",
    }
    spec = load_dataset(_write_yaml(tmp_path / "c.yaml", base))
    label = spec.read_label(spec.samples("train")[0])
    assert label[-1, 0] == 1 and label[0, 0] == 0
    bad = root / "masks" / "train" / "f1.png"
    rgb = cv2.imread(str(bad))
    rgb[0, 0] = (120, 60, 130)  # BGR of RGB (130, 60, 120): nearest to road's (128, 64, 128)
    cv2.imwrite(str(bad), rgb)
    with pytest.raises(DataError, match=r"f1.png: colour \(130, 60, 120\) is in no class .*nearest: road"):
        spec.read_label(spec.samples("train")[1])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"mask_dir": {"images": "masks"}}, r"unknown key 'mask_dir'; did you mean 'masks_dir'\?"),
        ({"palette": [[0, 0, 0]]}, r"`names` has 2 classes but `palette` 1 colours"),
        ({"names": ["only"]}, r"at least 2 classes"),
        ({"label_mapping": {7: 4}}, r"label_mapping 7: 4: no such class"),
        ({"mask_format": "rgb"}, r"mask_format 'rgb'"),
    ],
)
def test_bad_data_set_files_are_one_line_errors(tmp_path, change, message):
    path = _binary_yaml(tmp_path)
    content = {**yaml.safe_load(path.read_text()), **change}
    with pytest.raises(DataError, match=message):
        load_dataset(_write_yaml(path, content))


def test_empty_split_and_size_mismatch_are_named(tmp_path):
    path = _binary_yaml(tmp_path)
    root = tmp_path / "drive"
    (root / "images" / "empty").mkdir()
    spec = load_dataset(_write_yaml(path, {**yaml.safe_load(path.read_text()), "test": "images/empty"}))
    with pytest.raises(DataError, match=r"split 'test': no images in"):
        spec.samples("test")
    cv2.imwrite(str(root / "masks" / "val" / "f2.png"), np.zeros((10, 10), np.uint8))
    result = cli("data", "check", "--data", str(path))
    assert result.returncode == 2 and "f2.png: mask is 10x10, image 64x48" in result.stderr


def test_a_test_split_not_downloaded_is_no_problem_but_a_missing_val_split_is(tmp_path):
    path = _binary_yaml(tmp_path)
    content = yaml.safe_load(path.read_text())
    result = cli("data", "check", "--data", str(_write_yaml(path, content | {"test": "images/test"})))
    assert result.returncode == 0, result.stderr
    rows = [line.split("│")[1].strip() for line in result.stdout.splitlines() if line.startswith("│")]
    assert rows == ["train", "val"] and "dataset OK" in result.stdout
    result = cli("data", "check", "--data", str(_write_yaml(path, content | {"val": "images/vall"})))
    assert result.returncode == 2 and "split 'val': " in result.stderr and "images/vall is neither" in result.stderr


def test_a_download_not_unpacked_or_a_root_one_folder_up_is_named_with_the_fix(tmp_path):
    import shutil

    from seglite.data.synth import write_dataset

    nested = write_dataset(tmp_path / "dl" / "cityscapes", train=1, val=1, size=(64, 32), seed=0)
    result = cli("data", "check", "--data-root", str(tmp_path / "dl"))
    assert result.returncode == 2
    assert f"found {nested}/leftImg8bit/train: pass --data-root {nested}" in result.stderr
    with pytest.raises(DataError, match=f"found {nested}/leftImg8bit/val: pass --data-root {nested}$"):
        load_dataset("cityscapes", tmp_path / "dl").samples("val")

    packed = tmp_path / "packed"
    packed.mkdir()
    for name in ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip", "README"):
        (packed / name).touch()
    result = cli("data", "check", packed.as_posix())
    unzip = "unzip -q gtFine_trainvaltest.zip && unzip -q leftImg8bit_trainvaltest.zip"
    assert result.returncode == 2 and result.stderr.endswith(f"are still packed: cd {packed} && {unzip}\n")
    (packed / "leftImg8bit_trainvaltest.zip").unlink()
    shutil.copytree(nested / "leftImg8bit", packed / "leftImg8bit")  # the images unpacked, the labels not yet
    with pytest.raises(DataError, match="no .*labels for split 'val'; gtFine_trainvaltest.zip is still packed"):
        load_dataset("cityscapes", packed).samples("val")

    path = _binary_yaml(tmp_path)  # own data: the data set's folder is one further down than --data-root says
    result = cli("data", "check", "--data", str(path), "--data-root", str(tmp_path))
    assert f"found {tmp_path}/drive/images/train: pass --data-root {tmp_path}/drive" in result.stderr


def test_training_names_the_split_a_data_set_does_not_declare(tmp_path):
    path = _binary_yaml(tmp_path)
    content = {k: v for k, v in yaml.safe_load(path.read_text()).items() if k != "val"}
    result = cli(
        "train", "configs/synth_espnetv2_s0.5.yaml", "--data", str(_write_yaml(path, content)),
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "split 'val' is missing: its YAML has no `val:` key" in result.stderr


def test_masks_beside_their_images_are_paired_and_not_taken_for_images(tmp_path):
    """Roboflow's semantic-mask export: `train/x.jpg` beside `train/x_mask.png`, no masks folder."""
    root = _binary_set(tmp_path / "d")
    for mask in (root / "masks").rglob("*.png"):
        mask.rename(root / "images" / mask.parent.name / f"{mask.stem}_mask.png")
    content = {
        "path": str(root / "images"),
        "train": "train",
        "val": "val",
        "mask_suffix": {"image": ".jpg", "mask": "_mask.png"},
        "names": ["background", "road"],
    }
    spec = load_dataset(_write_yaml(tmp_path / "d.yaml", content))
    samples = spec.samples("train")
    assert [(s.image.name, s.label.name) for s in samples] == [(f"f{i}.jpg", f"f{i}_mask.png") for i in range(4)]
    assert spec.read_label(samples[0])[-1, 0] == 1
    result = cli("data", "check", "--data", str(tmp_path / "d.yaml"))
    assert result.returncode == 0, result.stderr
    without_rule = {k: v for k, v in content.items() if k != "mask_suffix"}
    with pytest.raises(
        DataError, match=r"needs `masks_dir` .* or `mask_suffix` \(e.g. \{image: .jpg, mask: _mask.png\}\)"
    ):
        load_dataset(_write_yaml(tmp_path / "e.yaml", without_rule)).samples("train")


def test_a_mask_rule_that_leads_back_to_the_image_is_named(tmp_path):
    root = tmp_path / "d"
    (root / "frames").mkdir(parents=True)
    cv2.imwrite(str(root / "frames" / "a.png"), np.zeros((48, 64, 3), np.uint8))
    content = {"path": str(root), "train": "frames", "masks_dir": {"images": "masks"}, "names": ["a", "b"]}
    with pytest.raises(DataError, match=r"a.png: its mask path is the image itself; check `masks_dir`"):
        load_dataset(_write_yaml(tmp_path / "d.yaml", content)).samples("train")


def test_unknown_data_set_name_suggests_the_built_in():
    with pytest.raises(DataError, match=r"did you mean 'camvid'"):
        load_dataset("camvidd")


def test_a_data_set_built_on_a_base_is_its_own_and_labelid_needs_cityscapes_classes(tmp_path):
    from seglite.inference.outputs import check_formats

    relabelled = load_dataset(_write_yaml(tmp_path / "potholes.yaml", {"base": "camvid", "names": ["road", "hole"]}))
    assert (relabelled.name, relabelled.names, relabelled.path) == (
        "potholes",
        ("road", "hole"),
        tmp_path / "data/camvid",
    )
    assert load_dataset(_write_yaml(tmp_path / "c.yaml", {"base": "camvid", "name": "camvid"})).name == "camvid"
    city = load_dataset(_write_yaml(tmp_path / "my_city.yaml", {"base": "cityscapes", "path": str(tmp_path)}))
    check_formats(("trainid", "labelid"), city.names, city.name)  # Cityscapes' classes under another name
    with pytest.raises(InputError, match=r"labelid is Cityscapes' submission format; these weights predict potholes"):
        check_formats(("labelid",), relabelled.names, relabelled.name)


def test_images_beside_their_masks_read_without_a_yaml_their_classes_from_the_masks(tmp_path):
    spec = load_dataset(_binary_set(tmp_path / "split"))  # images/{train,val} beside masks/{train,val}, 0/1
    assert spec.read_as.startswith(f"{tmp_path / 'split'} is images with their masks beside them")
    assert (spec.splits, spec.masks_dir, spec.names) == (
        {"train": "images/train", "val": "images/val"}, {"images": "masks"}, ("background", "foreground"))  # fmt: skip
    assert spec.read_label(spec.samples("val")[0])[-1].tolist() == [1] * 64
    # Split first (train/images beside train/masks), values 0..3 and 255 (ignored): four classes.
    first = tmp_path / "first"
    for split, count in (("train", 3), ("valid", 1)):
        (first / split / "images").mkdir(parents=True)
        (first / split / "masks").mkdir()
        for i in range(count):
            cv2.imwrite(str(first / split / "images" / f"{i}.jpg"), np.full((24, 32, 3), 40 * i, np.uint8))
            mask = np.full((24, 32), i if split == "train" else 3, np.uint8)
            mask[0] = 255
            cv2.imwrite(str(first / split / "masks" / f"{i}.png"), mask)
    spec = load_dataset(first)
    assert (spec.splits, spec.names) == (
        {"train": "train/images", "val": "valid/images"},
        tuple(f"class {i}" for i in range(4)),
    )
    assert np.unique(spec.read_label(spec.samples("val")[0])).tolist() == [3, 255]
    # One folder of each, 0/255 masks: background and foreground, a tenth held out to validate on.
    whole = tmp_path / "whole"
    (whole / "images").mkdir(parents=True)
    (whole / "annotations").mkdir()
    for i in range(10):
        cv2.imwrite(str(whole / "images" / f"{i}.png"), np.full((24, 32, 3), 9 * i, np.uint8))
        cv2.imwrite(str(whole / "annotations" / f"{i}.png"), np.eye(24, 32, dtype=np.uint8) * 255)
    spec = load_dataset(whole)
    assert spec.splits == {"train": "images", "val": "10%"} and spec.label_mapping == {0: 0, 255: 1}
    assert "with one subset (val: 10% holds a tenth of it out)" in spec.read_as
    assert len(spec.samples("train")) == 9 and spec.read_label(spec.samples("val")[0]).sum() == 24
    # Masks named after their image with an ending (x.jpg -> x_mask.png); masks saved as JPEG are named as the fault.
    ending = tmp_path / "ending"
    (ending / "images").mkdir(parents=True)
    (ending / "labels").mkdir()
    for i in range(3):
        cv2.imwrite(str(ending / "images" / f"{i}.jpg"), np.full((24, 32, 3), 9 * i, np.uint8))
        cv2.imwrite(str(ending / "labels" / f"{i}_mask.png"), np.eye(24, 32, dtype=np.uint8) * (i + 1))
    spec = load_dataset(ending)
    assert spec.mask_suffix == (".jpg", "_mask.png") and spec.masks_dir == {"images": "labels"}
    assert spec.names == tuple(f"class {i}" for i in range(4)) and spec.read_label(spec.samples("val")[0]).sum() > 0
    for i in range(3):
        (ending / "labels" / f"{i}_mask.png").rename(ending / "labels" / f"{i}.jpg")
    with pytest.raises(
        DataError, match=r"labels: the masks are JPEGs, and JPEG blurs a mask's values .*: save them as PNG"
    ):
        load_dataset(ending)
    # Masks drawn in colours name no classes: the folder is described in a YAML, as before.
    for i in range(10):
        cv2.imwrite(str(whole / "annotations" / f"{i}.png"), np.full((24, 32, 3), (0, 0, 200), np.uint8))
    whole_colours = tmp_path / "colours"
    shutil.copytree(whole, whole_colours)  # (another folder: what was surveyed is remembered per file list)
    with pytest.raises(DataError, match=r"is a folder, not a data set; describe it in a YAML"):
        load_dataset(whole_colours)


def test_own_frames_much_larger_than_the_picked_recipes_crops_are_shown_whole(tmp_path):
    """A phone's photos: the recipe picked without one is fitted to show whole scenes, said in a line; a chosen
    size is kept, and so are frames the recipe fits."""
    large = _binary_set(tmp_path / "large", count=2, size=(1600, 1200))
    fitted = _seglite("train", "--data", str(large), "--print-config")
    assert fitted.returncode == 0, fitted.stderr
    config = yaml.safe_load(fitted.stdout)["data"]
    assert (config["val_size"], config["scale_range"]) == ([768, 576], [0.36, 0.72])
    assert "frames: 1600x1200, so large that the recipe's 384x288 crops would see slivers of them" in fitted.stderr
    kept = _seglite("train", "--data", str(large), "--print-config", "--set", "data.val_size=null")
    assert yaml.safe_load(kept.stdout)["data"]["val_size"] is None and "frames:" not in kept.stderr
    small = _seglite("train", "--data", str(_binary_set(tmp_path / "small", count=2)), "--print-config")
    assert yaml.safe_load(small.stdout)["data"]["scale_range"] == [0.75, 1.5] and "frames:" not in small.stderr


def test_a_folder_given_as_data_names_what_reads_it(tmp_path):
    own = _binary_set(tmp_path / "own")
    shutil.rmtree(own / "masks")  # images without masks
    with pytest.raises(
        DataError, match=rf"--data '{own}': is a folder, not a data set; describe it in a YAML \(path: "
    ):
        load_dataset(own)
    (tmp_path / "own.yaml").write_text(f"path: {own.name}\ntrain: images/train\nnames: [a, b]\n")
    with pytest.raises(
        DataError, match=rf"is a folder, not a data set; pass its data set YAML, e.g. --data {tmp_path}"
    ):
        load_dataset(own)
    with pytest.raises(DataError, match=r"no such built-in data set or YAML file; did you mean '.*own.yaml'"):
        load_dataset(tmp_path / "ow")  # a typo
    # A path, however it is spelled, is never a built-in's name: the YAML's relative `path` is its folder's.
    with pytest.raises(DataError, match=r"did you mean '.*own.yaml'"):
        load_dataset(tmp_path / "own.yml")
    assert load_dataset(tmp_path / "own.yaml").root() == own
    camvid = tmp_path / "camvid"
    for folder in ("train", "trainannot", "val", "valannot"):
        (camvid / folder).mkdir(parents=True)
    with pytest.raises(DataError, match=rf"laid out as camvid: pass --data camvid --data-root {camvid}$"):
        load_dataset(str(camvid))
    # Roboflow's "Semantic Segmentation Masks" export: the line to save as its data.yaml, which then reads it.
    export = _roboflow_semantic_export(tmp_path / "roboflow", "pot hole")
    spec = load_dataset(export)
    assert spec.read_as.startswith(f"{export} is a Roboflow semantic segmentation export; read as {{train: train, ")
    assert (
        spec.name == "roboflow"
        and spec.names == ("background", "pot hole")
        and spec.splits == {"train": "train", "val": "valid"}
    )
    assert spec.read_label(spec.samples("val")[0]).sum() == 30
    # Pascal VOC's layout, as CVAT exports it (RGB masks, labelmap.txt, one subset listed by stem), and VOC's own.
    for kind in ("cvat", "voc"):
        voc = tmp_path / kind
        for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
            (voc / folder).mkdir(parents=True)
        mask = np.zeros((30, 40), np.uint8)
        mask[10:20, 5:25] = 1
        for stem in ("frame_000000", "frame_000001"):
            cv2.imwrite(str(voc / "JPEGImages" / f"{stem}.jpg"), np.full((30, 40, 3), 60, np.uint8))
            if kind == "cvat":
                cv2.imwrite(
                    str(voc / "SegmentationClass" / f"{stem}.png"),
                    np.asarray([[0, 0, 0], [83, 50, 250]], np.uint8)[mask],
                )
            else:  # a palette PNG with VOC's 255 border, read as its indices
                indexed = Image.fromarray(np.where(np.eye(30, 40) > 0, 255, mask).astype(np.uint8), "P")
                indexed.putpalette([0, 0, 0, 128, 0, 0] + [0, 0, 0] * 253 + [224, 224, 192])  # VOC's colours
                indexed.save(voc / "SegmentationClass" / f"{stem}.png")
        if kind == "cvat":
            (voc / "ImageSets/Segmentation/default.txt").write_text("frame_000000\nframe_000001\n")
            (voc / "labelmap.txt").write_text("# label:color_rgb:parts:actions\nbackground:0,0,0::\ncar:250,50,83::\n")
        else:
            (voc / "ImageSets/Segmentation/train.txt").write_text("frame_000000\n")
            (voc / "ImageSets/Segmentation/val.txt").write_text("frame_000001\n")
        spec = load_dataset(voc)
        assert re.match(r".* is laid out as Pascal VOC .*; read as \{", spec.read_as)
        assert ("with one subset (val: 10% holds a tenth of it out)" in spec.read_as) == (kind == "cvat")
        label = spec.read_label(spec.samples("train")[0])
        assert spec.names[:2] == ("background", "car" if kind == "cvat" else "aeroplane") and len(spec.names) == (
            2 if kind == "cvat" else 21
        )
        assert label[10:20, 5:25].min() == 1 and (label == 1).sum() == 200 - (kind == "voc") * 10


# ---- any class count -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("classes", [2, 11])
@pytest.mark.parametrize("name", seglite.list_models())
def test_every_model_trains_and_exports_with_few_classes(name, classes, tmp_path):
    torch.manual_seed(0)
    model = seglite.create_model(name, num_classes=classes)
    x = torch.randn(2, 3, 64, 96)
    out = model(x)
    assert out.shape == (2, classes, 64, 96)
    out.logsumexp(1).mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    if classes == 2:
        model.eval()
        export_onnx(model, (96, 64), tmp_path / "m.onnx")
        ort = ort_session(tmp_path / "m.onnx").run(None, {"image": x[:1].numpy()})[0]
        with torch.no_grad():
            assert np.abs(ort - model(x[:1]).numpy()).max() < 1e-3


def test_espnet_small_decoder_keeps_one_channel_per_branch():
    from seglite.models.espnet import ESPModule

    for c_out, rates in ((2, 2), (3, 3), (4, 4), (5, 5), (11, 5)):
        module = ESPModule(2 * c_out, c_out, residual=False)
        present = [r for r in (1, 2, 4, 8, 16) if getattr(module, f"d{r}") is not None]
        assert len(present) == rates
        assert module(torch.randn(1, 2 * c_out, 16, 16)).shape == (1, c_out, 16, 16)


# ---- fine-tuning -----------------------------------------------------------------------------------------------
def test_init_copies_linked_class_rows_and_reinitialises_the_rest():
    from seglite.training.finetune import init_from
    from seglite.zoo.checkpoint import load_weights

    source = load_weights(require_realdata("weights", "espnetv2", "espnetv2_s_1.0_city_1024x512.pth"))
    kwargs = source.model.finetune_kwargs()
    torch.manual_seed(0)
    target = seglite.create_model("espnetv2_s1.0", num_classes=11, **kwargs)
    fresh = {k: v.clone() for k, v in target.state_dict().items()}
    class_map = {"Car": ["car", "truck"], "Pavement": ["sidewalk"]}
    report = init_from(
        target, "espnetv2_s1.0", kwargs, tuple(CAMVID_NAMES), source.model, source.classes, class_map, "s1.0"
    )
    assert not report.reinitialised and len(report.class_rows) == 2
    name = "bu_dec_l4.merge_layer.3.weight"  # the last 1x1 conv: one row per class
    src, dst = source.model.state_dict()[name], target.state_dict()[name]
    cs = list(CLASS_NAMES)
    assert torch.equal(dst[CAMVID_NAMES.index("Road")], src[cs.index("road")])
    assert torch.equal(dst[CAMVID_NAMES.index("Sky")], src[cs.index("sky")])
    assert torch.allclose(dst[CAMVID_NAMES.index("Car")], (src[cs.index("car")] + src[cs.index("truck")]) / 2)
    assert torch.equal(dst[CAMVID_NAMES.index("Pavement")], src[cs.index("sidewalk")])
    assert report.unlinked == ["Tree", "SignSymbol", "Pedestrian", "Bicyclist"]
    assert "new classes (fresh rows; `class_map: {target: source}` links one): Tree, SignSymbol" in report.lines()[2]
    assert "2 class-sized tensors with the linked classes' rows copied" in report.lines()[0]
    two = seglite.create_model("espnetv2_s1.0", num_classes=2, **kwargs)
    unrelated = init_from(two, "espnetv2_s1.0", kwargs, ("crack", "pothole"), source.model, source.classes, {}, "s")
    assert "2 class-sized tensors started fresh (no class linked)" in unrelated.lines()[0]  # it said "rows copied"
    for unlinked in ("Tree", "SignSymbol", "Pedestrian", "Bicyclist"):  # no equal name, not in the map
        assert torch.equal(dst[CAMVID_NAMES.index(unlinked)], fresh[name][CAMVID_NAMES.index(unlinked)])
    encoder = "base_net.level4.0.proj_1x1.conv.weight"
    assert torch.equal(target.state_dict()[encoder], source.model.state_dict()[encoder])


def test_init_carries_rows_through_espnet_class_wide_decoder():
    from seglite.training.finetune import init_from
    from seglite.zoo.checkpoint import load_weights

    source = load_weights(require_realdata("weights", "espnet_v1", "decoder_espnet_p_2_q_8.pth"))
    target = seglite.create_model("espnetv1", num_classes=3)
    report = init_from(target, "espnetv1", {}, ("road", "car", "thing"), source.model, source.classes, None, "espnet")
    name = "up_l3.0.weight"  # ConvTranspose2d(c, c): classes on both dimensions
    src, dst = source.model.state_dict()[name], target.state_dict()[name]
    road, car = 0, 13
    assert torch.equal(dst[0, 0], src[road, road]) and torch.equal(dst[1, 0], src[car, road])
    assert name in report.class_rows and any("combine_l2_l3" in n for n, _ in report.reinitialised)
    assert target.encoder.level1.conv.weight.equal(source.model.encoder.level1.conv.weight)


def test_espnet_finetune_keeps_the_decoder_and_starts_from_the_linked_classes_logits():
    """At the init weights' decoder width the whole network loads; only the last transposed conv maps its 20
    channels to the new classes, so before training each new class's logit is the mean of its linked ones."""
    from seglite.training.finetune import init_from
    from seglite.zoo.checkpoint import load_weights

    source = load_weights(require_realdata("weights", "espnet_v1", "decoder_espnet_p_2_q_8.pth"))
    kwargs = {**source.model_kwargs, **source.model.finetune_kwargs()}
    assert kwargs["decoder_width"] == 20
    target = seglite.create_model("espnetv1", num_classes=3, **kwargs)
    class_map = {"car": ["car", "truck"]}
    names = ("road", "car", "thing")
    report = init_from(target, "espnetv1", kwargs, names, source.model, source.classes, class_map, "espnet")
    assert report.class_rows == ["classifier.weight"] and not report.reinitialised
    image = torch.randn(1, 3, 64, 128)
    with torch.no_grad():
        before = source.model.eval()(image)
        after = target.eval()(image)
    cs = list(source.classes)
    torch.testing.assert_close(after[:, 0], before[:, cs.index("road")], rtol=1e-4, atol=1e-4)
    linked = (before[:, cs.index("car")] + before[:, cs.index("truck")]) / 2
    torch.testing.assert_close(after[:, 1], linked, rtol=1e-4, atol=1e-4)


def test_class_map_naming_a_missing_class_is_an_error():
    with pytest.raises(DataError, match=r"source class 'vegetaion' does not exist; did you mean 'vegetation'"):
        link_classes(("Tree",), CLASS_NAMES, {"Tree": ["vegetaion"]})
    with pytest.raises(DataError, match=r"target class 'Tre' does not exist"):
        link_classes(("Tree",), CLASS_NAMES, {"Tre": ["vegetation"]})


def test_a_recipes_class_map_for_another_data_set_is_named_before_the_data_are_read(tmp_path, monkeypatch):
    """The CamVid recipes link Cityscapes classes to CamVid's: on a user's own classes, the fix is named."""
    from seglite.zoo.checkpoint import LoadedWeights, save_checkpoint
    from seglite.zoo.preprocess import IMAGENET

    path = _binary_yaml(tmp_path)
    weights = tmp_path / "city.pt"
    save_checkpoint(
        weights, LoadedWeights(seglite.create_model("espnetv2_s0.5"), "espnetv2_s0.5", CLASS_NAMES, IMAGENET, "x")
    )
    recipe = _write_yaml(tmp_path / "r.yaml", {"base": str(Path("configs/synth_espnetv2_s0.5.yaml").resolve()),
                                               "class_map": {"Building": ["building", "wall"]}})  # fmt: skip
    read = []
    monkeypatch.setattr("seglite.data.check._check_sample", lambda *args: read.append(args))
    args = ("train", str(recipe), "--data", str(path), "--init", str(weights), "--out", str(tmp_path / "run"))
    result = cli(*args)
    assert result.returncode == 2 and not read, result.stderr
    assert "target class 'Building' does not exist" in result.stderr
    assert "write one for its classes, or --set class_map={} to link classes of the same name only" in result.stderr
    typo = cli(*args, "--set", "class_map={road: roadd}")  # a source class the init weights lack: no data set hint
    assert typo.returncode == 2 and not read
    assert typo.stderr.strip().endswith("source class 'roadd' does not exist; did you mean 'road'? (source classes: "
                                        + ", ".join(CLASS_NAMES) + ")")  # fmt: skip
    monkeypatch.undo()
    result = cli(*args, "--set", "class_map={}", "--set", "schedule.iters=1", "--set", "fused_norm=false")
    assert result.returncode == 0, result.stderr
    assert "linked classes: road <- road" in result.stdout


def test_a_run_started_with_relative_paths_resumes_from_another_folder(tmp_path, monkeypatch):
    from seglite.zoo.checkpoint import LoadedWeights, read_checkpoint_file, save_checkpoint
    from seglite.zoo.preprocess import IMAGENET

    _binary_yaml(tmp_path)
    net = seglite.create_model("espnetv2_s0.5", num_classes=2)
    save_checkpoint(tmp_path / "w.pt", LoadedWeights(net, "espnetv2_s0.5", ("background", "road"), IMAGENET, "w"))
    recipe = str(Path("configs/synth_espnetv2_s0.5.yaml").resolve())
    fast = ("--set", "fused_norm=false", "--set", "amp=none", "--set", "data.val_limit=1")
    monkeypatch.chdir(tmp_path)
    first = cli(
        "train", recipe, "--data", "drive.yaml", "--init", "w.pt", "--out", "run", "--set", "schedule.iters=1", *fast
    )
    assert first.returncode == 0, first.stderr
    saved = read_checkpoint_file(tmp_path / "run" / "last.pt")["config"]
    assert saved["data"]["dataset"] == str(tmp_path / "drive.yaml") and saved["init"] == str(tmp_path / "w.pt")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    again = cli("train", "--out", "../run", "--resume", "--data", "../drive.yaml", "--set", "schedule.iters=2")
    assert again.returncode == 0, again.stderr
    assert "finished at iteration 2" in again.stdout


def test_init_weights_of_another_architecture_are_refused(tmp_path):
    path = _binary_yaml(tmp_path)
    weights = require_realdata("weights", "espnetv2", "espnetv2_s_0.5_city_512x256.pth")
    result = cli(
        "train", "configs/synth_espnetv2_s0.5.yaml", "--data", str(path), "--init", str(weights),
        "--set", "model=espnetv2_s1.0", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "holds a espnetv2_s0.5 network, the config trains espnetv2_s1.0" in result.stderr


def _camvid_subset(tmp_path: Path, train: int, val: int) -> Path:
    """A data set YAML over the first CamVid frames, through list files (as the SegNet lists are written)."""
    camvid = require_realdata("camvid")
    for split, count in (("train", train), ("val", val)):
        lines = (camvid / f"{split}.txt").read_text().splitlines()[:count]
        (tmp_path / f"{split}.txt").write_text("\n".join(lines) + "\n")
    content = yaml.safe_load((Path(seglite.__file__).parent / "data" / "builtin" / "camvid.yaml").read_text())
    content.update(
        {"path": str(camvid), "train": str(tmp_path / "train.txt"), "val": str(tmp_path / "val.txt")},
        strip_prefix="/SegNet/CamVid/",
    )
    content.pop("test")
    return _write_yaml(tmp_path / "camvid_subset.yaml", content)


def _initial_state(weights: Path) -> dict:
    """The weights the trainer starts from: seed 0, then the init (the trainer's own order)."""
    from seglite.training.finetune import init_from
    from seglite.zoo.checkpoint import load_weights

    source = load_weights(weights)
    torch.manual_seed(0)
    model = seglite.create_model("espnetv2_s0.5", num_classes=11, **source.model.finetune_kwargs())
    class_map = {"Tree": ["vegetation"], "Pavement": ["sidewalk"]}
    init_from(
        model, "espnetv2_s0.5", {"decoder_proj": 10}, tuple(CAMVID_NAMES), source.model, source.classes, class_map, ""
    )
    return model.state_dict()


def _loss_on_frames(data: Path, state: dict) -> float:
    """Cross-entropy of a network on the data set's training frames at 240x180, no augmentation."""
    from seglite.data.dataset import SegmentationDataset
    from seglite.zoo.preprocess import IMAGENET

    model = seglite.create_model("espnetv2_s0.5", num_classes=11, decoder_proj=10)
    model.load_state_dict(state)
    model.eval()
    dataset = SegmentationDataset(load_dataset(data), "train", IMAGENET)
    total = 0.0
    with torch.no_grad():
        for image, label in dataset:
            image = torch.nn.functional.interpolate(image[None], (180, 240), mode="bilinear")
            label = torch.nn.functional.interpolate(label[None, None].float(), (180, 240), mode="nearest")[0].long()
            total += float(torch.nn.functional.cross_entropy(model(image), label, ignore_index=255))
    return total / len(dataset)


@pytest.mark.slow  # CI's second step (-m slow)
def test_short_finetune_on_camvid_lowers_the_loss_and_predicts_camvid_classes(tmp_path):
    data = _camvid_subset(tmp_path, train=8, val=2)
    weights = require_realdata("weights", "espnetv2", "espnetv2_s_0.5_city_512x256.pth")
    out = tmp_path / "run"
    result = _seglite(
        "train", "configs/synth_espnetv2_s0.5.yaml", "--data", str(data), "--init", str(weights), "--out", str(out),
        "--set", "schedule.iters=12", "--set", "batch_size=4", "--set", "data.crop=[192,144]",
        "--set", "data.val_size=null", "--set", "data.workers=0", "--set", "val_every=12",
        "--set", "optim.lr=0.001", "--set", "class_map={Tree: vegetation, Pavement: sidewalk}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        "linked classes: Sky <- sky, Building <- building, Pole <- pole, Road <- road, Pavement <- sidewalk, Tree <- vegetation"
        in result.stdout
    )
    assert (
        "new classes (fresh rows; `class_map: {target: source}` links one): SignSymbol, Pedestrian, Bicyclist\n"
        in result.stdout
    )
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert _loss_on_frames(data, ckpt["state_dict"]) < _loss_on_frames(data, _initial_state(weights))
    ckpt = torch.load(out / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["classes"] == CAMVID_NAMES and ckpt["num_classes"] == 11
    assert ckpt["dataset"]["name"] == "camvid" and ckpt["dataset"]["palette"][3] == [128, 64, 128]
    assert ckpt["preprocess"]["color_order"] == "rgb" and ckpt["model_kwargs"] == {"decoder_proj": 10}
    frame = REALDATA / "camvid" / "val" / sorted(os.listdir(REALDATA / "camvid" / "val"))[0]
    predicted = _seglite("predict", str(frame), "--weights", str(out / "best.pt"), "--format", "color,trainid",
                         "--out", str(tmp_path / "pred"), "--device", "cpu", "--backend", "torch")  # fmt: skip
    assert predicted.returncode == 0, predicted.stderr
    ids = cv2.imread(str(tmp_path / "pred" / f"{frame.stem}_trainid.png"), cv2.IMREAD_UNCHANGED)
    colours = cv2.imread(str(tmp_path / "pred" / f"{frame.stem}_color.png"))[:, :, ::-1]
    assert ids.shape == (360, 480) and set(np.unique(ids)) <= set(range(11))
    palette = np.asarray(ckpt["dataset"]["palette"], np.uint8)
    assert (colours == palette[ids]).all()
    evaluated = _seglite("eval", "--weights", str(out / "best.pt"), "--data-root", str(REALDATA / "camvid"),
                         "--limit", "2", "--device", "cpu", "--backend", "torch", "--json")  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr  # --data defaults to the data set the weights were trained on
    assert json.loads(evaluated.stdout)["dataset"] == "camvid" and json.loads(evaluated.stdout)["num_images"] == 2
    refused = _seglite("predict", str(frame), "--weights", str(out / "best.pt"), "--format", "labelid",
                       "--out", str(tmp_path / "pred2"), "--device", "cpu", "--backend", "torch")  # fmt: skip
    assert refused.returncode == 2 and "labelid is Cityscapes' submission format" in refused.stderr


def test_eval_defaults_to_the_data_set_and_root_the_weights_were_trained_on(tmp_path):
    from seglite.zoo.checkpoint import atomic_torch_save, checkpoint_dict
    from seglite.zoo.preprocess import IMAGENET

    def trained_on(spec, path: Path) -> Path:
        model = seglite.create_model("espnetv2_s0.5", num_classes=spec.num_classes)
        record = spec.to_record()
        atomic_torch_save(checkpoint_dict("espnetv2_s0.5", model, spec.names, IMAGENET, dataset=record), path)
        return path

    own = load_dataset(_binary_yaml(tmp_path, names=["other", "road"]))
    run = tmp_path / "run"
    run.mkdir()
    trained_on(own, run / "best.pt")
    args = ("--device", "cpu", "--backend", "torch", "--json")
    result = _seglite("eval", "--weights", str(run), *args, cwd=tmp_path / "run")  # another folder than the YAML's
    assert result.returncode == 0, result.stderr
    assert f"data: {tmp_path / 'drive.yaml'} (what {run} was trained on; --data for another)" in result.stderr
    assert (json.loads(result.stdout)["dataset"], json.loads(result.stdout)["num_images"]) == ("drive", 4)
    # A built-in data set trained from --data-root: evaluated there, unless told otherwise.
    camvid = tmp_path / "camvid"
    for split in ("train", "val"):
        (camvid / f"{split}annot").mkdir(parents=True)
        (camvid / split).mkdir()
    for i in range(2):
        cv2.imwrite(str(camvid / "val" / f"f{i}.png"), np.full((48, 64, 3), 80 * i, np.uint8))
        cv2.imwrite(str(camvid / "valannot" / f"f{i}.png"), np.full((48, 64), 3 * i, np.uint8))
    weights = trained_on(load_dataset("camvid", camvid), tmp_path / "camvid.pt")
    result = _seglite("eval", "--weights", str(weights), *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"data root: {camvid} (where it was trained; --data-root for another)" in result.stderr
    assert (json.loads(result.stdout)["dataset"], json.loads(result.stdout)["num_images"]) == ("camvid", 2)
    # export checks its artifact on those frames too, where they are here, else on generated ones (None).
    from seglite.cli.common import _dataset_of

    assert _dataset_of(str(run), None, None, optional=True).name == "drive"
    assert _dataset_of(None, None, None, optional=True) is None
    # An export folder read without a YAML is recorded as that folder, and found again there.
    export = _roboflow_semantic_export(tmp_path / "roboflow", "crack")
    from_export = trained_on(load_dataset(export), tmp_path / "export.pt")
    assert _dataset_of(str(from_export), None, None).own_file == export.resolve()
    # report without --data: the data set all its weights were trained on; none where they differ or one records none.
    from seglite.cli.common import _shared_trained_dataset

    assert _shared_trained_dataset([str(run), None, str(run / "best.pt")]).spec.name == "drive"
    assert _shared_trained_dataset([str(run), str(weights)]) is None
    assert _shared_trained_dataset([str(run), "espnetv2_s0.5_cityscapes_512x256"]) is None
    # The Python API reads the same record: evaluate(seg) without a data set.
    quiet = seglite.EvalOptions(progress=False)
    found = seglite.evaluate(seglite.Segmenter(weights=str(run), device="cpu", backend="torch"), options=quiet)
    assert (found.extra["dataset"], found.num_images) == ("drive", 4)
    found = seglite.evaluate(seglite.Segmenter(weights=str(weights), device="cpu", backend="torch"), options=quiet)
    assert (found.extra["dataset"], found.extra["data_root"], found.num_images) == ("camvid", str(camvid), 2)
    (tmp_path / "drive.yaml").unlink()
    assert _dataset_of(str(run), None, None, optional=True) is None
    with pytest.raises(DataError, match=r"was trained on '.*drive.yaml', which is not on this machine: name the data"):
        seglite.evaluate(seglite.Segmenter(weights=str(run), device="cpu", backend="torch"), options=quiet)


# ---- cross-data-set evaluation ---------------------------------------------------------------------------------
def test_class_map_evaluation_equals_a_hand_computed_confusion(tmp_path):
    predicted = ("road", "car", "truck", "wall")
    spec = load_dataset(_binary_yaml(tmp_path, names=["Road", "Car"]))
    lookup, described = prediction_lookup(predicted, spec, {"Car": ["car", "truck"]})
    assert described == "Road <- road, Car <- car+truck"
    prediction = torch.tensor([0, 1, 2, 3, 3, 0, 2, 1])  # road car truck wall wall road truck car
    target = torch.tensor([0, 1, 1, 0, 1, 1, 255, 0])
    matrix = ConfusionMatrix(2)
    matrix.update(lookup[prediction], target)
    # Road: TP 1 (px0), FN 2 (px3 wall=miss, px7 car), FP 1 (px5) -> 1/4. Car: TP 2 (px1, px2), FN 2 (px4 wall,
    # px5 road), FP 1 (px7) -> 2/5. Pixel 6 is ignored.
    assert matrix.per_class_iou() == pytest.approx([1 / 4, 2 / 5])
    with pytest.raises(DataError, match="pass --class-map"):
        prediction_lookup(predicted, spec, None)


def test_the_same_classes_in_another_order_are_linked_by_name(tmp_path):
    spec = load_dataset(_binary_yaml(tmp_path, names=["Road", "background"]))
    table, links = prediction_lookup(("background", "road"), spec, None)
    assert (
        table[:2].tolist() == [1, 0] and (table[2:] == 255).all() and links == "Road <- road, background <- background"
    )
    with pytest.raises(DataError, match=r"pass --class-map"):
        prediction_lookup(("background", "road", "sky"), spec, None)


def test_a_shipped_class_map_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    shipped = load_class_map(Path("configs/class_maps/cityscapes_to_camvid.yaml").resolve())
    monkeypatch.chdir(tmp_path)
    assert load_class_map("cityscapes_to_camvid") == load_class_map("cityscapes_to_camvid.yaml") == shipped
    with pytest.raises(DataError, match="class map city_to_camvid: no such file; seglite's own: cityscapes_to_camvid"):
        load_class_map("city_to_camvid")


def test_shipped_class_map_names_real_classes():
    mapping = load_class_map("configs/class_maps/cityscapes_to_camvid.yaml")
    links = link_classes(tuple(CAMVID_NAMES), CLASS_NAMES, mapping)
    assert sorted(links) == list(range(11))


@pytest.mark.slow  # CI's second step (-m slow)
def test_published_cityscapes_weights_evaluate_zero_shot_on_camvid_through_the_class_map(tmp_path):
    data = _camvid_subset(tmp_path, train=1, val=3)
    weights = require_realdata("weights", "espnetv2", "espnetv2_s_0.5_city_512x256.pth")
    result = _seglite(
        "eval", "--weights", str(weights), "--data", str(data), "--class-map",
        "configs/class_maps/cityscapes_to_camvid.yaml", "--size", "480x360", "--device", "cpu", "--json",
        "--backend", "torch",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["num_images"] == 3 and record["dataset"] == "camvid" and record["split"] == "val"
    assert set(record["per_class_iou"]) == set(CAMVID_NAMES)
    assert record["per_class_iou"]["Road"] > 70 and record["per_class_iou"]["Sky"] > 70
    assert 25 < record["miou"] < 90
    missing = _seglite("eval", "--weights", str(weights), "--data", str(data), "--device", "cpu")
    assert missing.returncode == 2 and "pass --class-map" in missing.stderr


# ---- CamVid as it ships ----------------------------------------------------------------------------------------
def test_builtin_camvid_reads_the_real_data_set():
    root = require_realdata("camvid")
    spec = load_dataset("camvid", root)
    assert spec.names == tuple(CAMVID_NAMES) and spec.ignore_index == 11
    assert len(spec.samples("train")) == 367 and len(spec.samples("val")) == 101
    assert not spec.has_split("test") or not (root / "test").exists()


def test_camvid_class_frequencies_match_the_manifest():
    from seglite.data.check import class_frequencies

    spec = load_dataset("camvid", require_realdata("camvid"))
    freq = class_frequencies(spec, "val")
    # MANIFEST.md, val pixel shares with void (1.70 %) included; frequencies here leave ignore out.
    manifest = [9.18, 25.96, 0.56, 28.95, 8.72, 16.34, 0.89, 3.08, 1.75, 0.65, 2.22]
    assert 100 * freq == pytest.approx(np.asarray(manifest) / (1 - 0.0170), abs=0.02)


def test_too_few_classes_is_a_config_error(tmp_path):
    path = _binary_yaml(tmp_path)
    result = cli(
        "train", "configs/synth_espnetv2_s0.5.yaml", "--data", str(path), "--set", "num_classes=1",
        "--out", str(tmp_path / "r"),
    )  # fmt: skip
    assert result.returncode == 2 and "num_classes" in result.stderr and "Traceback" not in result.stderr


def test_trainer_rejects_a_data_set_error_before_training(tmp_path):
    path = _binary_yaml(tmp_path)
    spec = load_dataset(path)
    cv2.imwrite(str(spec.path / "masks" / "train" / "f1.png"), np.full((48, 64), 9, np.uint8))
    from seglite.training.config import load_config
    from seglite.training.trainer import Trainer

    config = load_config(
        "configs/synth_espnetv2_s0.5.yaml", [f"data.dataset={path}", "data.root=null", "data.workers=0"]
    )
    with pytest.raises(SegliteError, match=r"f1.png: mask value 9 is no class"):
        Trainer(config, tmp_path / "run", show_progress=False).run()


@pytest.mark.slow  # 17 s: two trainings
def test_freeze_encoder_iters_trains_only_the_head_first(tmp_path):
    from seglite.training.config import load_config
    from seglite.training.trainer import Trainer

    path = _binary_yaml(tmp_path)
    sets = [f"data.dataset={path}", "data.root=null", "data.workers=0", "data.crop=[64,48]", "data.val_size=null"]
    sets += ["batch_size=2", "schedule.iters=2", "freeze_encoder_iters=2", "ckpt_every=1", "val_every=100", "seed=3"]
    config = load_config("configs/synth_espnetv2_s0.5.yaml", sets)
    torch.manual_seed(3)
    before = seglite.create_model("espnetv2_s0.5", num_classes=2).state_dict()
    Trainer(config, tmp_path / "run", show_progress=False).run()
    after = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)["state_dict"]
    frozen = [k for k in before if k.startswith("base_net.") and k.endswith("weight") and "bn" not in k]
    assert frozen and all(torch.equal(before[k], after[k]) for k in frozen if before[k].ndim > 1)
    assert not torch.equal(before["bu_dec_l4.merge_layer.3.weight"], after["bu_dec_l4.merge_layer.3.weight"])


@pytest.mark.slow  # 15 s: trains, evaluates and exports at two sizes
def test_weights_validated_at_each_frames_size_export_at_their_frames_size(tmp_path):
    """Training records the validation frames' usual size; without --size, exports and latency figures use it (to
    the network's stride) instead of Cityscapes' 1024x512, which would show the net objects twice the size it
    learnt."""
    from seglite.training.config import load_config
    from seglite.training.trainer import Trainer
    from seglite.zoo.checkpoint import load_weights

    path = _binary_yaml(tmp_path)
    spec = load_dataset(path)
    for i in range(3):  # 3 of the 4 val frames at 100x70, one left at 64x48
        frame = cv2.resize(cv2.imread(str(spec.path / "images" / "val" / f"f{i}.jpg")), (100, 70))
        mask = cv2.resize(cv2.imread(str(spec.path / "masks" / "val" / f"f{i}.png"), 0), (100, 70), cv2.INTER_NEAREST)
        cv2.imwrite(str(spec.path / "images" / "val" / f"f{i}.jpg"), frame)
        cv2.imwrite(str(spec.path / "masks" / "val" / f"f{i}.png"), mask)
    from seglite.data.check import check_dataset

    assert [dict(r.sizes) for r in check_dataset(spec)] == [{(64, 48): 4}, {(100, 70): 3, (64, 48): 1}]
    sets = [f"data.dataset={path}", "data.root=null", "data.workers=0", "data.crop=[64,48]", "data.val_size=null"]
    config = load_config(
        "configs/synth_espnetv2_s0.5.yaml", sets + ["batch_size=2", "schedule.iters=1", "fused_norm=false"]
    )
    Trainer(config, tmp_path / "run", show_progress=False).run()
    loaded = load_weights(tmp_path / "run" / "last.pt")
    assert loaded.preprocess.size is None and loaded.dataset["image_size"] == [100, 70]
    assert loaded.fixed_size() == (96, 64)  # ESPNetv2's stride is 32
    loaded.preprocess = loaded.preprocess.with_size((128, 64))  # weights with a size of their own keep it
    assert loaded.fixed_size() == (128, 64)
    loaded.preprocess, loaded.dataset = loaded.preprocess.with_size(None), None
    assert loaded.fixed_size() == (1024, 512)
    # The fixed-size runtimes of predict and eval take the same default (so --int8 finds what quantize made).
    weights = str(tmp_path / "run" / "last.pt")
    assert seglite.Segmenter(weights=weights, device="cpu", backend="onnx").preprocess.size == (96, 64)
    with pytest.raises(SegliteError, match=r"no accepted INT8 model for .*last.pt at 96x64: run `seglite quantize"):
        seglite.Segmenter(weights=weights, device="cpu", int8=True)
    exported = _seglite("export", "--weights", str(tmp_path / "run" / "last.pt"), "--out", str(tmp_path / "m.onnx"))
    assert exported.returncode == 0, exported.stderr
    assert "96x64" in exported.stdout
    timed = _seglite(
        "bench", "--weights", str(tmp_path / "run" / "last.pt"), "--backend", "torch", "--iters", "1", "--warmup", "0"
    )
    assert timed.returncode == 0 and "fp32, 96x64, batch 1" in timed.stdout
