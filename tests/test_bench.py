"""Latency benchmark and the mIoU-vs-latency report."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import LARGE_TENSOR_PAGES, large_tensor_page_faults

from seglite.bench.report import pareto_front
from seglite.data.synth import write_dataset, write_video
from seglite.zoo.checkpoint import atomic_torch_save, checkpoint_dict


def _seglite(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seglite", *args], capture_output=True, text=True)


@pytest.mark.parametrize("backend", ["torch", "onnx", pytest.param("auto", marks=pytest.mark.slow)])
def test_bench_json_has_the_promised_fields(backend):
    result = _seglite(
        "bench",
        "--model",
        "espnetv2_s0.5",
        "--size",
        "256x128",
        "--threads",
        "2",
        "--warmup",
        "1",
        "--iters",
        "3",
        "--backend",
        backend,
        "--json",
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    for key in ("model", "median_ms", "p90_ms", "fps", "params", "gflops", "device", "threads", "backend", "size"):
        assert key in record
    compared = record["backends_compared"]
    if backend == "auto":  # all timed (torch.compile where a C++ compiler is), the fastest reported
        from seglite.inference.backends.openvino import openvino_available

        expected = {"torch", "onnx"} | ({"torch.compile"} if shutil.which("g++") else set())
        expected |= {"openvino"} if openvino_available() else set()
        assert set(compared) == expected and record["median_ms"] == min(compared.values())
    else:
        assert set(compared) == {backend}
    assert record["backend"] in compared and record["params"] == 79_452 and record["threads"] == 2
    assert record["min_ms"] <= record["median_ms"] <= record["p90_ms"]
    assert record["fps"] == pytest.approx(1000 / record["median_ms"], rel=1e-3)
    assert record["machine"]["cores"] >= 1 and "torch" in record["machine"]


def test_bench_cuda_without_a_gpu_is_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = _seglite("bench", "--model", "espnetv2_s0.5", "--device", "cuda")
    assert result.returncode != 0 and "no CUDA GPU" in result.stderr and "Traceback" not in result.stderr


def test_pareto_front():
    points = [(10, 50), (20, 60), (15, 40), (30, 55), (5, 30)]
    assert sorted(pareto_front(points)) == [0, 1, 4]


def test_report_entries_name_a_network_weights_or_a_label(tmp_path):
    from seglite.bench.report import ReportEntry, parse_entries
    from seglite.errors import InputError

    exported = tmp_path / "onnx_fp32"
    exported.mkdir()
    text = f"espnetv1, espnetv2_s0.5=w.pt,mine=runs/a/best.pt,{exported},espnetv2_s0.5_cityscapes_512x256,"
    assert parse_entries(text) == [
        ReportEntry(model="espnetv1"),
        ReportEntry(model="espnetv2_s0.5", weights="w.pt"),
        ReportEntry(weights="runs/a/best.pt", label="mine"),
        ReportEntry(weights=str(exported)),
        ReportEntry(weights="espnetv2_s0.5_cityscapes_512x256"),
    ]
    for wrong in ("mine=", "=w.pt", " , "):
        with pytest.raises(InputError, match="--models"):
            parse_entries(wrong)
    with pytest.raises(InputError, match="espnetv2_s05: not a network.*did you mean espnetv2_s0.5"):
        parse_entries("espnetv2_s05")


def _two_class_drive(tmp_path: Path) -> Path:
    """A data set of the user's own two classes (background, road): two 128x64 val frames."""
    import cv2
    import numpy as np
    import yaml

    root = tmp_path / "drive"
    for folder in ("images/val", "masks/val"):
        (root / folder).mkdir(parents=True)
    for i in range(2):
        mask = np.zeros((64, 128), np.uint8)
        mask[32:] = 1
        cv2.imwrite(str(root / "images/val" / f"f{i}.png"), np.full((64, 128, 3), 90 + 40 * i, np.uint8))
        cv2.imwrite(str(root / "masks/val" / f"f{i}.png"), mask)
    data = tmp_path / "drive.yaml"
    data.write_text(yaml.safe_dump({"path": str(root), "val": "images/val", "masks_dir": {"images": "masks"},
                                    "names": ["background", "road"]}))  # fmt: skip
    return data


def test_benchmark_scores_weights_of_other_classes_through_a_class_map(tmp_path):
    import seglite
    from seglite.bench.formats import benchmark_formats
    from seglite.data.datasets import load_dataset
    from seglite.data.labels import CLASS_NAMES
    from seglite.errors import DataError
    from seglite.zoo.preprocess import IMAGENET

    weights = tmp_path / "city.pt"
    net = seglite.create_model("espnetv2_s0.5")
    atomic_torch_save(checkpoint_dict("espnetv2_s0.5", net, CLASS_NAMES, IMAGENET.with_size((128, 64))), weights)
    data = load_dataset(_two_class_drive(tmp_path))
    run = dict(formats=[], precisions=["fp32"], data=data, warmup=0, iters=1)
    with pytest.raises(DataError, match="pass --class-map"):
        benchmark_formats(None, str(weights), out=tmp_path / "a", **run)
    rows, _ = benchmark_formats(None, str(weights), out=tmp_path / "b", class_map={"background": ["sky"]}, **run)
    assert [r.format for r in rows] == ["pytorch"] and rows[0].miou is not None


def test_an_interrupted_benchmark_keeps_the_rows_it_measured(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) during the third export of an hour-long benchmark: the first two rows are in the table."""
    import seglite
    from seglite.bench import formats
    from seglite.errors import Interrupted
    from seglite.zoo.preprocess import IMAGENET

    weights = tmp_path / "w.pt"
    atomic_torch_save(checkpoint_dict("espnetv2_s0.5", seglite.create_model("espnetv2_s0.5", num_classes=2),
                                      ("background", "road"), IMAGENET.with_size((128, 64))), weights)  # fmt: skip

    def measure(row, fmt, *args) -> None:
        if fmt.name == "torchscript":
            raise KeyboardInterrupt
        row.status, row.median_ms = "ok", 12.5  # onnx: measured (its converter is the export step's to test)

    monkeypatch.setattr(formats, "_measure", measure)
    plotted, saved = [], formats.save_figure
    monkeypatch.setattr(formats, "save_figure", lambda fig, *args: plotted.append(fig) or saved(fig, *args))
    out = tmp_path / "bench"
    with pytest.raises(Interrupted, match=r"after 2 row\(s\) \(pytorch fp32, onnx fp32\); they are in .*benchmark.md"):
        formats.benchmark_formats(None, str(weights), ["onnx", "torchscript", "openvino"], ["fp32"], out,
                                  warmup=0, iters=1)  # fmt: skip
    table = json.loads((out / "benchmark.json").read_text())
    kept = table["rows"]
    assert [(r["format"], r["status"]) for r in kept] == [("pytorch", "ok"), ("onnx", "ok")]
    assert kept[1]["median_ms"] == 12.5 and "| onnx | fp32 | ok |" in (out / "benchmark.md").read_text()
    said = "interrupted after 2 row(s); the formats after them are missing"  # nothing reads as a complete table
    assert table["incomplete"] == said and f"**Incomplete: {said}.**" in (out / "benchmark.md").read_text()
    assert plotted[-1].get_suptitle() == f"Incomplete: {said}"  # the plot says it too


def test_report_tells_two_checkpoints_of_one_network_apart_and_maps_other_classes(tmp_path, monkeypatch):
    """The published Cityscapes model beside one fine-tuned on the user's classes: both evaluated on the user's
    data set (the Cityscapes one through --class-map), and named apart in the table and the plot."""
    import seglite
    from seglite.bench.report import ReportOptions, build_report, parse_entries
    from seglite.data.labels import CLASS_NAMES
    from seglite.zoo.preprocess import IMAGENET

    data = _two_class_drive(tmp_path)
    for run, classes in (("city", CLASS_NAMES), ("mine", ("background", "road"))):
        (tmp_path / run).mkdir()
        net = seglite.create_model("espnetv2_s0.5", num_classes=len(classes))
        atomic_torch_save(checkpoint_dict("espnetv2_s0.5", net, classes, IMAGENET.with_size((128, 64))),
                          tmp_path / run / "best.pt")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    options = ReportOptions(data=str(data), class_map={"background": ["building", "sky"]}, backend="torch", iters=1)
    rows = build_report(parse_entries("city,mine"), options, tmp_path / "report")
    assert [row["name"] for row in rows] == ["espnetv2_s0.5 (city)", "espnetv2_s0.5 (mine)"]
    assert all(row["miou"] is not None and row["eval_images"] == 2 for row in rows)
    assert "| espnetv2_s0.5 (mine) |" in (tmp_path / "report" / "report.md").read_text()
    # Ctrl-C while the second model is timed: the first one's row is kept, in the table and the plot.
    from seglite.bench import report
    from seglite.errors import Interrupted

    timed = report._time_pytorch

    def interrupted_second(segmenter, *args):
        if segmenter.loaded.source.endswith("mine/best.pt"):
            raise KeyboardInterrupt
        return timed(segmenter, *args)

    monkeypatch.setattr(report, "_time_pytorch", interrupted_second)
    plotted, saved = [], report.save_figure
    monkeypatch.setattr(report, "save_figure", lambda fig, *args: plotted.append(fig) or saved(fig, *args))
    with pytest.raises(Interrupted, match=r"after 1 row\(s\) \(espnetv2_s0.5\); they are in .*report.md"):
        build_report(parse_entries("city,mine"), options, tmp_path / "cut")
    kept = json.loads((tmp_path / "cut" / "report.json").read_text())
    assert [row["weights"] for row in kept["rows"]] == [rows[0]["weights"]] and kept["machine"]["cores"] >= 1
    said = "interrupted after 1 row(s); the models after them are missing"
    assert kept["incomplete"] == said and f"**Incomplete: {said}.**" in (tmp_path / "cut" / "report.md").read_text()
    assert "incomplete" not in json.loads((tmp_path / "report" / "report.json").read_text())
    assert (tmp_path / "cut" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert plotted[-1].get_suptitle() == f"Incomplete: {said}"


@pytest.mark.slow  # 20 s: a report over three models and an exported one, with mIoU
def test_report_with_data_writes_table_and_plot(tmp_path):
    import seglite
    from seglite.data.labels import CLASS_NAMES
    from seglite.export.exporter import export_model
    from seglite.zoo.preprocess import IMAGENET

    root = write_dataset(tmp_path / "data", train=0, val=2, size=(128, 64))
    weights = tmp_path / "w.pt"
    atomic_torch_save(
        checkpoint_dict(
            "espnetv2_s0.5", seglite.create_model("espnetv2_s0.5"), CLASS_NAMES, IMAGENET.with_size((128, 64))
        ),
        weights,
    )
    exported = export_model(None, str(weights), "onnx", tmp_path / "onnx_fp32").path
    out = tmp_path / "report"
    result = _seglite(
        "report",
        "--models",
        f"espnetv2_s0.5={weights},espnetv1,mine={weights},{exported}",
        "--data-root",
        str(root),
        "--iters",
        "2",
        "--threads",
        "2",
        "--backend",
        "torch",  # auto's timing of every backend (and a cold torch.compile, ~70 s) is tested through `bench`
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert {p.name for p in out.iterdir()} == {"report.md", "report.csv", "report.json", "pareto.png"}
    rows = json.loads((out / "report.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["espnetv2_s0.5", "espnetv1", "espnetv2_s0.5", "espnetv2_s0.5"]
    assert [r["name"] for r in rows] == ["espnetv2_s0.5", "espnetv1", "mine", "espnetv2_s0.5 (onnx fp32)"]
    assert rows[0]["size"] == "128x64" and rows[0]["miou"] is not None and rows[1]["miou"] is None
    assert rows[0]["params"] == 79_452 and rows[1]["params"] == 362_949  # the model's own count, not the folded one
    # The exported model: evaluated and timed in its own runtime, at its size, with the same mIoU.
    assert rows[3]["backend"] == "onnx fp32" and rows[3]["size"] == "128x64" and rows[3]["threads"] == 2
    assert abs(rows[3]["miou"] - rows[0]["miou"]) < 0.5 and rows[2]["miou"] == rows[0]["miou"]
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "espnetv2_s0.5" in (out / "report.md").read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator tuning is Linux-only")
def test_reused_memory_stops_page_faults_on_repeated_large_tensors():
    faults = {}
    for setting in ("1", "0"):
        env = {**os.environ, "SEGLITE_REUSE_MEMORY": setting}
        printed, faults[setting] = large_tensor_page_faults(
            "from seglite.devices import reuse_freed_memory\nprint(reuse_freed_memory())", env
        )
        assert printed == ["True" if setting == "1" else "False"]
    assert faults["0"] > LARGE_TENSOR_PAGES // 2  # glibc maps each one afresh...
    assert faults["1"] < LARGE_TENSOR_PAGES // 20  # ...unless freed memory is kept for reuse


FAKE_AUTHORS_MODEL = """
import torch
from torch import nn


class ESPNet(nn.Module):  # stands in for the authors' train/Model.py: same constructor, any network
    def __init__(self, classes=20, p=2, q=3, encoderFile=None):
        super().__init__()
        self.conv = nn.Conv2d(3, classes, 3, padding=1)

    def forward(self, x):
        return self.conv(x)
"""


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    script = Path(__file__).parents[1] / "scripts" / name
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=600)


def _espnet_peer(*args: str) -> subprocess.CompletedProcess:
    return _script("espnet_peer.py", *args)


def test_espnet_peer_times_a_checkout_on_every_backend(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "Model.py").write_text(FAKE_AUTHORS_MODEL)
    result = _espnet_peer(
        "--espnet-code", str(tmp_path), "--models", "espnet", "--size", "64x32", "--warmup", "1", "--iters", "3"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])["espnet"]
    timed = {key: report[key] for key in ("eager", "eager_channels_last", "onnx")}
    assert all(ms > 0 for ms in timed.values())
    assert report["best_ms"] == min(timed.values())
    assert report["best_backend"] == min(timed, key=timed.get)


def test_espnet_peer_names_the_missing_checkout(tmp_path):
    result = _espnet_peer("--edgenets-code", str(tmp_path), "--models", "espnetv2_s1.0")
    assert result.returncode == 1
    assert "github.com/sacmehta/EdgeNets" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow  # ~1 min: seven variant processes, each importing torch
def test_bench_train_times_every_lever_against_the_plain_loop(tmp_path):
    result = _script(
        "bench_train.py", "--models", "deeplabv3p_lcnet_050", "--rounds", "1", "--steps", "1", "--batch", "2",
        "--crop", "96", "64", "--camvid", str(tmp_path / "no_camvid"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("CPU: ") and "generated" in result.stdout
    rows = [line.split(" | ") for line in result.stdout.splitlines() if line.startswith("| deeplabv3p_lcnet_050 |")]
    variants = {row[1] for row in rows}
    levers = {"plain", "allocator", "channels_last", "bf16", "fused", "fused_norm"}
    assert variants - levers in ({"seglite (fp32)"}, {"seglite (bf16)"}) and levers <= variants  # with its choice
    assert all(float(row[2]) > 0 for row in rows) and {row[3] for row in rows if row[1] == "plain"} == {"1.0"}


@pytest.mark.slow  # ~15 s: one process, a 24-frame clip through 1 and 2 streams, the model timed between them
def test_bench_predict_brackets_every_video_with_model_only_runs(tmp_path):
    video = write_video(tmp_path / "drive.mp4", frames=24, size=(256, 128))
    result = _script(
        "bench_predict.py", "--video", str(video), "--weights", "none", "--model", "espnetv2_s0.5",
        "--size", "256x128", "--rounds", "1", "--no-memory",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("CPU: ")
    (round_,) = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    one, two = round_["streams_1"], round_["streams_2"]
    assert one["frames"] == two["frames"] == 24
    # the model-only run after the first video is the one before the second
    assert one["model_only_fps_before_after"][1] == two["model_only_fps_before_after"][0]
    for run in (one, two):
        assert run["model_only_fps"] == pytest.approx(sum(run["model_only_fps_before_after"]) / 2)
        assert run["ratio"] == pytest.approx(run["end_to_end_fps"] / run["model_only_fps"])
    summary = [line for line in result.stdout.splitlines() if "stream(s): end to end" in line]
    assert [line.split()[0] for line in summary] == ["1", "2"]


@pytest.mark.slow  # ~15 s: one process, four variants over three small frames
def test_bench_images_times_png_and_jpeg_overlays_in_one_and_two_streams(tmp_path):
    import cv2

    from seglite.data.synth import render_scene

    for index in range(3):
        cv2.imwrite(str(tmp_path / f"f{index}.jpg"), render_scene(160, 96, seed=index)[0])
    result = _script(
        "bench_images.py", "--images", str(tmp_path), "--weights", "none", "--model", "espnetv2_s0.5",
        "--size", "128x64", "--rounds", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("CPU: ") and "3 images (.jpg" in result.stdout
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("PNG", "JPEG"))]
    assert [(row[0], row[1]) for row in rows] == [("PNG", "1"), ("PNG", "2"), ("JPEG", "1"), ("JPEG", "2")]
    assert all(float(row[2]) > 0 and float(row[3]) > 0 for row in rows)


@pytest.mark.slow  # ~20 s: two generated 2048x1024 frames, evaluated in one and two streams
def test_bench_eval_times_one_and_two_streams_with_the_same_miou(tmp_path):
    result = _script(
        "bench_eval.py", "--weights", "none", "--model", "espnetv2_s0.5", "--camvid", str(tmp_path / "absent"),
        "--frames", "2", "--rounds", "1",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("CPU: ") and "absent; only the generated frames" in result.stdout
    rows = [line for line in result.stdout.splitlines() if "stream(s): images/s" in line]
    assert [row.split(", ")[2].split()[0] for row in rows] == ["1", "2"]
    mious = {row.split("(mIoU ")[1] for row in rows}
    assert len(mious) == 1  # streams change the speed, not the figures


@pytest.mark.slow
def test_bench_labels_times_each_path_and_they_agree():
    result = _script("bench_labels.py", "--frame", "320x180", "--rounds", "1", "--repeats", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    networks = ("ESPNetv2", "DeepLabV3+", "ESPNet-C")
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(networks)]
    assert [row[0] for row in rows] == list(networks)
    for row in rows:  # name, logits, grouped ms, per-output ms, OpenCV ms, agreement of the last two with the first
        assert float(row[3]) > 0 and float(row[4]) > 0 and (row[2] == "-" or float(row[2]) > 0)  # "-": no vectors
        assert row[-3] == "100.0000%"  # the kernel's two forms sum the same terms in the same order
        assert float(row[-1][:-1]) > 99.5  # OpenCV's float32 chain: near-ties may go either way
