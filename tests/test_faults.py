"""Nothing lost, nothing reported wrongly: each case runs the installed `seglite` console script in a subprocess
(real signals, a real full disk where the machine lets us mount a tiny tmpfs) and checks the exit code, the one
line it prints and what it leaves on disk."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from seglite.data.synth import render_scene, write_dataset, write_video

SEGLITE = shutil.which("seglite") or str(Path(sys.executable).parent / "seglite")
TINY = ["--model", "espnetv2_s0.5", "--device", "cpu", "--backend", "torch", "--size", "128x64"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([SEGLITE, *args], capture_output=True, text=True, env=ENV, **kwargs)


def one_line(stderr: str) -> str:
    """The one error line (progress and information lines may precede it); never a traceback."""
    lines = [line for line in stderr.splitlines() if line.startswith(("error:", "interrupted"))]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("v") / "drive.mp4", frames=40, size=(320, 192), fps=10.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synth"), train=6, val=2, size=(192, 96), seed=3)


@pytest.fixture
def tiny_disk(tmp_path):
    """64 kB: below the smallest overlay video of the tests (a random net that paints one class everywhere gives
    ~120 kB; at 200 kB it sometimes fitted and the full-disk test passed through)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root): the full-disk case is not exercised")
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_version_and_doctor():
    assert run("--version").stdout.startswith("seglite ")
    result = run("doctor")
    assert result.returncode == 0
    for needle in ("torch:", "onnxruntime_providers", "bf16 (--half on CPU)", "SEGLITE_HOME"):
        assert needle in result.stdout, result.stdout


def test_full_disk_during_video_fails_and_leaves_nothing(video, tiny_disk):
    result = run("predict", str(video), *TINY, "--out", str(tiny_disk))
    assert result.returncode == 1, result.stderr
    line = one_line(result.stderr)
    assert "could not be written completely" in line and "nothing was kept" in line
    assert not list(tiny_disk.glob("*.mp4")), list(tiny_disk.iterdir())


def test_full_disk_for_images_is_a_failure_not_a_user_error(tmp_path, tiny_disk):
    image = tmp_path / "big.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (400, 600, 3), dtype=np.uint8))
    result = run("predict", str(image), *TINY, "--out", str(tiny_disk), "--format", "overlay,color")
    assert result.returncode == 1 and "could not be written" in one_line(result.stderr)
    assert not [p for p in tiny_disk.iterdir() if p.name.startswith(".")], "a temporary file was left behind"


def test_ctrl_c_during_video_exits_130_and_keeps_a_partial_file_named_so(video, tmp_path):
    out = tmp_path / "out"
    child = subprocess.Popen(
        [SEGLITE, "predict", str(video), *TINY, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "drive_overlay.partial.mp4").exists():
        time.sleep(0.05)
    time.sleep(0.3)
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=120)
    if child.returncode == 0:
        pytest.skip("the video finished before the signal arrived")
    assert child.returncode == 130, err
    assert "interrupted after" in err and "drive_overlay.partial.mp4 (incomplete)" in err
    assert not (out / "drive_overlay.mp4").exists() and (out / "drive_overlay.partial.mp4").exists()


def test_equal_names_in_a_folder_never_overwrite(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / "in" / sub).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "in" / sub / "x.png"), render_scene(160, 96, seed=ord(sub))[0])
    result = run("predict", str(tmp_path / "in"), *TINY, "--out", str(tmp_path / "out"), "--format", "color")
    assert result.returncode == 0, result.stderr
    assert "2 of 2 image(s) segmented; 2 file(s) written" in result.stdout
    assert (tmp_path / "out" / "a" / "x_color.png").is_file() and (tmp_path / "out" / "b" / "x_color.png").is_file()


def test_a_tiny_image_is_reported_and_the_folder_goes_on(tmp_path):
    (tmp_path / "in").mkdir()
    cv2.imwrite(str(tmp_path / "in" / "a_dot.png"), np.zeros((1, 1, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "in" / "b_street.png"), render_scene(160, 96, seed=1)[0])
    result = run("predict", str(tmp_path / "in"), *TINY, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "a_dot.png: 1x1 is too small to segment (at least 8x8 pixels)" in result.stderr
    assert (tmp_path / "out" / "b_street_overlay.png").is_file()


def test_a_huge_size_is_refused_before_allocating(tmp_path):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), render_scene(160, 96, seed=1)[0])
    result = run("predict", str(image), "--model", "espnetv2_s0.5", "--device", "cpu", "--size", "100000x100000")
    assert result.returncode == 2
    assert "--size 100000x100000: needs at least" in one_line(result.stderr)


def test_a_camera_that_does_not_open_is_named_as_such(tmp_path):
    result = run("predict", "97", *TINY, "--out", str(tmp_path))
    assert result.returncode == 2 and "camera 97: cannot be opened" in one_line(result.stderr)


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    sets = ["data.crop=[128,64]", "data.val_size=[128,64]", "data.workers=0", "batch_size=2", "val_every=1000"]
    args = [SEGLITE, "train", "configs/synth_espnetv2_s0.5.yaml", "--data-root", str(data), "--out", str(out)]
    for item in sets:
        args += ["--set", item]
    return [*args, *extra]


def test_resume_continues_the_run_as_it_was_started(data, tmp_path):
    out = tmp_path / "run"
    first = subprocess.run(
        _train(data, out, "--set", "schedule.iters=3", "--set", "ckpt_every=1"), capture_output=True, text=True, env=ENV
    )
    assert first.returncode == 0, first.stderr
    # No recipe: the run's own settings (3 iterations, not the recipe's 600) come from last.pt.
    again = run("train", "--out", str(out), "--resume")
    assert again.returncode == 0 and "finished at iteration 3" in again.stdout, again.stdout + again.stderr
    other = run("train", "--out", str(out), "--resume", "--data-root", str(tmp_path))
    assert other.returncode == 2 and "was trained with data.root=" in one_line(other.stderr)
    more = run("train", "--out", str(out), "--resume", "--set", "schedule.iters=4")
    assert more.returncode == 0 and "finished at iteration 4" in more.stdout, more.stderr
    assert "warning: resuming with schedule.iters=4; the run was started with 3" in more.stderr


def test_interrupted_training_exits_130_with_a_hint_that_works(data, tmp_path):
    out = tmp_path / "run"
    child = subprocess.Popen(
        _train(data, out, "--set", "schedule.iters=200", "--set", "ckpt_every=1000"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "metrics.jsonl").exists():
        time.sleep(0.05)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr
    hint = f"seglite train --out {out} --resume"
    assert hint in stdout + stderr
    resumed = run("train", "--out", str(out), "--resume", "--set", "schedule.iters=3")
    assert resumed.returncode == 0, resumed.stderr


def test_train_on_a_read_only_place_is_one_line(data, tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(mount)], capture_output=True
    ).returncode:
        pytest.skip("cannot mount a read-only tmpfs here (needs root)")
    try:
        result = subprocess.run(_train(data, mount / "run"), capture_output=True, text=True, env=ENV)
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)
    assert result.returncode in (1, 2) and "cannot write" in one_line(result.stderr)


def test_the_generated_city_is_the_same_in_every_process(tmp_path):
    code = "import sys; from seglite.data.synth import write_dataset; write_dataset(sys.argv[1], 1, 1, (96, 48))"
    for name, seed in (("a", "1"), ("b", "2")):
        subprocess.run(
            [sys.executable, "-c", code, str(tmp_path / name)], env={**ENV, "PYTHONHASHSEED": seed}, check=True
        )
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)


def test_eval_refuses_a_label_value_that_train_refuses(data, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(data, root)
    label = next((root / "gtFine" / "val").rglob("*_labelIds.png"))
    ids = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    ids[0, 0] = 200
    cv2.imwrite(str(label), ids)
    result = run("eval", *TINY, "--data-root", str(root))
    assert result.returncode == 2 and "label value 200 is not a Cityscapes class id" in one_line(result.stderr)


def test_report_says_what_each_miou_was_measured_on(tmp_path, data):
    import json

    import seglite
    from seglite.data.labels import CLASS_NAMES
    from seglite.zoo.checkpoint import LoadedWeights, save_checkpoint
    from seglite.zoo.preprocess import IMAGENET

    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    save_checkpoint(
        weights,
        LoadedWeights(seglite.create_model("espnetv2_s0.5"), "espnetv2_s0.5", CLASS_NAMES,
                      IMAGENET.with_size((192, 96)), "test"),
    )  # fmt: skip
    result = run("report", "--models", f"espnetv2_s0.5={weights}", "--data-root", str(data), "--out",
                 str(tmp_path / "r"), "--iters", "2", "--backend", "torch")  # fmt: skip
    assert result.returncode == 0, result.stderr
    row = json.loads((tmp_path / "r" / "report.json").read_text())["rows"][0]
    assert row["dataset"] == "cityscapes" and row["split"] == "val" and row["eval_images"] == 2
    assert "cityscapes val, 2 images" in (tmp_path / "r" / "report.md").read_text()


def test_weights_list_never_cuts_the_names_you_type():
    from seglite.zoo.registry import list_zoo

    result = subprocess.run([SEGLITE, "weights", "list"], capture_output=True, text=True, env={**ENV, "COLUMNS": "80"})
    assert result.returncode == 0
    for entry in list_zoo():
        assert entry.name in result.stdout, entry.name
