"""Training: config validation, exact resume after a real SIGTERM, torchrun with 2 processes, bad data."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from conftest import LARGE_TENSOR_PAGES, TINY_TRAIN, cli, large_tensor_page_faults

from seglite.data.synth import write_dataset
from seglite.errors import ConfigError
from seglite.training.config import find_recipe, load_config
from seglite.training.schedule import poly_lr_factor

TINY = [
    *TINY_TRAIN,
    "amp=bf16",  # a fixed precision (auto would time both): the resume and torchrun tests run the bf16 path
]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("synth"), train=6, val=2, size=(192, 96), seed=11)


def _train_args(data: Path, out: Path, *sets: str) -> list[str]:
    """`seglite train` arguments for the tiny CPU recipe (after the launcher)."""
    args = ["-m", "seglite", "train", "configs/synth_espnetv2_s0.5.yaml", "--data-root", str(data), "--out", str(out)]
    for item in (*TINY, *sets):
        args += ["--set", item]
    return args


def _train(data: Path, out: Path, *sets: str, resume: bool = False, wait: bool = True):
    args = [sys.executable, *_train_args(data, out, *sets)]
    if resume:
        args.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    return subprocess.run(args, capture_output=True, text=True, env=env)


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def test_poly_schedule_with_warmup():
    assert poly_lr_factor(0, 100) == 1.0 and poly_lr_factor(100, 100) == 0.0
    assert poly_lr_factor(50, 100, power=1.0) == pytest.approx(0.5)
    assert poly_lr_factor(0, 100, warmup_iters=10, warmup_ratio=0.1) == pytest.approx(0.1)
    assert poly_lr_factor(5, 100, power=1.0, warmup_iters=10, warmup_ratio=0.0) == pytest.approx(0.5 * 0.95)


def test_recipes_in_configs_load():
    for path in sorted(Path("configs").glob("*.yaml")):
        load_config(path)


def test_sizes_take_the_command_lines_spelling_and_null_empties_a_mapping():
    config = load_config("synth_espnetv2_s0.5", ["data.crop=512x256", "data.val_size=640X320", "class_map=null"])
    assert config.data.crop == [512, 256] and config.data.val_size == [640, 320] and config.class_map == {}
    with pytest.raises(ConfigError, match="'data.scale_range': expected a list, got '1x2'"):
        load_config("synth_espnetv2_s0.5", ["data.scale_range=1x2"])  # not a size: no WxH spelling


def test_print_config_shows_every_key_of_the_effective_recipe_and_trains_nothing(tmp_path):
    import yaml

    args = ("train", "synth_espnetv2_s0.5", "--set", "data.crop=96x64", "--init", "espnetv2_s0.5_cityscapes_1024x512")
    result = cli(*args, "--out", str(tmp_path / "run"), "--print-config")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    assert (
        printed
        == load_config("synth_espnetv2_s0.5", ["data.crop=96x64", "init=espnetv2_s0.5_cityscapes_1024x512"]).to_dict()
    )
    assert printed["data"]["crop"] == [96, 64] and "schedule" in printed and not (tmp_path / "run").exists()
    (tmp_path / "printed.yaml").write_text(result.stdout)  # a recipe as it stands
    assert load_config(tmp_path / "printed.yaml").to_dict() == printed


def test_an_error_keeps_its_bracketed_text(tmp_path):
    """Rich took "[min, max]" in a message for a style tag and printed "expected  with 0 < min <= max"."""
    result = cli("train", "synth_espnetv2_s0.5", "--set", "data.scale_range=[1.5,0.5]", "--out", str(tmp_path / "r"))
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "error: config key 'data.scale_range': expected [min, max] with 0 < min <= max"
    assert not (tmp_path / "r").exists()


def test_a_recipe_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    shipped = Path("configs/synth_espnetv2_s0.5.yaml").resolve()
    monkeypatch.chdir(tmp_path)
    for text in ("synth_espnetv2_s0.5", "synth_espnetv2_s0.5.yaml", "configs/synth_espnetv2_s0.5.yaml"):
        assert find_recipe(text) == shipped
    assert load_config("synth_espnetv2_s0.5").model == "espnetv2_s0.5"
    with pytest.raises(ConfigError, match=r"synth_espnetv2_s05: no such recipe; did you mean synth_espnetv2_s0.5"):
        find_recipe("synth_espnetv2_s05")
    with pytest.raises(ConfigError, match=r"mine.yaml: no such config file \(seglite's are in .*configs\)"):
        find_recipe("mine.yaml")


def test_a_recipe_typo_is_one_line_before_any_run_folder(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "seglite", "train", "camvid_espnetv2_s05_finetune"],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "did you mean camvid_espnetv2_s0.5_finetune" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_no_recipe_trains_own_data_with_the_guides_recipe_and_names_one_for_cityscapes(tmp_path):
    (tmp_path / "mine.yaml").write_text("path: .\ntrain: images\nmasks_dir: {images: masks}\nnames: [a, b]\n")
    result = subprocess.run(
        [sys.executable, "-m", "seglite", "train", "--data", "mine.yaml"], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 2 and not (tmp_path / "runs").exists(), result.stderr
    # Own frames train with the own-data guide's recipe, said in a line (here the empty data set stops it).
    assert result.stderr.startswith(
        "no recipe: camvid_espnetv2_s1.0_finetune (fine-tunes the published Cityscapes ESPNetv2 s1.0 in CPU minutes, "
        "classes linked by name; pass a recipe for another"
    ), result.stderr
    assert "error: " in result.stderr and "images" in result.stderr.splitlines()[-1]
    shown = subprocess.run([sys.executable, "-m", "seglite", "train", "--data", "mine.yaml", "--print-config",
                            "--set", "schedule.iters=7"], capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    config = yaml.safe_load(shown.stdout)
    assert (config["model"], config["class_map"], config["data"]["dataset"]) == ("espnetv2_s1.0", {}, "mine.yaml")
    assert config["schedule"]["iters"] == 7
    from seglite.cli.train import _which_recipe

    assert "espnetv2_s2.0 (Cityscapes" in _which_recipe(None) and "--set class_map" not in _which_recipe("camvid")


def test_data_workers_are_capped_at_the_cpus_here(data, tmp_path):
    """The Cityscapes recipes ask for 8 loader processes; on a small CPU they would only fight the training."""
    result = _train(data, tmp_path / "run", "schedule.iters=1", "data.workers=64")
    assert result.returncode == 0, result.stderr
    cpus = len(os.sched_getaffinity(0))
    assert f"data.workers 64 -> {cpus}: {cpus} CPUs here" in result.stdout
    assert "worker processes in total" not in result.stderr + result.stdout


def test_a_log_file_gets_a_progress_line_every_log_every_iterations(data, tmp_path):
    """`nohup seglite train ... > train.log`: a bar is drawn only at the end there, so lines say how far it is."""
    result = _train(data, tmp_path / "run", "schedule.iters=5", "log_every=2")  # stdout is a pipe, not a terminal
    assert result.returncode == 0, result.stderr
    progress = [line for line in result.stdout.splitlines() if re.match(r"iteration \d+/5: ", line)]
    assert [line.split(":")[0] for line in progress] == ["iteration 2/5", "iteration 4/5", "iteration 5/5"]
    assert all(re.search(r"loss \d+\.\d{3} lr [\d.e+-]+ [\d.]+ img/s, \d+:\d\d:\d\d left$", line) for line in progress)
    assert "━" not in result.stdout  # no bar drawn at the end
    run = tmp_path / "run"
    assert result.stdout.splitlines()[-1] == (  # what to do with it: each verb takes the run folder
        f"next: seglite eval --weights {run} | seglite predict IMAGES_OR_VIDEO --weights {run} | "
        f"seglite export --weights {run} --format onnx"
    )
    # Runs are counted in iterations: the first line says what the data set is and what they come to in epochs.
    assert (
        f"({data}): 6 train and 2 val images; 5 iterations of 2 images = 1.67 epochs" in result.stdout.splitlines()[0]
    )


@pytest.mark.parametrize(
    ("sets", "needle"),
    [
        (["optim.lrr=1"], "optim.lrr"),
        (["batch_size=two"], "batch_size"),
        (["amp=fp8"], "amp"),
        (["val_every=0"], "val_every"),  # was a ZeroDivisionError after the first iteration
    ],
)
def test_config_mistakes_are_one_line(data, tmp_path, sets, needle):
    result = _train(data, tmp_path / "run", *sets)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("lr", r"did you mean 'optim.lr'\?"),  # a key of a section, set at the top
        ("iters", r"did you mean 'schedule.iters'\?"),
        ("optim.lrr", r"did you mean 'optim.lr'\?"),  # a typo within a section, spelled out to paste
        ("optim.iters", r"did you mean 'schedule.iters'\?"),  # the right key in the wrong section
        ("batchsize", r"did you mean 'batch_size'\?"),
        (
            "epochs",
            r"a run.s length is counted in iterations: set schedule.iters",
        ),  # there are no epochs; it suggested 'preprocess'
    ],
)
def test_an_unknown_key_names_the_key_meant(key, meant):
    with pytest.raises(ConfigError, match=rf"unknown config key '{re.escape(key)}'; {meant}"):
        load_config("synth_espnetv2_s0.5", [f"{key}=1"])


@pytest.mark.slow  # 22 s: three trainings
def test_interrupted_then_resumed_equals_uninterrupted(data, tmp_path):
    straight = _train(data, tmp_path / "a", "schedule.iters=8", "ckpt_every=2")
    assert straight.returncode == 0, straight.stderr

    run = _train(data, tmp_path / "b", "schedule.iters=8", "ckpt_every=2", wait=False)
    metrics = tmp_path / "b" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and run.poll() is None:
        if metrics.exists() and any(
            json.loads(line).get("iteration", 0) >= 3 for line in metrics.read_text().splitlines()
        ):
            run.send_signal(signal.SIGTERM)
            break
        time.sleep(0.05)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 130, err  # interrupted, last.pt written: not a success
    stopped = torch.load(tmp_path / "b" / "last.pt", map_location="cpu", weights_only=True)["iteration"]
    assert 3 <= stopped < 8, out + err
    assert "--resume" in out + err

    resumed = _train(data, tmp_path / "b", "schedule.iters=8", "ckpt_every=2", resume=True)
    assert resumed.returncode == 0, resumed.stderr
    a, b = _weights(tmp_path / "a" / "last.pt"), _weights(tmp_path / "b" / "last.pt")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    assert (tmp_path / "a" / "best.pt").is_file()


def test_torchrun_two_processes_on_cpu(data, tmp_path):
    out = tmp_path / "ddp"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29571"]
    args = launcher + _train_args(data, out, "schedule.iters=3", "batch_size=4")
    result = subprocess.run(
        args, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["iteration"] == 3
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in lines if "loss" in r] == [1, 2, 3]  # rank 0 alone writes


def test_broken_dataset_never_starts_training(data, tmp_path):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(data, root)
    label = sorted((root / "gtFine" / "train").glob("*/*_labelIds.png"))[0]
    values = cv2.imread(str(label), cv2.IMREAD_UNCHANGED)
    values[0, 0] = 77  # not a Cityscapes id
    cv2.imwrite(str(label), values)
    result = _train(root, tmp_path / "run", "schedule.iters=2")
    assert result.returncode != 0 and label.name in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("damage", ["no label", "wrong size", "unreadable image", "missing root"])
def test_dataset_damage_is_named(data, tmp_path, damage):
    import shutil

    root = tmp_path / "d"
    if damage != "missing root":
        shutil.copytree(data, root)
    image = sorted((root / "leftImg8bit" / "train").glob("*/*.png"))[0] if damage != "missing root" else None
    if damage == "no label":
        next((root / "gtFine" / "train").glob(f"*/{image.name.replace('_leftImg8bit', '_gtFine_labelIds')}")).unlink()
    elif damage == "wrong size":
        label = sorted((root / "gtFine" / "train").glob("*/*_labelIds.png"))[0]
        cv2.imwrite(str(label), np.zeros((10, 10), np.uint8))
        image = label
    elif damage == "unreadable image":
        image.write_bytes(b"broken")
    result = _train(root, tmp_path / "run", "schedule.iters=2")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (image.name if image else str(root)) in result.stderr, result.stderr


@pytest.mark.slow  # CI's second step (-m slow)
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data, tmp_path):
    good = _train(data, tmp_path / "run", "schedule.iters=2", "ckpt_every=1")
    assert good.returncode == 0, good.stderr
    before = (tmp_path / "run" / "last.pt").read_bytes()
    bad = _train(data, tmp_path / "run", "schedule.iters=4", "ckpt_every=1", "optim.lr=1e30", resume=True)
    assert bad.returncode != 0 and "loss is" in bad.stderr and "Traceback" not in bad.stderr
    ckpt = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    assert ckpt["iteration"] >= 2 and len(before) > 0


def test_data_stats_espnet_weights(data):
    result = subprocess.run(
        [sys.executable, "-m", "seglite", "data", "stats", str(data), "--json"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert len(rows) == 19 and sum(r["frequency"] for r in rows) == pytest.approx(1.0)
    for r in rows:
        assert r["espnet_weight"] == pytest.approx(1 / np.log(1.10 + r["frequency"]))


def test_training_weighs_classes_as_data_stats_prints(data, tmp_path):
    """The trainer takes the class weights from its data check's pixel counts; `data stats` reads the masks anew."""
    from seglite.training.trainer import Trainer

    result = subprocess.run(
        [sys.executable, "-m", "seglite", "data", "stats", str(data), "--json"], capture_output=True, text=True
    )
    printed = [row["espnet_weight"] for row in json.loads(result.stdout)]
    config = load_config("configs/synth_espnetv2_s0.5.yaml", [*TINY, f"data.root={data}", "loss.class_weights=espnet"])
    trainer = Trainer(config, tmp_path / "run", show_progress=False)
    trainer._check_data()
    trainer._build()
    np.testing.assert_allclose(trainer.criterion.class_weights.numpy(), printed, rtol=1e-6)


def test_a_cpu_recipe_on_a_machine_with_a_gpu_says_how_to_use_it(data, tmp_path, monkeypatch):
    """The CamVid and synth recipes pin device: cpu (sized for small machines); on a GPU box that is said."""
    from seglite.training.trainer import Trainer

    config = load_config("configs/synth_espnetv2_s0.5.yaml", [*TINY, f"data.root={data}"])
    assert Trainer(config, tmp_path / "a", show_progress=False).messages == []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trainer = Trainer(config, tmp_path / "b", show_progress=False)
    assert trainer.device.type == "cpu"
    assert trainer.messages == ["device: cpu, as the recipe says; a CUDA GPU is here: --set device=auto trains on it"]


def test_a_recipe_meant_for_other_frames_is_told_its_scale_and_shape():
    from seglite.training.trainer import scale_notes

    synth = load_config("configs/synth_espnetv2_s0.5.yaml").data  # validates 512x256 frames at 512x256
    notes = scale_notes((2048, 1024), (2048, 1024), synth)  # ... given Cityscapes' own frames
    assert len(notes) == 1 and "(0.25x the 2048-pixel-wide training frames), training at 0.75-1.25x" in notes[0]
    assert "set data.scale_range near [0.19, 0.31] or data.val_size" in notes[0]
    cityscapes = load_config("configs/espnetv2_s0.5.yaml").data  # val_size 1024x512, scale 0.35-1.0
    notes = scale_notes((480, 360), (480, 360), cityscapes)  # ... given CamVid's frames
    assert "2.13x" in notes[0] and notes[2].startswith("aspect: val_size 1024x512 stretches the 480x360 frames by 1.50")
    assert notes[1].startswith("crop: data.crop 1024x512 is larger than the 480x360 training frames at their largest")
    assert scale_notes((1280, 720), (1280, 720), cityscapes) == []  # 0.8x: inside the range, same 16:9-ish shape
    camvid = load_config("camvid_espnetv2_s0.5_finetune").data  # 384x288 crops of 480x360 frames at 0.75-1.5x
    assert scale_notes((480, 360), (480, 360), camvid) == []
    notes = scale_notes((200, 150), (200, 150), camvid)  # small frames: at 1.5x still 300x225, most of a crop pads
    assert notes == [
        "crop: data.crop 384x288 is larger than the 200x150 training frames at their largest scale (300x225): the "
        "rest of each crop is padding that costs time and teaches nothing; set data.crop=[192, 144] (or a "
        "data.scale_range that reaches it)"
    ]
    # Large frames (a phone's 4032x3024): a crop sees a sliver of each; the sizes that show whole scenes, which
    # then raise no note of their own.
    notes = scale_notes((4032, 3024), (4032, 3024), camvid)
    assert len(notes) == 1 and notes[0].startswith("crop: a 384x288 crop sees 1/124 of a 4032x3024 training frame")
    assert notes[0].endswith("set data.val_size=[768, 576] and data.scale_range=[0.14, 0.29] (or a larger data.crop, "
                             "where small details matter)")  # fmt: skip
    camvid.val_size, camvid.scale_range = [768, 576], [0.14, 0.29]
    assert scale_notes((4032, 3024), (4032, 3024), camvid) == []


def test_every_recipe_fits_the_frames_it_is_made_for():
    from seglite.training.trainer import scale_notes

    frames = {"cityscapes": (2048, 1024), "camvid": (480, 360), "synth": (512, 256)}
    for path in sorted(Path("configs").glob("*.yaml")):
        data = load_config(path).data
        kind = "synth" if path.name.startswith("synth") else ("camvid" if "camvid" in path.name else "cityscapes")
        assert scale_notes(frames[kind], frames[kind], data) == [], path


def test_data_check_fails_on_a_broken_root(tmp_path):
    (tmp_path / "leftImg8bit" / "train" / "x").mkdir(parents=True)
    result = subprocess.run(
        [sys.executable, "-m", "seglite", "data", "check", str(tmp_path)], capture_output=True, text=True
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr


def test_full_disk_names_the_checkpoint_and_keeps_the_old_one(data, tmp_path, monkeypatch):
    import errno

    from seglite.errors import SegliteError
    from seglite.training import trainer as trainer_module
    from seglite.training.trainer import Trainer

    out = tmp_path / "run"
    config = load_config(
        "configs/synth_espnetv2_s0.5.yaml", [f"data.root={data}", *TINY, "schedule.iters=2", "ckpt_every=1"]
    )
    Trainer(config, out, show_progress=False).run()
    before = (out / "last.pt").read_bytes()

    def full_disk(obj, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(trainer_module, "atomic_torch_save", full_disk)
    config = load_config(
        "configs/synth_espnetv2_s0.5.yaml", [f"data.root={data}", *TINY, "schedule.iters=3", "ckpt_every=1"]
    )
    with pytest.raises(SegliteError, match="No space left on device") as info:
        Trainer(config, out, resume=True, show_progress=False).run()
    assert ("last.pt" in str(info.value) or "best.pt" in str(info.value)) and "intact" in str(info.value)
    assert info.value.exit_code == 1  # a full disk is the machine's failure, not the user's
    assert (out / "last.pt").read_bytes() == before


def test_ohem_averages_only_the_hard_pixels():
    from seglite.training.losses import SegmentationLoss

    target = torch.tensor([[[0, 0, 1, 1]]])
    logits = torch.zeros(1, 2, 1, 4)
    logits[0, 0, 0, :2] = 10.0  # pixels 0-1: confidently right (easy)
    logits[0, 0, 0, 2:] = 10.0  # pixels 2-3: confidently wrong (hard)
    plain = SegmentationLoss()(logits, target)
    ohem = SegmentationLoss(ohem=True, ohem_threshold=0.7, ohem_min_kept=1)(logits, target)
    hard_only = torch.nn.functional.cross_entropy(logits[..., 2:], target[..., 2:])
    assert ohem == pytest.approx(float(hard_only)) and ohem > plain
    ignore = torch.full_like(target, 255)
    assert float(SegmentationLoss(ohem=True)(logits, ignore)) == 0.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator tuning is Linux-only")
def test_cpu_training_reuses_freed_memory(data, tmp_path):
    # Each step re-allocates activations and gradients, the large ones (> 32 MB: logits at batch 8) from fresh
    # mmaps the OS zero-fills on first touch, unless the trainer keeps freed memory for reuse.
    setup = (
        "from seglite.training.config import load_config\n"
        "from seglite.training.trainer import Trainer\n"
        f"config = load_config('configs/synth_espnetv2_s0.5.yaml', {[f'data.root={data}', *TINY]!r})\n"
        f"Trainer(config, {str(tmp_path / 'run')!r}, show_progress=False)"
    )
    env = {k: v for k, v in os.environ.items() if k != "SEGLITE_REUSE_MEMORY"}
    _, faults = large_tensor_page_faults(setup, env)
    assert faults < LARGE_TENSOR_PAGES // 20
