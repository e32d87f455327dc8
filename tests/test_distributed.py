"""Every long verb under torchrun on the CPU (gloo, 2-3 processes): eval and training validation give the
single-process figures exactly, predict writes exactly the single-process outputs, failures are reported once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
import torch
from conftest import REPO, cli, require_realdata

from seglite.data.synth import render_scene, write_dataset, write_video
from seglite.distributed import DistInfo, shard
from seglite.zoo.checkpoint import atomic_torch_save, checkpoint_dict
from seglite.zoo.preprocess import IMAGENET

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}
_ports = iter(range(29611, 29700))


def torchrun(processes: int, *args: str, **kwargs) -> subprocess.CompletedProcess:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes)]
    launcher += ["--master_port", str(next(_ports)), "-m", "seglite"]
    return subprocess.run([*launcher, *args], capture_output=True, text=True, env=ENV, timeout=600, **kwargs)


def seglite(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seglite", *args], capture_output=True, text=True, env=ENV)


@pytest.fixture(scope="module")
def city(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("city"), train=1, val=7, size=(128, 64), seed=21)


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    """A small random network: not trained, but its labels are a fixed function of the input."""
    import seglite

    torch.manual_seed(0)
    net = seglite.create_model("espnetv2_s0.5")
    path = tmp_path_factory.mktemp("w") / "net.pt"
    from seglite.data.labels import CLASS_NAMES

    atomic_torch_save(checkpoint_dict("espnetv2_s0.5", net, CLASS_NAMES, IMAGENET.with_size((128, 64))), path)
    return path


@pytest.mark.parametrize("count,world", [(7, 2), (7, 3), (2, 3), (10, 4)])
def test_shards_hold_every_item_exactly_once(count, world):
    items = list(range(count))
    shards = [shard(items, DistInfo(rank, world)) for rank in range(world)]
    assert sorted(i for s in shards for i in s) == items
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def _eval(runner, *args: str) -> dict:
    result = runner(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


@pytest.mark.slow  # CI's second step; 18 s (three ranks start torch). The default run keeps training validation on ranks
def test_eval_under_torchrun_equals_one_process_exactly(city, weights):
    args = ("eval", "--weights", str(weights), "--data-root", str(city), "--device", "cpu", "--backend", "torch")
    one = _eval(seglite, *args, "--json")
    for processes in (3,):  # 7 frames: shards of 3+2+2 (2 processes: CamVid, predict and training tests)
        many = _eval(lambda *a, n=processes: torchrun(n, *a), *args, "--json")
        assert many["processes"] == processes and many["num_images"] == one["num_images"] == 7
        assert many["miou"] == one["miou"] and many["per_class_iou"] == one["per_class_iou"]
        assert many["pixel_acc"] == one["pixel_acc"]


@pytest.mark.slow  # CI's second step (-m slow)
def test_eval_under_torchrun_on_camvid_val_equals_one_process():
    weights = require_realdata("weights", "espnetv2", "espnetv2_s_0.5_city_1024x512.pth")
    camvid = require_realdata("camvid")
    args = ["eval", "--weights", str(weights), "--data", "camvid", "--data-root", str(camvid), "--device", "cpu"]
    args += ["--class-map", str(REPO / "configs" / "class_maps" / "cityscapes_to_camvid.yaml"), "--size", "480x360"]
    args += ["--backend", "torch", "--json"]
    for limit, processes in ((7, 2), (10, 3), (101, 2)):
        one = _eval(seglite, *args, "--limit", str(limit))
        many = _eval(lambda *a, n=processes: torchrun(n, *a), *args, "--limit", str(limit))
        assert many["num_images"] == one["num_images"] == limit and many["miou"] == one["miou"], (limit, processes)


@pytest.mark.slow  # CI's second step: keeps the default run under 10 minutes on 2 cores
def test_training_validation_on_every_rank_equals_one_process_validation(city, tmp_path):
    from seglite.evaluation.evaluator import EvalOptions, evaluate
    from seglite.inference.segmenter import Segmenter
    from seglite.zoo.checkpoint import load_model

    out = tmp_path / "ddp"
    sets = ["model=espnetv2_s0.5", "data.crop=[128,64]", "data.val_size=[128,64]", "data.workers=0"]
    sets += ["batch_size=2", "device=cpu", "amp=none", "fused_norm=false", "schedule.iters=2", "val_every=1"]
    args = ["train", str(REPO / "configs" / "synth_espnetv2_s0.5.yaml"), "--data-root", str(city), "--out", str(out)]
    for item in sets:
        args += ["--set", item]
    result = torchrun(2, *args)
    assert result.returncode == 0, result.stderr[-3000:]
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    validations = [r for r in logged if "val_miou" in r]
    assert [r["iteration"] for r in validations] == [1, 2]  # rank 0 logs once per validation, for all ranks
    loaded = load_model(None, str(out / "last.pt"))
    segmenter = Segmenter.from_loaded(loaded, "cpu", (128, 64))
    alone = evaluate(segmenter, loaded_dataset(city), EvalOptions(split="val", progress=False))
    assert alone.summary["miou"] == validations[-1]["val_miou"]
    assert alone.summary["per_class_iou"] == validations[-1]["val_per_class_iou"]


def loaded_dataset(root: Path):
    from seglite.data.datasets import load_dataset

    return load_dataset("cityscapes", root)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """7 images (one of them a fake PNG) and 3 short videos in one folder tree."""
    root = tmp_path_factory.mktemp("inputs")
    (root / "frames" / "sub").mkdir(parents=True)
    for index in range(7):
        folder = root / "frames" / ("sub" if index % 3 == 0 else "")
        cv2.imwrite(str(folder / f"f{index}.png"), render_scene(160, 96, seed=index)[0])
    for index in range(3):
        write_video(root / f"clip{index}.mp4", frames=6 + index, size=(160, 96), fps=5.0, seed=index)
    return root


def _outputs(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*.png"))}


@pytest.mark.slow  # CI's second step: keeps the default run under 10 minutes on 2 cores
def test_predict_under_torchrun_writes_exactly_the_single_process_outputs(inputs, weights, tmp_path):
    bad = inputs / "frames" / "broken.png"
    bad.write_bytes(b"not a png")
    try:
        sources = [str(inputs / "frames"), *(str(inputs / f"clip{i}.mp4") for i in range(3))]
        common = ["--weights", str(weights), "--device", "cpu", "--backend", "torch", "--format", "trainid"]
        one = seglite("predict", *sources, *common, "--out", str(tmp_path / "one"))
        many = torchrun(2, "predict", *sources, *common, "--out", str(tmp_path / "two"))
    finally:
        bad.unlink()
    assert one.returncode == 2, one.stderr
    assert many.returncode != 0  # each rank exits 2; torchrun then reports the failed ranks and exits 1
    assert "exitcode  : 2" in many.stderr
    for result in (one, many):
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert errors == [f"error: {bad}: not a readable image (empty, truncated or not an image format)"], errors
        assert "7 of 8 image(s) segmented" in result.stdout
    assert "2 processes:" in many.stdout and "rank 1:" in many.stdout
    single, sharded = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert len(single) == 7 + (6 + 7 + 8) and single.keys() == sharded.keys()
    assert all(single[name] == sharded[name] for name in single), "a label PNG differs between 1 and 2 processes"
    assert not list((tmp_path / "two").rglob("*partial*"))


@pytest.mark.slow  # CI's second step (-m slow)
def test_a_killed_rank_ends_the_run_with_a_line_naming_it(weights, tmp_path):
    videos = [write_video(tmp_path / f"long{i}.mp4", frames=400, size=(320, 192), fps=10.0, seed=i) for i in range(2)]
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    launcher += ["--master_port", str(next(_ports)), "-m", "seglite", "predict", *map(str, videos)]
    launcher += ["--weights", str(weights), "--device", "cpu", "--backend", "torch", "--out", str(tmp_path / "o")]
    started = time.monotonic()
    child = subprocess.Popen(launcher, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    victim = None
    while victim is None and time.monotonic() - started < 120:
        for pid in _descendants(child.pid):
            environ = Path(f"/proc/{pid}/environ")
            try:
                if b"RANK=1\0" in environ.read_bytes() and list((tmp_path / "o").glob("*partial*")):
                    victim = pid
            except OSError:
                pass
        time.sleep(0.1)
    assert victim is not None, "rank 1 never started its video"
    os.kill(victim, signal.SIGKILL)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode != 0
    assert time.monotonic() - started < 240, "the run hung after a rank died"
    assert "rank      : 1" in stderr and "Signal 9 (SIGKILL)" in stderr, stderr[-2000:]


def _descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            queue += children
    return found


def test_a_camera_with_other_sources_is_refused(inputs):
    result = cli("predict", "0", str(inputs / "clip0.mp4"))
    assert result.returncode == 2 and "a camera or stream is segmented on its own" in result.stderr


def test_two_inputs_writing_one_name_are_refused_before_any_work(inputs, tmp_path):
    image = inputs / "frames" / "f1.png"
    copy = tmp_path / "f1.png"
    copy.write_bytes(image.read_bytes())
    listing = tmp_path / "list.txt"
    listing.write_text(f"# two frames of one name\n{image}\nf1.png\n")
    result = cli("predict", str(listing), "--model", "espnetv2_s0.5", "--out", str(tmp_path / "o"))
    assert result.returncode == 2 and "would both write f1_overlay.png" in result.stderr
    assert not (tmp_path / "o").exists()


def test_cpu_ranks_split_the_cores():
    code = "import torch; from seglite.sharing import share_cpu; print(share_cpu()); print(torch.get_num_threads())"
    env = {**ENV, "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "0"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    note, threads = result.stdout.strip().splitlines()
    cores = len(os.sched_getaffinity(0))
    assert int(threads) == max(1, cores // 2) and "2 processes on this machine share" in note


def test_data_check_and_stats_in_worker_processes_equal_one_process(city, tmp_path, monkeypatch):
    import shutil

    from seglite.data import check
    from seglite.data.datasets import load_dataset

    root = tmp_path / "city"
    shutil.copytree(city, root)
    label = sorted((root / "gtFine" / "val").glob("*/*_labelIds.png"))[3]
    cv2.imwrite(str(label), cv2.imread(str(label), cv2.IMREAD_UNCHANGED)[:10])  # a mask of the wrong size
    spec = load_dataset("cityscapes", root)
    results = {}
    for mode, threshold in (("one", 10**9), ("workers", 1)):
        monkeypatch.setattr(check, "PARALLEL_FROM", threshold)
        ticks = []
        reports = check.check_dataset(spec, progress=lambda ticks=ticks: ticks.append(1))
        summary = [(r.split, r.images, r.labelled, r.problems, dict(r.unmapped)) for r in reports]
        results[mode] = (summary, len(ticks), check.class_frequencies(spec, "train").tolist())
    assert results["workers"] == results["one"]
    assert any(label.name in problem for problem in results["one"][0][1][3]), results["one"][0]


@pytest.mark.slow  # CI's second step (-m slow)
def test_report_under_torchrun_gives_the_single_process_miou(city, weights, tmp_path):
    args = ["report", "--models", f"espnetv2_s0.5={weights}", "--data-root", str(city), "--size", "128x64"]
    args += ["--iters", "2", "--backend", "torch"]
    one = seglite(*args, "--out", str(tmp_path / "one"))
    many = torchrun(2, *args, "--out", str(tmp_path / "two"))
    assert one.returncode == 0 and many.returncode == 0, many.stderr[-3000:]
    rows = [json.loads((tmp_path / name / "report.json").read_text())["rows"][0] for name in ("one", "two")]
    assert rows[0]["miou"] == rows[1]["miou"] and rows[1]["eval_images"] == 7
    assert rows[1]["threads"] == len(os.sched_getaffinity(0))  # rank 0 timed with every core
