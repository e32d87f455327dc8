"""Published checkpoints: strict conversion, parity with the authors' code, zoo cache, bad files."""

from __future__ import annotations

import hashlib
import json
import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from conftest import REALDATA, cli, require_realdata

import seglite
from seglite.errors import CheckpointError, SegliteError
from seglite.zoo import registry as zoo
from seglite.zoo.checkpoint import load_weights, read_checkpoint_file, save_checkpoint
from seglite.zoo.convert import detect_original, rename_keys

WEIGHTS = {
    "espnetv1_p2q8": "espnet_v1/decoder_espnet_p_2_q_8.pth",
    "espnetv2_s0.5_512x256": "espnetv2/espnetv2_s_0.5_city_512x256.pth",
    "espnetv2_s1.0_1024x512": "espnetv2/espnetv2_s_1.0_city_1024x512.pth",
    "espnetv2_s1.5_1024x512": "espnetv2/espnetv2_s_1.5_city_1024x512.pth",
    "espnetv2_s2.0_1024x512": "espnetv2/espnetv2_s_2.0_city_1024x512.pth",
}
ALL_ORIGINALS = (
    sorted(p.relative_to(REALDATA / "weights").as_posix() for p in (REALDATA / "weights").glob("*/*.pth"))
    if REALDATA.exists()
    else []
)


@pytest.mark.parametrize("relpath", ALL_ORIGINALS or ["absent"])
def test_every_original_tensor_is_mapped(relpath):
    path = require_realdata("weights", relpath)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    fmt = detect_original(raw)
    model = seglite.create_model(fmt.model_name, num_classes=fmt.num_classes, **fmt.model_kwargs)
    renamed = rename_keys(raw, fmt.family)
    own = model.state_dict()
    missing = set(own) - set(renamed) - {k for k in own if k.endswith("num_batches_tracked")}
    assert not missing and not (set(renamed) - set(own))
    for key, value in renamed.items():
        assert own[key].shape == value.shape, key


@pytest.mark.parametrize("reference", sorted(WEIGHTS))
def test_argmax_matches_the_authors_code_on_real_frames(reference):
    weights = require_realdata("weights", WEIGHTS[reference])
    ref_dir = require_realdata("reference", reference)
    seg = seglite.Segmenter(weights=str(weights), device="cpu")
    refs = sorted(ref_dir.glob("*_trainIds.png"))
    assert len(refs) == 8
    for ref_path in refs:
        stem = ref_path.name.replace("_trainIds.png", "")
        image = cv2.imread(str(REALDATA / "cityscapes_val_sample/leftImg8bit/train/aachen" / f"{stem}_leftImg8bit.png"))
        expected = cv2.imread(str(ref_path), cv2.IMREAD_UNCHANGED)
        logits = seg.logits(image)
        assert logits.shape[-2:] == expected.shape  # the reference is at the network's input resolution
        predicted = seg.labels_from_logits(logits[None], expected.shape)[0]
        assert (predicted == expected).mean() >= 0.999, stem


def test_segmenter_returns_a_map_at_the_image_resolution(tmp_path):
    weights = require_realdata("weights", WEIGHTS["espnetv2_s1.0_1024x512"])
    image = cv2.imread(str(require_realdata("images", "frankfurt_000000_000294_leftImg8bit.png")))
    labels = seglite.Segmenter(weights=str(weights), device="cpu")(image)
    assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
    # A street scene: road fills the bottom centre, building or sky the top rows.
    assert np.mean(labels[900:1000, 800:1200] == 0) > 0.9
    assert np.isin(labels[:100], [2, 8, 10]).mean() > 0.5


def test_channel_19_becomes_ignore_never_a_class():
    weights = require_realdata("weights", WEIGHTS["espnetv1_p2q8"])
    image = cv2.imread(
        str(REALDATA / "cityscapes_val_sample/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
    )
    seg = seglite.Segmenter(weights=str(weights), device="cpu")
    logits = seg.logits(image)
    background_wins = (logits.argmax(0) == 19).numpy()
    labels = seg.labels_from_logits(logits[None], logits.shape[-2:])[0]
    assert background_wins.mean() > 0.01  # it does win somewhere (the ego vehicle)
    assert (labels[background_wins] == 255).all() and labels.max() == 255 and (labels[labels < 255] < 19).all()


def test_seglite_checkpoint_round_trip_keeps_weights_and_preprocessing(tmp_path):
    weights = require_realdata("weights", WEIGHTS["espnetv1_p2q8"])
    original = load_weights(weights)
    out = tmp_path / "espnet.pt"
    result = subprocess.run(
        [sys.executable, "-m", "seglite", "weights", "import", str(weights), "--out", str(out), "--model", "espnetv1"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    again = load_weights(out)
    assert again.model_name == "espnetv1" and again.preprocess == original.preprocess
    x = torch.randn(1, 3, 64, 128)
    with torch.inference_mode():
        assert torch.equal(original.model(x), again.model(x))
    raw = read_checkpoint_file(out)
    assert {"model", "num_classes", "classes", "preprocess", "config", "state_dict"} <= set(raw)


def test_a_training_runs_folder_stands_for_its_best_then_its_last_checkpoint(tmp_path):
    from seglite.zoo.checkpoint import LoadedWeights, load_model
    from seglite.zoo.preprocess import IMAGENET

    run = tmp_path / "runs" / "train"
    run.mkdir(parents=True)
    for name, seed in (("last.pt", 1), ("best.pt", 2)):
        torch.manual_seed(seed)
        net = seglite.create_model("espnetv2_s0.5", num_classes=2)
        save_checkpoint(run / name, LoadedWeights(net, "espnetv2_s0.5", ("a", "b"), IMAGENET, name))
    best = load_model(None, str(run / "best.pt")).model.state_dict()
    loaded = seglite.Segmenter(weights=str(run), device="cpu", backend="torch")
    assert loaded.loaded.source == str(run / "best.pt")
    assert all(torch.equal(v, best[k]) for k, v in load_model(None, str(run)).model.state_dict().items())
    (run / "best.pt").unlink()  # interrupted before its first validation
    assert load_model(None, str(run)).source == str(run / "last.pt")
    (run / "last.pt").unlink()
    with pytest.raises(SegliteError, match=r"a folder without seglite.yaml or a training run's best.pt/last.pt"):
        seglite.Segmenter(weights=str(run), device="cpu")


def test_the_zoo_preprocessing_equals_the_converters(tmp_path):
    for entry in zoo.list_zoo():
        path = REALDATA / "weights" / ("espnet_v1" if entry.model.startswith("espnetv1") else "espnetv2") / entry.file
        if not path.is_file():
            pytest.skip(f"real data not available: {path}")
        loaded = load_weights(path, model_name=entry.model)
        assert loaded.preprocess == entry.preprocess, entry.name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256


# ---- download cache, tested on local files through file:// URLs -------------------------------------------


def _entry(source: Path, sha: str) -> zoo.ZooEntry:
    return zoo.ZooEntry(
        name="test_entry",
        model="espnetv2_s0.5",
        file="test_entry.pth",
        url=source.as_uri(),
        sha256=sha,
        license="MIT",
        reported_miou=None,
        notes="",
        preprocess=zoo.Preprocess(),
    )


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGLITE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_download_verifies_and_reuses_the_cache(tmp_path, home):
    source = tmp_path / "remote.pth"
    torch.save({"w": torch.ones(3)}, source)
    entry = _entry(source, hashlib.sha256(source.read_bytes()).hexdigest())
    path = zoo.fetch(entry)
    assert path == home / "weights" / "test_entry.pth" and path.read_bytes() == source.read_bytes()
    source.unlink()  # the second call must not need the network
    assert zoo.fetch(entry) == path


def test_weights_download_fetches_named_entries_ahead_of_use(tmp_path, home, monkeypatch):
    import dataclasses

    import yaml

    entries = []
    for name in ("zoo_a", "zoo_b"):
        source = tmp_path / f"{name}.pth"
        torch.save({"w": torch.full((3,), float(len(entries)))}, source)
        entry = dataclasses.replace(_entry(source, hashlib.sha256(source.read_bytes()).hexdigest()), name=name)
        entries.append({**dataclasses.asdict(entry), "file": f"{name}.pth", "preprocess": {}})
    manifest = tmp_path / "zoo.yaml"
    manifest.write_text(yaml.safe_dump({"entries": entries}))
    monkeypatch.setattr(zoo, "MANIFEST", manifest)
    result = cli("weights", "download", "zoo_b")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"zoo_b: downloaded to {home / 'weights' / 'zoo_b.pth'}"
    assert sorted(p.name for p in (home / "weights").iterdir()) == ["zoo_b.pth"]
    result = cli("weights", "download", "--all")
    assert result.returncode == 0 and result.stdout.splitlines() == [
        f"zoo_a: downloaded to {home / 'weights' / 'zoo_a.pth'}",
        f"zoo_b: already in {home / 'weights' / 'zoo_b.pth'}",
    ]
    rows = [line.split("│") for line in cli("weights", "list").stdout.splitlines() if line.startswith("│")]
    assert {row[1].strip(): row[5].strip() for row in rows} == {"zoo_a": "yes", "zoo_b": "yes"}
    result = cli("weights", "download", "zoo_a", "zoo_c")  # every name is checked before anything is fetched
    assert result.returncode == 2 and result.stderr.startswith("error: 'zoo_c': not a zoo name; did you mean zoo_")
    assert cli("weights", "download").returncode == 2


def test_wrong_sha256_is_rejected_and_not_kept(tmp_path, home):
    source = tmp_path / "remote.pth"
    source.write_bytes(b"not the published file")
    with pytest.raises(CheckpointError, match="rejected"):
        zoo.fetch(_entry(source, "0" * 64))
    assert not any((home / "weights").iterdir())


def test_offline_error_names_the_url_and_the_place_for_the_file(home):
    entry = zoo.ZooEntry(
        name="x",
        model="espnetv1",
        file="x.pth",
        url="http://127.0.0.1:9/x.pth",
        sha256="0" * 64,
        license="",
        reported_miou=None,
        notes="",
        preprocess=zoo.Preprocess(),
    )
    with pytest.raises(SegliteError) as info:
        zoo.fetch(entry, timeout=5)
    message = str(info.value)
    assert "http://127.0.0.1:9/x.pth" in message and str(home / "weights" / "x.pth") in message
    assert "\n" not in message


def test_a_zoo_name_resolves_through_the_cache(home):
    weights = require_realdata("weights", WEIGHTS["espnetv2_s1.0_1024x512"])
    entry = zoo.find_entry("espnetv2_s1.0_cityscapes_1024x512")
    target = zoo.cached_path(entry)
    target.parent.mkdir(parents=True)
    target.write_bytes(weights.read_bytes())
    seg = seglite.Segmenter(weights=entry.name, device="cpu")
    assert seg.loaded.source == entry.name and seg.preprocess.size == (1024, 512)
    loaded = seglite.load_weights(entry.name)  # the Python API takes what --weights takes
    assert loaded.source == entry.name and loaded.preprocess == seg.loaded.preprocess
    with pytest.raises(SegliteError, match="did you mean espnetv2_s1.0_cityscapes"):
        seglite.load_weights("espnetv2_s1.0_citiscapes")


def test_segmenter_without_weights_runs_the_default_published_model(home):
    from seglite.zoo.registry import DEFAULT_WEIGHTS

    entry = zoo.find_entry(DEFAULT_WEIGHTS)
    target = zoo.cached_path(entry)
    target.parent.mkdir(parents=True)
    target.write_bytes(require_realdata("weights", "espnetv2", entry.file).read_bytes())
    seg = seglite.Segmenter(device="cpu", size="512x256")  # the size as the command line writes it
    assert seg.loaded.source == DEFAULT_WEIGHTS and seg.preprocess.size == (512, 256)
    result = cli("bench", "--size", "128x64", "--backend", "torch", "--warmup", "0", "--iters", "1", "--json")
    assert result.returncode == 0, result.stderr  # as predict: the published model when none is named
    assert result.stderr == f"no --model or --weights: benchmarking {DEFAULT_WEIGHTS}\n"
    assert json.loads(result.stdout)["model"] == "espnetv2_s2.0"


def test_create_model_refuses_what_it_cannot_build_with_the_fix():
    import numpy as np

    assert seglite.create_model("espnetv2_s0.5", num_classes=np.int64(3)).num_classes == 3
    assert seglite.create_model("deeplabv3p_lcnet_050", num_classes=2, output_stride=16) is not None
    with pytest.raises(SegliteError, match="num_classes=0; expected a whole number >= 1"):
        seglite.create_model("espnetv2_s0.5", num_classes=0)
    with pytest.raises(SegliteError, match=r"random weights; .*seglite.load_weights"):
        seglite.create_model("espnetv2_s1.0", pretrained=True)
    with pytest.raises(SegliteError, match="no option output_stride; it takes decoder_proj, scale"):
        seglite.create_model("espnetv2_s0.5", output_stride=16)
    with pytest.raises(SegliteError, match=r"size \(10, 5\)|size '10x5'"):
        seglite.Segmenter(model="espnetv2_s0.5", size=(10, 5))


def test_subnormal_weights_are_flushed_on_load_and_change_no_prediction(tmp_path):
    # The authors' ESPNet files are ~5 % subnormal floats, which x86 multiplies 10-100x slower.
    original = require_realdata("weights", WEIGHTS["espnetv1_p2q8"])
    raw = torch.load(original, map_location="cpu", weights_only=True)
    tiny = torch.finfo(torch.float32).tiny
    subnormal = sum(int(((v != 0) & (v.abs() < tiny)).sum()) for v in raw.values() if v.is_floating_point())
    assert subnormal > 1000
    from seglite.models.base import flush_subnormals

    assert flush_subnormals(load_weights(original).model) == 0  # none left after loading

    torch.manual_seed(0)
    net = seglite.create_model("espnetv1", num_classes=19).eval()
    with torch.no_grad():
        for weight in net.parameters():
            weight[torch.rand_like(weight) < 0.05] = 1e-40
        image = torch.randn(1, 3, 128, 256)
        before = net(image)
        assert flush_subnormals(net) > 0 and flush_subnormals(net) == 0
        after = net(image)
    assert torch.equal(before.argmax(1), after.argmax(1)) and (before - after).abs().max() < 1e-6


def test_the_cached_file_name_finds_its_entry_and_a_typo_names_the_nearest():
    entry = zoo.find_entry("espnetv2_s0.5_cityscapes_512x256")
    assert zoo.find_entry("espnetv2_s_0.5_city_512x256") == entry == zoo.find_entry("espnetv2_s_0.5_city_512x256.pth")
    assert zoo.find_entry("espnetv2_s0.5") is None
    assert zoo.closest_names("espnetv2_s0.5_cityscape_512x256") == [entry.name]
    assert zoo.closest_names("espnetv2_s0.5") == ["espnetv2_s0.5_cityscapes_1024x512", entry.name]
    assert zoo.closest_names("resnet50") == []


def test_a_mistyped_zoo_name_is_answered_with_the_nearest_one(tmp_path):
    message = _cli_error("bench", "--weights", "espnetv2_s1.0_cityscape_1024x512", "--size", "64x64")
    assert "did you mean espnetv2_s1.0_cityscapes_1024x512?" in message


# ---- bad files ---------------------------------------------------------------------------------------


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _cli_error(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "seglite", *args], capture_output=True, text=True)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_text_file_is_not_a_checkpoint(tmp_path):
    bad = tmp_path / "notes.pth"
    bad.write_text("hello")
    message = _cli_error("weights", "import", str(bad), "--out", str(tmp_path / "o.pt"))
    assert str(bad) in message


def test_truncated_checkpoint(tmp_path):
    weights = require_realdata("weights", WEIGHTS["espnetv2_s0.5_512x256"])
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    message = _cli_error("weights", "import", str(bad), "--out", str(tmp_path / "o.pt"))
    assert str(bad) in message and "truncated" in message


def test_pickle_that_would_run_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"state": _RunsCode(marker)}))
    message = _cli_error("weights", "import", str(bad), "--out", str(tmp_path / "o.pt"))
    assert str(bad) in message
    assert not marker.exists()


def test_checkpoint_for_another_width_is_named(tmp_path):
    weights = require_realdata("weights", WEIGHTS["espnetv2_s1.0_1024x512"])
    message = _cli_error("weights", "import", str(weights), "--model", "espnetv2_s2.0", "--out", str(tmp_path / "o.pt"))
    assert "espnetv2_s1.0" in message and "espnetv2_s2.0" in message


def test_seglite_checkpoint_with_wrong_shapes_is_rejected(tmp_path):
    model = seglite.create_model("espnetv2_s0.5")
    good = tmp_path / "good.pt"
    from seglite.zoo.checkpoint import checkpoint_dict
    from seglite.zoo.preprocess import IMAGENET

    ckpt = checkpoint_dict("espnetv2_s0.5", model, seglite.data.labels.CLASS_NAMES, IMAGENET)
    ckpt["model"] = "espnetv2_s1.0"
    torch.save(ckpt, good)
    with pytest.raises(CheckpointError, match="does not fit espnetv2_s1.0"):
        load_weights(good)


def test_save_is_atomic_when_interrupted(tmp_path, monkeypatch):
    weights = load_weights(require_realdata("weights", WEIGHTS["espnetv2_s0.5_512x256"]))
    target = tmp_path / "ckpt.pt"
    save_checkpoint(target, weights)
    before = target.read_bytes()

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", explode)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(target, weights)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_fast_preprocessing_equals_the_reference_formula():
    from seglite.data.synth import render_scene
    from seglite.zoo.preprocess import ESPNET_V1, IMAGENET

    image = render_scene(300, 170, seed=9)[0]
    for pre in (IMAGENET, IMAGENET.with_size((256, 128)), ESPNET_V1.with_size((128, 64))):
        resized = cv2.resize(image, pre.size, interpolation=cv2.INTER_LINEAR) if pre.size else image
        rgb = resized[:, :, ::-1] if pre.color_order == "rgb" else resized
        if pre.resize_float:  # ESPNet v1: standardise first, then resize the float image
            std = (image.astype(np.float32) - np.float32(pre.mean)) / np.float32(pre.std)
            expected = cv2.resize(std, pre.size, interpolation=cv2.INTER_LINEAR) * pre.post_scale
        else:
            expected = (rgb.astype(np.float32) - np.float32(pre.mean)) / np.float32(pre.std) * pre.post_scale
        assert np.allclose(pre.to_array(image), expected.transpose(2, 0, 1), atol=1e-5)
        # The channels-last input the Segmenter feeds its channels_last model: the same numbers, to the bit.
        channels_last = pre.channels_last(image)
        assert channels_last.permute(1, 2, 0).is_contiguous()
        assert np.array_equal(channels_last.numpy(), pre.to_array(image))


def test_onnx_runner_agrees_with_eager_pytorch_on_a_real_frame(home):
    """The published ESPNet-C encoder ends in a half-pixel upsampling, which the ONNX runner does in OpenCV."""
    import onnx

    weights = require_realdata("weights", "espnet_v1/encoder_espnet_p_2_q_8.pth")
    image = cv2.imread(
        str(REALDATA / "cityscapes_val_sample/leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png")
    )
    labels = {
        backend: seglite.Segmenter(weights=str(weights), device="cpu", size=(1024, 512), backend=backend)(image)
        for backend in ("torch", "onnx")
    }
    (export,) = (home / "onnx").glob("espnetv1_c-*-1024x512-b1-fp32-*.onnx")
    assert "final_upsample" in {entry.key for entry in onnx.load(str(export)).metadata_props}
    assert labels["onnx"].shape == image.shape[:2]
    assert (labels["onnx"] == labels["torch"]).mean() >= 0.999
