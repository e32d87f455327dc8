"""Nothing lost, nothing reported wrongly: each case runs the installed `seglite` console script in a subprocess
(real signals, a real full disk where the machine lets us mount a tiny tmpfs) and checks the exit code, the one
line it prints and what it leaves on disk."""

from __future__ import annotations

import json
import os
import re
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
from conftest import cli

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


def test_cpu_facts_read_x86_and_arm_cpuinfo():
    from seglite.devices import SPEED_FEATURES, cpu_description, cpu_info, parse_cpuinfo

    x86 = "processor\t: 0\nmodel name\t: AMD EPYC 9R14\nflags\t\t: fpu avx2 fma avx512f avx512_bf16 sse\n\n"
    arm = "processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd asimddp crc32\n\nModel\t\t: Raspberry Pi 5\n"
    assert parse_cpuinfo(x86) == ("AMD EPYC 9R14", frozenset({"fpu", "avx2", "fma", "avx512f", "avx512_bf16", "sse"}))
    assert parse_cpuinfo(arm) == ("Raspberry Pi 5", frozenset({"fp", "asimd", "asimddp", "crc32"}))
    model, flags = cpu_info()
    line = cpu_description()
    assert line.startswith(model) and all(name in line.split() for name in SPEED_FEATURES if name in flags)


def test_cache_sizes_read_from_sysfs(tmp_path):
    from seglite.devices import cpu_cache_bytes, parse_cache_size

    assert [parse_cache_size(t) for t in ("2048K", "1M\n", "32768")] == [2 << 20, 1 << 20, 32768]
    for index, (level, kind, size) in enumerate([(1, "Data", "48K"), (1, "Instruction", "32K"), (2, "Unified", "1M")]):
        folder = tmp_path / f"index{index}"
        folder.mkdir()
        for name, value in (("level", level), ("type", kind), ("size", size)):
            (folder / name).write_text(f"{value}\n")
    assert cpu_cache_bytes(1, str(tmp_path)) == 48 << 10 and cpu_cache_bytes(2, str(tmp_path)) == 1 << 20
    assert cpu_cache_bytes(3, str(tmp_path)) is None and cpu_cache_bytes(2, str(tmp_path / "none")) is None


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


def _ctrl_c_once_writing(
    source: str, options: list[str], out: Path, partial: str, after: float, stop: int = signal.SIGINT
) -> str:
    """Run `predict SOURCE`, press Ctrl-C (or send `stop`) `after` seconds into writing `partial`; its stderr (skips
    if it ended first)."""
    child = subprocess.Popen(
        [SEGLITE, "predict", source, *options, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None and not list(out.glob(partial)):
        time.sleep(0.02)
    time.sleep(after)
    child.send_signal(stop)
    _, err = child.communicate(timeout=120)
    if child.returncode == 0:
        pytest.skip(f"{source} was done before the signal arrived")
    assert child.returncode == 130, err
    return err


@pytest.mark.parametrize(
    "stop",
    [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],  # slow: 5 s, the same path once in
    ids=["ctrl-c", "sigterm"],
)
def test_ctrl_c_during_video_exits_130_and_keeps_a_partial_file_named_so(video, tmp_path, stop):
    out = tmp_path / "out"
    slow = [*TINY[:-1], "640x384"]  # seconds, not a fraction of one: the signal lands mid-video
    err = _ctrl_c_once_writing(str(video), slow, out, "drive_overlay.partial-*.mp4", after=0.3, stop=stop)
    assert "interrupted after" in err and "drive_overlay.partial.mp4 (incomplete)" in err
    assert not (out / "drive_overlay.mp4").exists() and (out / "drive_overlay.partial.mp4").exists()
    assert not list(out.glob("*.partial-*")), "the process's own temporary name was left beside the kept file"


@pytest.mark.slow  # 8 s; the default run covers a stream's end by the window (test_viewer)
def test_ctrl_c_ends_a_stream_with_a_whole_recording_and_exits_130(tmp_path):
    """A camera or stream has no end of its own: Ctrl-C is how it ends, and what was recorded is not 'partial'."""
    video = write_video(tmp_path / "long.mp4", frames=300, size=(160, 96), fps=10.0)
    out = tmp_path / "out"
    # (every frame queued: a file read as a stream comes faster than the model, and would be over at once)
    stream = _ctrl_c_once_writing(f"file://{video}", [*TINY, "--no-realtime"], out, "stream_overlay.partial-*.mp4", 0.5)
    message = one_line(stream)
    frames = int(re.search(r"interrupted after (\d+) frame\(s\) of file://", message).group(1))
    assert f"wrote {out / 'stream_overlay.mp4'} (a camera or stream ends where it is stopped)" in message
    assert 0 < frames < 300 and not list(out.glob("*partial*")), list(out.iterdir())
    assert cv2.VideoCapture(str(out / "stream_overlay.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == frames


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
    result = cli("predict", str(image), "--model", "espnetv2_s0.5", "--device", "cpu", "--size", "100000x100000")
    assert result.returncode == 2
    assert "--size 100000x100000: needs at least" in one_line(result.stderr)


def test_a_camera_that_does_not_open_is_named_as_such(tmp_path):
    result = cli("predict", "97", *TINY, "--out", str(tmp_path))
    assert result.returncode == 2 and "camera 97: cannot be opened" in one_line(result.stderr)


def _train(data: Path, out: Path, *extra: str) -> list[str]:
    sets = ["data.crop=[128,64]", "data.val_size=[128,64]", "data.workers=0", "batch_size=2", "val_every=1000"]
    args = [SEGLITE, "train", "configs/synth_espnetv2_s0.5.yaml", "--data-root", str(data), "--out", str(out)]
    for item in sets:
        args += ["--set", item]
    return [*args, *extra]


@pytest.mark.slow  # CI's second step (-m slow)
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


@pytest.mark.slow  # CI's second step (-m slow); tests/test_training.py checks the resume in the default run
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
    # The path came from the user and could not be created at all: the user's to change (2), not the machine's.
    assert result.returncode == 2 and "cannot create this folder" in one_line(result.stderr)


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
    report = (tmp_path / "r" / "report.md").read_text()
    assert "cityscapes val, 2 images" in report
    # The machine in words, as the benchmark table says it (it was a Python dict)
    machine = json.loads((tmp_path / "r" / "report.json").read_text())["machine"]
    assert f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['threads']} threads" in report
    assert f"; torch {machine['torch']}, Python {machine['python']}" in report and "{'cpu'" not in report


def test_weights_list_never_cuts_the_names_you_type():
    from seglite.zoo.registry import list_zoo

    result = subprocess.run([SEGLITE, "weights", "list"], capture_output=True, text=True, env={**ENV, "COLUMNS": "80"})
    assert result.returncode == 0
    for entry in list_zoo():
        assert entry.name in result.stdout, entry.name
    # Piped without COLUMNS (a file, a CI log): no cell is cut to fit 80 columns.
    piped = subprocess.run(
        [SEGLITE, "weights", "list"],
        capture_output=True,
        text=True,
        env={k: v for k, v in ENV.items() if k != "COLUMNS"},
    )
    assert piped.returncode == 0 and "reported mIoU" in piped.stdout and "…" not in piped.stdout


def _train_cmd(data: Path, out: Path | None, *extra: str) -> list[str]:
    sets = ["data.crop=[128,64]", "data.val_size=[128,64]", "data.workers=0", "batch_size=2", "schedule.iters=2"]
    args = [SEGLITE, "train", str(Path(__file__).parents[1] / "configs" / "synth_espnetv2_s0.5.yaml")]
    args += ["--data-root", str(data), *(["--out", str(out)] if out else [])]
    for item in [*sets, "fused_norm=false"]:
        args += ["--set", item]
    return [*args, *extra]


@pytest.mark.slow  # 29 s: four trainings
def test_a_finished_run_is_never_trained_over_without_being_asked(data, tmp_path):
    first = subprocess.run(_train_cmd(data, None), capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert first.returncode == 0 and (tmp_path / "runs" / "train" / "best.pt").is_file(), first.stderr
    kept = (tmp_path / "runs" / "train" / "best.pt").read_bytes()
    # The default --out never overwrites: the next run goes to runs/train2 and says so.
    second = subprocess.run(_train_cmd(data, None), capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert second.returncode == 0 and "run folder: runs/train2" in second.stderr, second.stderr
    assert (tmp_path / "runs" / "train2" / "best.pt").is_file()
    # Naming the finished run's folder: one line saying what is there and the three ways on; nothing touched.
    again = subprocess.run(
        _train_cmd(data, tmp_path / "runs" / "train"), capture_output=True, text=True, env=ENV, cwd=tmp_path
    )
    assert again.returncode == 2, again.stderr
    line = one_line(again.stderr)
    assert "holds a finished run (last.pt at iteration 2 of 2, best val mIoU" in line
    assert all(way in line for way in ("--resume", "another --out", "--exist-ok")), line
    assert (tmp_path / "runs" / "train" / "best.pt").read_bytes() == kept
    # On purpose: --exist-ok trains afresh there, and the old log is not mixed into the new one.
    forced = subprocess.run(
        _train_cmd(data, tmp_path / "runs" / "train", "--exist-ok", "--set", "seed=5"),
        capture_output=True, text=True, env=ENV, cwd=tmp_path,
    )  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    assert (tmp_path / "runs" / "train" / "best.pt").read_bytes() != kept
    log = (tmp_path / "runs" / "train" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["iteration"] for line in log if "loss" in line] == [1, 2]
    # --resume without --out continues the newest run.
    resumed = run("train", "--resume", "--set", "schedule.iters=3", cwd=tmp_path)
    assert resumed.returncode == 0 and "finished at iteration 3" in resumed.stdout, resumed.stderr
    assert "resuming the newest run, runs/train" in resumed.stderr


def test_disk_full_while_training_writes_a_checkpoint_is_the_machines_failure(data, tiny_disk):
    result = subprocess.run(_train_cmd(data, tiny_disk / "run"), capture_output=True, text=True, env=ENV)
    assert result.returncode == 1, result.stderr
    line = one_line(result.stderr)
    assert "No space left on device" in line and "is intact" in line and "checkpoint" in line
    assert not [p for p in (tiny_disk / "run").iterdir() if p.name.endswith(".tmp")], "a temporary file was left"


def test_two_predicts_on_one_output_both_succeed(video, tmp_path):
    out = tmp_path / "out"
    children = [
        subprocess.Popen(
            [SEGLITE, "predict", str(video), *TINY, "--out", str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )  # fmt: skip
        for _ in range(2)
    ]
    results = [(*child.communicate(timeout=300), child.returncode) for child in children]
    for stdout, stderr, code in results:
        assert code == 0, stderr
        assert f"wrote {out / 'drive_overlay.mp4'}" in stdout
    capture = cv2.VideoCapture(str(out / "drive_overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 40
    capture.release()
    assert sorted(p.name for p in out.iterdir()) == ["drive_overlay.mp4"], "a temporary file was left behind"


@pytest.mark.slow  # 15 s of subprocesses
def test_earlier_predictions_are_never_replaced_without_being_asked(tmp_path):
    image = tmp_path / "street.png"
    cv2.imwrite(str(image), render_scene(160, 96, seed=4)[0])
    first = run("predict", str(image), *TINY, "--format", "color", cwd=tmp_path)
    assert first.returncode == 0 and (tmp_path / "outputs" / "predict" / "street_color.png").is_file()
    # Default folder: the next free one. A named folder: refused, unless --exist-ok.
    second = run("predict", str(image), *TINY, "--format", "color", cwd=tmp_path)
    assert second.returncode == 0 and (tmp_path / "outputs" / "predict2" / "street_color.png").is_file()
    named = run("predict", str(image), *TINY, "--format", "color", "--out", "outputs/predict", cwd=tmp_path)
    assert named.returncode == 2
    assert "street_color.png: already exists; pass another --out, or --exist-ok" in one_line(named.stderr)
    forced = run(
        "predict", str(image), *TINY, "--format", "color", "--out", "outputs/predict", "--exist-ok", cwd=tmp_path
    )
    assert forced.returncode == 0, forced.stderr


@pytest.mark.slow  # 11 s: two exports; predict's full-disk tests stay in the default run
def test_export_refuses_to_replace_and_a_full_disk_is_the_machines(tmp_path, tiny_disk):
    target = tmp_path / "tiny.onnx"
    target.write_bytes(b"an earlier export")
    refused = run("export", "--model", "espnetv2_s0.5", "--size", "128x64", "--out", str(target))
    assert refused.returncode == 2 and "--exist-ok" in one_line(refused.stderr)
    assert target.read_bytes() == b"an earlier export"
    full = run("export", "--model", "espnetv2_s0.5", "--size", "128x64", "--out", str(tiny_disk / "tiny.onnx"))
    assert full.returncode == 1 and "No space left on device" in one_line(full.stderr)
    assert not list(tiny_disk.iterdir()), "a temporary file was left behind"


@pytest.mark.slow  # 10 s; export's twin stays in the default run
def test_report_refuses_to_replace_and_a_full_disk_is_the_machines(tmp_path, tiny_disk):
    args = ("report", "--models", "espnetv2_s0.5", "--size", "64x32", "--iters", "1", "--backend", "torch")
    full = run(*args, "--out", str(tiny_disk))
    assert full.returncode == 1 and "No space left on device" in one_line(full.stderr), full.stderr
    assert not [p for p in tiny_disk.iterdir() if p.name.startswith(".")], "a temporary file was left behind"
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.md").write_text("an earlier report")  # refused before any model loads
    refused = run(*args, "--out", str(tmp_path / "report"))
    assert refused.returncode == 2 and "report.md: already exists" in one_line(refused.stderr)
    assert (tmp_path / "report" / "report.md").read_text() == "an earlier report"
