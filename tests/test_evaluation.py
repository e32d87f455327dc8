"""Evaluation: seglite's mIoU equals the official Cityscapes evaluator's on the same predictions."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import record_calling_threads, require_realdata

from seglite.data.synth import write_dataset
from seglite.evaluation.metrics import ConfusionMatrix


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("synth"), train=2, val=4, size=(256, 128), seed=3)


def _seglite(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seglite", *args], capture_output=True, text=True)


def test_confusion_matrix_by_hand():
    target = torch.tensor([0, 0, 1, 1, 2, 255])
    prediction = torch.tensor([0, 1, 1, 255, 2, 0])  # one miss to 'no class' (255); ignore GT is skipped
    matrix = ConfusionMatrix(num_classes=4)
    matrix.update(prediction, target)
    iou = matrix.per_class_iou()
    assert iou[0] == pytest.approx(1 / 2) and iou[1] == pytest.approx(1 / 3) and iou[2] == 1.0
    assert math.isnan(iou[3])  # in neither prediction nor ground truth: left out of the mean
    assert matrix.miou() == pytest.approx((1 / 2 + 1 / 3 + 1) / 3)
    assert matrix.pixel_accuracy() == pytest.approx(3 / 5)


@pytest.mark.parametrize("classes", [2, 19, 130])  # 130: codes past 16 bits
def test_confusion_matrix_counts_every_pixel_as_a_loop_does(classes):
    rng = np.random.default_rng(classes)
    target = rng.integers(0, classes, (37, 53)).astype(np.uint8)
    target[rng.random(target.shape) < 0.2] = 255
    prediction = rng.integers(0, min(classes + 3, 256), target.shape)  # past the classes: misses
    prediction[rng.random(target.shape) < 0.1] = 255
    expected = np.zeros((classes, classes + 1), np.int64)
    for t, p in zip(target.ravel(), prediction.ravel(), strict=True):
        if t != 255:
            expected[t, min(p, classes)] += 1
    for target_type in (torch.uint8, torch.int64):
        matrix = ConfusionMatrix(classes)
        matrix.update(torch.from_numpy(prediction), torch.from_numpy(target).to(target_type))
        assert np.array_equal(matrix.matrix.numpy(), expected)
    for bad in (classes, 300, -1):  # a label value that is neither a class nor ignore is an error, not a count
        if bad == classes and classes > 254:
            continue
        wrong = torch.from_numpy(target).long()
        wrong[0, 0] = bad
        with pytest.raises(ValueError, match="label values must be class ids"):
            ConfusionMatrix(classes).update(torch.from_numpy(prediction), wrong)


def test_mean_matches_the_official_evaluator(synth_root, tmp_path, monkeypatch):
    predictions = tmp_path / "pred"
    result = _seglite(
        "eval",
        "--model",
        "espnetv2_s0.5",
        "--data-root",
        str(synth_root),
        "--split",
        "val",
        "--device",
        "cpu",
        "--save-predictions",
        str(predictions),
        "--json",
    )
    assert result.returncode == 0, result.stderr
    ours = json.loads(result.stdout)
    assert ours["num_images"] == 4 and len(list(predictions.glob("*.png"))) == 4

    if not hasattr(np, "in1d"):  # cityscapesscripts 2.3.0 still calls np.in1d, removed in NumPy 2.4
        monkeypatch.setattr(np, "in1d", np.isin, raising=False)
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as official

    args = official.args
    monkeypatch.setattr(args, "cityscapesPath", str(synth_root))
    monkeypatch.setattr(args, "predictionPath", str(predictions))
    monkeypatch.setattr(args, "predictionWalk", None)
    monkeypatch.setattr(args, "quiet", True)
    monkeypatch.setattr(args, "JSONOutput", False)
    monkeypatch.setattr(args, "exportFile", str(tmp_path / "official.json"))
    ground_truth = sorted(str(p) for p in (synth_root / "gtFine" / "val").glob("*/*_gtFine_labelIds.png"))
    predicted = [official.getPrediction(args, gt) for gt in ground_truth]
    results = official.evaluateImgLists(predicted, ground_truth, args)
    assert ours["miou"] == pytest.approx(100 * results["averageScoreClasses"], abs=1e-4)
    for name, value in ours["per_class_iou"].items():
        theirs = results["classScores"][name]
        if value is None:
            assert math.isnan(theirs)
        else:
            assert value == pytest.approx(100 * theirs, abs=1e-4)


@pytest.mark.slow  # CI's second step (-m slow)
def test_published_weights_score_on_real_frames():
    weights = require_realdata("weights", "espnetv2", "espnetv2_s_2.0_city_1024x512.pth")
    root = require_realdata("cityscapes_val_sample")
    result = _seglite(
        "eval", "--weights", str(weights), "--data-root", str(root), "--split", "train", "--device", "cpu", "--json"
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["num_images"] == 8 and record["size"] == "1024x512"
    assert record["pixel_acc"] > 94.0 and record["miou"] > 50.0  # the authors' code: 0.945-0.975 per image


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "espnetv2_s0.5", "--data-root", "/no/such/root"], "/no/such/root"),
        (["--model", "espnetv9", "--data-root", "."], "espnetv9"),
        (["--model", "espnetv2_s0.5", "--data-root", ".", "--scales", "a,b"], "--scales"),
    ],
)
def test_bad_input_is_one_line(args, needle):
    result = _seglite("eval", *args)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr


def test_labels_absent_for_the_split(synth_root, tmp_path):
    import shutil

    root = tmp_path / "nolabels"
    shutil.copytree(synth_root / "leftImg8bit", root / "leftImg8bit")
    result = _seglite("eval", "--model", "espnetv2_s0.5", "--data-root", str(root), "--split", "val")
    assert result.returncode != 0 and "no *_gtFine_labelIds.png labels" in result.stderr


def test_label_of_another_size_is_named(synth_root, tmp_path):
    import shutil

    import cv2

    root = tmp_path / "mismatch"
    shutil.copytree(synth_root, root)
    label = sorted((root / "gtFine" / "val").glob("*/*_labelIds.png"))[0]
    cv2.imwrite(str(label), np.zeros((64, 64), np.uint8))
    result = _seglite("eval", "--model", "espnetv2_s0.5", "--data-root", str(root), "--split", "val")
    assert result.returncode != 0 and label.name in result.stderr and "Traceback" not in result.stderr


def test_weights_for_another_number_of_classes(tmp_path):
    from seglite.data.labels import CLASS_NAMES
    from seglite.models.registry import create_model
    from seglite.zoo.checkpoint import checkpoint_dict
    from seglite.zoo.preprocess import IMAGENET

    ckpt = checkpoint_dict("espnetv2_s0.5", create_model("espnetv2_s0.5", num_classes=5), CLASS_NAMES[:5], IMAGENET)
    ckpt["num_classes"] = 19
    path = tmp_path / "five.pt"
    torch.save(ckpt, path)
    result = _seglite("eval", "--weights", str(path), "--data-root", ".")
    assert result.returncode != 0 and str(path) in result.stderr and "Traceback" not in result.stderr


def test_sliding_window_covers_the_image_and_equals_one_pass_when_the_window_is_the_image():
    from seglite.evaluation.evaluator import sliding_window_logits
    from seglite.models.registry import create_model

    model = create_model("espnetv2_s0.5").eval()
    batch = torch.randn(1, 3, 128, 256)
    with torch.inference_mode():
        whole = model(batch)
        same = sliding_window_logits(model, batch, (256, 128))
        tiled = sliding_window_logits(model, batch, (128, 64))
    assert torch.equal(whole, same)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    # Each tile's interior equals the model run on that tile alone where no other tile overlaps it.
    with torch.inference_mode():
        corner = model(batch[..., :64, :128])
    assert torch.allclose(tiled[..., :40, :80], corner[..., :40, :80], atol=1e-5)


def test_sliding_window_from_the_cli(synth_root):
    result = _seglite(
        "eval",
        "--model",
        "espnetv2_s0.5",
        "--data-root",
        str(synth_root),
        "--split",
        "val",
        "--sliding-window",
        "128x64",
        "--flip",
        "--limit",
        "1",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["sliding_window"] == "128x64" and record["num_images"] == 1


@pytest.mark.parametrize("flip", [False, True])
def test_eval_on_onnx_runtime_gives_the_eager_result(synth_root, tmp_path, monkeypatch, flip):
    import seglite
    from seglite.data.labels import CLASS_NAMES
    from seglite.evaluation.evaluator import EvalOptions, evaluate
    from seglite.zoo.checkpoint import atomic_torch_save, checkpoint_dict
    from seglite.zoo.preprocess import IMAGENET

    monkeypatch.setenv("SEGLITE_HOME", str(tmp_path / "home"))
    torch.manual_seed(1)
    weights = tmp_path / "w.pt"
    net = seglite.create_model("espnetv2_s0.5")
    atomic_torch_save(checkpoint_dict("espnetv2_s0.5", net, CLASS_NAMES, IMAGENET.with_size((256, 128))), weights)
    summaries = {}
    for backend in ("torch", "onnx"):
        segmenter = seglite.Segmenter(weights=str(weights), device="cpu", backend=backend)
        summaries[backend] = evaluate(segmenter, synth_root, EvalOptions(flip=flip, progress=False)).summary
    assert list((tmp_path / "home" / "onnx").glob("*.onnx"))  # ONNX Runtime really ran
    assert summaries["onnx"]["pixel_acc"] == pytest.approx(summaries["torch"]["pixel_acc"], abs=0.05)
    assert summaries["onnx"]["miou"] == pytest.approx(summaries["torch"]["miou"], abs=0.05)


def test_eval_in_two_streams_counts_what_one_stream_counts(synth_root, tmp_path):
    """Throughput mode for eval: the same confusion matrix and saved predictions, with the images' predictions made in
    the stream threads (the matrix is updated in the calling thread only)."""
    from seglite.data.datasets import load_dataset
    from seglite.evaluation.evaluator import EvalOptions, evaluate
    from seglite.inference.segmenter import Segmenter

    segmenter = Segmenter(model="espnetv2_s0.5", size=(256, 128), device="cpu", backend="torch")
    dataset = load_dataset("cityscapes", synth_root)
    callers = record_calling_threads(segmenter, "network")
    results = {}
    for streams in (1, 2):
        callers.clear()
        saved = tmp_path / f"pred{streams}"
        options = EvalOptions(split="val", progress=False, streams=streams, save_predictions=saved)
        results[streams] = evaluate(segmenter, dataset, options), {p.name: p.read_bytes() for p in saved.iterdir()}
        in_streams = all(name.startswith("seglite-stream") for name in callers)
        assert callers and in_streams == (streams == 2), callers
    (one, one_saved), (two, two_saved) = results[1], results[2]
    assert one.num_images == two.num_images == 4 and len(one_saved) == 4
    assert one.summary == two.summary and one_saved == two_saved
    cli = _seglite(
        "eval", "--model", "espnetv2_s0.5", "--size", "256x128", "--data-root", str(synth_root), "--device", "cpu",
        "--backend", "torch", "--streams", "2", "--json",
    )  # fmt: skip
    assert cli.returncode == 0, cli.stderr
    assert json.loads(cli.stdout)["streams"] == 2 and json.loads(cli.stdout)["num_images"] == 4


def test_evaluate_takes_what_the_command_line_takes(synth_root):
    """From Python: a Cityscapes folder, a data set name with its root (`--data`, `--data-root`), or a loaded spec."""
    from seglite.data.datasets import load_dataset
    from seglite.errors import DataError
    from seglite.evaluation.evaluator import EvalOptions, evaluate
    from seglite.inference.segmenter import Segmenter

    segmenter = Segmenter(model="espnetv2_s0.5", size=(256, 128), device="cpu", backend="torch")
    options = EvalOptions(progress=False, limit=2, streams=1)
    folder = evaluate(segmenter, synth_root, options)
    assert folder.num_images == 2 and folder.miou == folder.summary["miou"] > 0
    assert evaluate(segmenter, "cityscapes", options, root=synth_root).summary == folder.summary
    assert evaluate(segmenter, load_dataset("cityscapes"), options, root=synth_root).summary == folder.summary
    with pytest.raises(DataError, match="did you mean 'cityscapes'"):
        evaluate(segmenter, "citiscapes", options, root=synth_root)
