"""seglite predict / export: outputs per input, the video pipeline, and every bad input of the issue."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import cli, record_calling_threads, require_realdata

from seglite.data.synth import render_scene, write_video

# A requested backend: a random network has new weights every process, so `--backend auto` would time every backend
# again in each test (its own tests cover it).
FAST = ["--model", "espnetv2_s0.5", "--size", "128x64", "--device", "cpu", "--backend", "torch"]


def _seglite(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(
        [sys.executable, "-m", "seglite", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def _one_error_line(result: subprocess.CompletedProcess, needle: str) -> None:
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], result.stderr


@pytest.fixture(scope="module")
def street(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("images")
    cv2.imwrite(str(folder / "a.png"), render_scene(160, 96, seed=1)[0])
    (folder / "sub").mkdir()
    cv2.imwrite(str(folder / "sub" / "b.jpg"), render_scene(200, 100, seed=2)[0])
    return folder


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "drive.mp4", frames=12, size=(160, 96), fps=12.0)


def test_folder_of_images_gives_every_format_at_the_input_size(street, tmp_path):
    result = _seglite(
        "predict", str(street), *FAST, "--format", "overlay,color,trainid,labelid", "--out", str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert f"2 of 2 image(s) segmented; 8 file(s) written to {tmp_path} (" in result.stdout
    assert re.search(r"^images: 2/2, done in \d:\d\d:\d\d$", result.stderr, re.M), result.stderr  # a log's progress
    assert "images/s)" in result.stdout  # --backend torch: one stream, not named
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.*"))
    # the input's sub-folders are kept under --out; a JPEG's overlay is a JPEG, every other output a PNG
    assert names == sorted(
        [f"{stem}_{fmt}.png" for stem in ("a", "sub/b") for fmt in ("color", "trainid", "labelid")]
        + ["a_overlay.png", "sub/b_overlay.jpg"]
    )
    from seglite.inference.predict import planned_outputs
    from seglite.inference.sources import resolve_sources

    # what the refusal to overwrite checks before any work is what was written
    planned = planned_outputs(resolve_sources(str(street))[0], tmp_path, ("overlay", "color", "trainid", "labelid"))
    assert sorted(p.relative_to(tmp_path).as_posix() for p in planned) == names
    trainid = cv2.imread(str(tmp_path / "sub" / "b_trainid.png"), cv2.IMREAD_UNCHANGED)
    assert trainid.shape == (100, 200) and trainid.dtype == np.uint8 and trainid.max() < 19
    assert cv2.imread(str(tmp_path / "a_overlay.png")).shape == (96, 160, 3)
    from seglite.inference.visualize import overlay

    jpeg_overlay = cv2.imread(str(tmp_path / "sub" / "b_overlay.jpg")).astype(int)
    exact = overlay(cv2.imread(str(street / "sub" / "b.jpg")), trainid, 0.5).astype(int)
    # JPEG quality 95 over a random net's busy label map: a few levels off on average (a wrong blend or wrong labels
    # would be tens off)
    assert jpeg_overlay.shape == exact.shape and np.abs(jpeg_overlay - exact).mean() < 6
    from seglite.data.labels import TRAIN_ID_TO_LABEL_ID

    labelid = cv2.imread(str(tmp_path / "sub" / "b_labelid.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(labelid, TRAIN_ID_TO_LABEL_ID[trainid])


@pytest.mark.slow  # 12 s; folders and single images cover the same reader
def test_glob_source(street, tmp_path):
    result = _seglite("predict", str(street / "**" / "*.jpg"), *FAST, "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["b_overlay.jpg"]


def test_video_keeps_frame_count_fps_and_size(video, tmp_path):
    result = _seglite("predict", str(video), *FAST, "--out", str(tmp_path), "--batch", "4")
    assert result.returncode == 0, result.stderr
    capture = cv2.VideoCapture(str(tmp_path / "drive_overlay.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 12
    assert capture.get(cv2.CAP_PROP_FPS) == pytest.approx(12.0)
    assert (capture.get(cv2.CAP_PROP_FRAME_WIDTH), capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 96)
    for stage in ("decode", "preprocess", "model", "postprocess", "encode"):
        assert stage in result.stdout
    # stderr is a pipe here, as a log file is: the progress is a line, not a bar drawn at the end or never
    assert re.search(r"^frames: 12/12 [\d.]+ FPS, done in \d:\d\d:\d\d$", result.stderr, re.M), result.stderr


def test_stream_iterator_yields_every_frame_in_order(video):
    import seglite

    seg = seglite.Segmenter(model="espnetv2_s0.5", size=(128, 64), device="cpu")
    seen = [(index, frame.shape, labels.shape) for index, frame, labels in seg.stream(str(video), batch=3)]
    assert [s[0] for s in seen] == list(range(12))
    assert all(shape[:2] == labels for _, shape, labels in seen)


def test_realtime_keeps_the_newest_frame(video):
    import time

    from seglite.inference.sources import open_video
    from seglite.inference.video import _END, VideoResult, _Decoder

    result = VideoResult()
    decoder = _Decoder(open_video(str(video))[0], lambda f: f, result, capacity=4, realtime=True)
    decoder.start()
    items = [decoder.frames.get(timeout=10)]
    time.sleep(1.0)  # a slow consumer: the decoder runs ahead and keeps replacing the waiting frame
    while (item := decoder.frames.get(timeout=10)) is not _END:
        items.append(item)
    decoder.join(timeout=10)
    indices = [i for i, _, _ in items]
    assert result.frames_read == 12 and indices[-1] == 11 and len(indices) <= 2
    assert result.frames_dropped == 12 - len(indices)


def test_a_live_source_drops_stale_frames_unless_told_to_keep_them(video, tmp_path, monkeypatch):
    """A camera or stream shows now, not seconds ago (Ultralytics' streams do the same); a file keeps every frame."""
    import seglite
    from seglite.inference import video as pipeline

    modes = []
    decoder = pipeline._Decoder
    monkeypatch.setattr(pipeline, "_Decoder", lambda *args: modes.append(args[4]) or decoder(*args))
    seg = seglite.Segmenter(model="espnetv2_s0.5", size=(128, 64), device="cpu")
    live = f"file://{video}"  # read as a stream: a URL that names no video file
    pipeline.segment_video(seg, str(video), tmp_path, "file")
    dropped = pipeline.segment_video(seg, live, tmp_path, "default")
    kept = pipeline.segment_video(seg, live, tmp_path, "kept", realtime=False)
    assert modes == [False, True, False] and kept.frames_written == 12 and kept.frames_dropped == 0
    assert dropped.frames_written + dropped.frames_dropped == 12
    frames = cv2.VideoCapture(str(tmp_path / "default_overlay.mp4")).get(cv2.CAP_PROP_FRAME_COUNT)
    assert frames == dropped.frames_written + dropped.frames_held  # (held: see the next test)
    # The recording keeps time: the last segmented frame is held for the frames dropped after it.
    written = []
    writer = type("Writer", (), {"write": lambda self, image: written.append(int(image[0, 0, 0]))})()
    encoder = pipeline._Encoder(
        seg, {"color": writer}, {}, 0.5, result := pipeline.VideoResult(), None, pipeline.Turns(False)
    )
    for index in (2, 3, 6):  # frames 0, 1 (before the first), 4 and 5 dropped
        labels = np.full((8, 8), index, np.uint8)  # class `index`: its colour's blue stands for the frame
        encoder._write([index], [np.zeros((8, 8, 3), np.uint8)], lambda labels=labels: [labels])
    blue = [int(seg.palette_lut[i][0][0]) for i in (2, 3, 6)]
    assert written == [blue[0], blue[1], blue[1], blue[1], blue[2]] and result.frames_held == 2
    assert [index for index, _, _ in seg.stream(live, realtime=False)] == list(range(12))
    list(seg.stream(live))
    assert modes[3:] == [False, True]


def test_a_stopped_decoder_ends_even_with_its_queue_full(video):
    """After Ctrl-C nobody takes frames any more: the decoder must not wait for room for its end marker (every
    interrupted run waited out the 5 s join timeout)."""
    import time

    from seglite.inference.sources import open_video
    from seglite.inference.video import VideoResult, _Decoder

    decoder = _Decoder(open_video(str(video))[0], lambda f: f, VideoResult(), capacity=2, realtime=False)
    decoder.start()
    while not decoder.frames.full():
        time.sleep(0.01)
    decoder.stop.set()
    decoder.join(timeout=30)
    assert not decoder.is_alive()


def test_sixteen_bit_grey_and_rgba_images_work(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    colour = render_scene(128, 64, seed=4)[0]
    cv2.imwrite(str(folder / "deep.png"), colour.astype(np.uint16) * 257)
    cv2.imwrite(str(folder / "grey.png"), cv2.cvtColor(colour, cv2.COLOR_BGR2GRAY))
    cv2.imwrite(str(folder / "alpha.png"), cv2.cvtColor(colour, cv2.COLOR_BGR2BGRA))
    result = _seglite("predict", str(folder), *FAST, "--format", "trainid", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    for stem in ("deep", "grey", "alpha"):
        assert cv2.imread(str(tmp_path / "out" / f"{stem}_trainid.png"), cv2.IMREAD_UNCHANGED).shape == (64, 128)


def _phone_photo(path: Path, colour: np.ndarray) -> Path:
    """`colour` stored sideways with EXIF orientation 6 (turn a quarter clockwise to show), as phones save portraits."""
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(cv2.cvtColor(colour, cv2.COLOR_BGR2RGB)).save(path, exif=exif.tobytes(), quality=95)
    return path


def test_a_phone_photo_is_segmented_upright_as_it_is_shown_and_trained_on(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    phone = _phone_photo(folder / "phone.jpg", render_scene(128, 64, seed=4)[0])
    stored = cv2.imread(str(phone), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    cv2.imwrite(str(folder / "upright.png"), cv2.rotate(stored, cv2.ROTATE_90_CLOCKWISE))
    result = _seglite("predict", str(folder), *FAST, "--format", "trainid", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    masks = {
        s: cv2.imread(str(tmp_path / "out" / f"{s}_trainid.png"), cv2.IMREAD_UNCHANGED) for s in ("phone", "upright")
    }
    assert masks["phone"].shape == (128, 64)
    np.testing.assert_array_equal(masks["phone"], masks["upright"])


def test_bad_images_are_named_and_the_others_still_run(street, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = render_scene(128, 64, seed=5)[0]
    cv2.imwrite(str(folder / "good.png"), good)
    (folder / "notes.png").write_text("not an image")
    data = cv2.imencode(".png", good)[1].tobytes()
    (folder / "cut.png").write_bytes(data[: len(data) // 2])
    result = _seglite("predict", str(folder), *FAST, "--out", str(tmp_path / "out"))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and any("notes.png" in e for e in errors) and any("cut.png" in e for e in errors)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["good_overlay.png"]


@pytest.mark.parametrize("kind", ["missing", "empty folder"])
def test_missing_path_and_empty_folder(tmp_path, kind):
    target = tmp_path / ("nothing.png" if kind == "missing" else "empty")
    if kind == "empty folder":
        target.mkdir()
    _one_error_line(_seglite("predict", str(target), *FAST, "--out", str(tmp_path / "o")), str(target))


def test_a_folder_of_heic_photos_says_to_convert_them(tmp_path):
    from seglite.errors import InputError
    from seglite.inference.sources import resolve_sources

    (tmp_path / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic")  # an iPhone photo's opening bytes
    with pytest.raises(InputError, match=r"its 1 HEIC photo\(s\) OpenCV cannot read: convert them to JPEG first"):
        resolve_sources(str(tmp_path))


def test_a_folder_of_clips_segments_each_video_beside_its_images(video, street, tmp_path):
    """A folder (or a glob) holding videos: each is segmented, named by its path below the folder."""
    import shutil

    clips = tmp_path / "clips"
    (clips / "day2").mkdir(parents=True)
    shutil.copy(video, clips / "drive.mp4")
    shutil.copy(video, clips / "day2" / "drive.mp4")  # the same name in a sub-folder: its own output
    shutil.copy(street / "a.png", clips / "still.png")
    result = cli("predict", str(clips), *FAST, "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert written == ["day2/drive_overlay.mp4", "drive_overlay.mp4", "still_overlay.png"]
    capture = cv2.VideoCapture(str(tmp_path / "out" / "day2" / "drive_overlay.mp4"))
    assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 12
    capture.release()
    result = cli("predict", str(clips / "**" / "*.mp4"), *FAST, "--format", "trainid", "--out", str(tmp_path / "g"))
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "g").rglob("*_trainid")) == ["drive_trainid", "drive_trainid"]


def test_a_file_is_known_by_its_content_under_another_suffix_and_refused_before_the_model_loads(
    video, street, tmp_path, monkeypatch
):
    import shutil

    from seglite.errors import InputError
    from seglite.inference.sources import resolve_sources

    shutil.copy(video, tmp_path / "dashcam.TS")  # a dash-cam's transport stream
    shutil.copy(video, tmp_path / "clip.bin")  # a video under a suffix no list holds
    shutil.copy(street / "a.png", tmp_path / "frame.dat")
    assert [s.kind for f in ("dashcam.TS", "clip.bin", "frame.dat") for s in resolve_sources(str(tmp_path / f))] == [
        "video",
        "video",
        "images",
    ]
    (tmp_path / "notes.pdf").write_text("%PDF-1.4 not a picture")
    (tmp_path / "IMG_2.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    monkeypatch.setattr("seglite.cli.predict._segmenter", lambda *a, **k: pytest.fail("the model was loaded"))
    for name, message in (
        ("notes.pdf", "not an image or a video seglite reads (.3gp, "),
        ("IMG_2.heic", "convert it to JPEG"),
    ):
        with pytest.raises(InputError, match=re.escape(message)):
            resolve_sources(str(tmp_path / name))
        result = cli("predict", str(tmp_path / name), *FAST, "--out", str(tmp_path / "o"))
        assert result.returncode == 2 and message in result.stderr


def test_zero_byte_mp4(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    _one_error_line(_seglite("predict", str(empty), *FAST, "--out", str(tmp_path / "o")), str(empty))


@pytest.mark.slow  # 14 s: a damaged video end to end
def test_truncated_mp4_writes_the_frames_before_the_damage(tmp_path):
    # A real H.264 mp4 (index at the front, as cameras write them); OpenCV's own mp4 writer puts the index at
    # the end, so a cut copy of a generated video cannot be opened at all (that case is the zero-byte test's).
    source = require_realdata("video", "solidWhiteRight.mp4")
    data = source.read_bytes()
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(data[: len(data) // 3])
    result = _seglite("predict", str(broken), *FAST, "--out", str(tmp_path / "o"))
    _one_error_line(result, str(broken))
    message = next(line for line in result.stderr.splitlines() if line.startswith("error:"))
    written = int(message.split("the ")[-1].split(" decoded")[0])
    assert 0 < written < 221 and "of 221 frames" in message
    out = cv2.VideoCapture(str(tmp_path / "o" / "broken_overlay.mp4"))
    assert out.get(cv2.CAP_PROP_FRAME_COUNT) == written


@pytest.mark.slow  # 11 s
def test_unwritable_output_folder(street, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    _one_error_line(_seglite("predict", str(street), *FAST, "--out", str(blocker / "sub")), str(blocker / "sub"))


def test_cuda_without_a_gpu(street, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    result = _seglite("predict", str(street), "--model", "espnetv2_s0.5", "--device", "cuda", "--out", str(tmp_path))
    _one_error_line(result, "--device cuda")


def test_default_weights_offline_say_how_to_get_them(street, tmp_path):
    result = _seglite("predict", str(street), "--out", str(tmp_path / "o"), env={"SEGLITE_HOME": str(tmp_path / "h")})
    _one_error_line(result, "espnetv2_s2.0_cityscapes_1024x512")
    assert "--weights" in result.stderr and str(tmp_path / "h" / "weights") in result.stderr


def test_onnx_backend_runs_a_cached_export(street, tmp_path):
    import seglite
    from seglite.data.labels import CLASS_NAMES
    from seglite.zoo.checkpoint import atomic_torch_save, checkpoint_dict
    from seglite.zoo.preprocess import IMAGENET

    weights = tmp_path / "w.pt"
    net = seglite.create_model("espnetv2_s0.5")
    atomic_torch_save(checkpoint_dict("espnetv2_s0.5", net, CLASS_NAMES, IMAGENET.with_size((128, 64))), weights)
    home = tmp_path / "home"
    result = _seglite(
        "predict", str(street / "a.png"), "--weights", str(weights), "--device", "cpu", "--backend", "onnx",
        "--format", "trainid", "--out", str(tmp_path / "onnx"), env={"SEGLITE_HOME": str(home)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    onnx = cv2.imread(str(tmp_path / "onnx" / "a_trainid.png"), cv2.IMREAD_UNCHANGED)
    eager = seglite.Segmenter(weights=str(weights), device="cpu", backend="torch")(cv2.imread(str(street / "a.png")))
    assert len(list((home / "onnx").glob("espnetv2_s0.5-*-128x64-b1-fp32-*.onnx"))) == 1
    assert onnx.shape == eager.shape and (onnx == eager).mean() >= 0.999


def test_usage_errors_show_usage_not_a_traceback(street):
    result = cli("predict", str(street), "--no-such-option")
    assert result.returncode == 2 and "Traceback" not in result.stderr and "Usage" in result.stderr
    # A second SOURCE is no usage error now (predict takes several): a missing one is named in one line.
    missing = cli("predict", str(street), "no-such-file.png")
    assert missing.returncode == 2 and "no-such-file.png: no such file or folder" in missing.stderr
    # A misspelt --model is named once, without the random-weights warning that would follow a real one.
    typo = cli("predict", str(street), "--model", "espnetv9")
    assert typo.returncode == 2 and "unknown model 'espnetv9'" in typo.stderr and "random" not in typo.stderr
    # A camera that is not there is named before the model is set up (which may time and compile backends).
    camera = cli("predict", "9", "--model", "espnetv2_s0.5", "--backend", "torch")
    assert camera.returncode == 2 and "camera 9: cannot be opened" in camera.stderr
    assert "on cpu, backend" not in camera.stderr and "Traceback" not in camera.stderr
    # So is a stream nothing answers at (a closed local port): an address to check, not a damaged file.
    stream = cli("predict", "rtsp://127.0.0.1:9/cam", "--model", "espnetv2_s0.5", "--backend", "torch")
    assert (
        stream.returncode == 2 and "rtsp://127.0.0.1:9/cam: cannot open the stream (check the address" in stream.stderr
    )
    assert "on cpu, backend" not in stream.stderr and "Traceback" not in stream.stderr


def test_export_stores_preprocessing_and_checks_ort(tmp_path):
    import json

    import onnx

    out = tmp_path / "m.onnx"
    result = _seglite("export", "--model", "espnetv2_s0.5", "--size", "256x128", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "agreement" in result.stdout
    proto = onnx.load(str(out))
    meta = {p.key: json.loads(p.value) for p in proto.metadata_props}
    assert meta["model"] == "espnetv2_s0.5" and meta["preprocess"]["size"] == [256, 128]
    assert proto.opset_import[0].version >= 17
    assert [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, 128, 256]


@pytest.mark.slow  # 36 s: times four backends and compiles; pick_backend's rules are tested in the default run
def test_auto_backend_measures_once_and_caches_the_choice(tmp_path, monkeypatch):
    import json

    import torch

    import seglite
    from seglite.inference.autotune import BACKEND_TRIAL_FIELDS, choose_backend, pick_backend
    from seglite.inference.backends.openvino import openvino_available

    monkeypatch.setenv("SEGLITE_HOME", str(tmp_path))
    torch.manual_seed(0)
    # Three frames of 256x128 cannot pay back any compile: torch.compile is not even timed.
    static = {"torch", "onnx"} | ({"openvino"} if openvino_available() else set())
    first = seglite.Segmenter(model="espnetv2_s0.5", size=(256, 128), device="cpu", backend="auto", frames=3)
    assert first.backend in static and first.backend_reason.startswith("measured torch ")
    (trial,) = json.loads((tmp_path / "onnx" / "backend_choices.json").read_text()).values()
    assert set(trial) == set(BACKEND_TRIAL_FIELDS) and set(trial["ms"]) == static
    # An open-ended run adds torch.compile to the cached trial and picks by the same rule.
    torch.manual_seed(0)
    second = seglite.Segmenter(model="espnetv2_s0.5", size=(256, 128), device="cpu", backend="auto")
    (trial,) = json.loads((tmp_path / "onnx" / "backend_choices.json").read_text()).values()
    assert set(trial["ms"]) | set(trial["unavailable"]) == static | {"torch.compile"}
    assert second.backend == pick_backend(trial, None)[0] and "cached" not in second.backend_reason
    # Later runs (a new process: nothing compiled yet) reuse the measurements; one frame never pays for a compile.
    backend, reason = choose_backend(second.context, frames=1)
    assert reason.endswith("(cached)") and backend.name != "torch.compile"


def _trial(torch_ms=100.0, onnx_ms=80.0, compile_ms=60.0, compile_s=10.0, compile_agrees=1.0):
    return {
        "ms": {"torch": torch_ms, "onnx": onnx_ms, "torch.compile": compile_ms},
        "agreement": {"onnx": 1.0, "torch.compile": compile_agrees},
        "compile_s": compile_s,
        "unavailable": {},
        "two_streams": None,
    }


def test_two_streams_are_used_only_where_measured_faster_in_eager():
    from seglite.inference.autotune import streams_pay

    trial = _trial() | {"two_streams": 0.9}
    assert streams_pay(trial, "torch") == 2  # a frame in 90 % of one 2-thread call's time
    assert streams_pay(trial | {"two_streams": 1.1}, "torch") == 2  # still pays: decode and encode then overlap
    assert streams_pay(trial | {"two_streams": 1.5}, "torch") == 1  # the model slows too much (LCNet here)
    assert streams_pay(trial, "onnx") == 1 and streams_pay(_trial(), "torch") == 1  # other runtimes; not measured


def test_pick_backend_takes_the_fastest_exact_backend_and_compiles_only_when_it_pays():
    from seglite.inference.autotune import pick_backend

    assert pick_backend(_trial(), None)[0] == "torch.compile"  # open-ended: 20 ms a frame saved
    assert pick_backend(_trial(), 501)[0] == "torch.compile"  # 501 x 20 ms > 10 s
    backend, reason = pick_backend(_trial(), 499)
    assert backend == "onnx" and "not pay back its 10 s compile over 499 frame(s)" in reason
    assert pick_backend(_trial(), 499, compiled_already=True)[0] == "torch.compile"  # the trial paid for it
    assert pick_backend(_trial(compile_ms=79.0), None)[0] == "onnx"  # within timing noise of onnx
    assert pick_backend(_trial(compile_agrees=0.99), None)[0] == "onnx"
    disagreeing = _trial(onnx_ms=50.0)
    disagreeing["agreement"]["onnx"] = 0.98
    backend, reason = pick_backend(disagreeing, 10)
    assert backend == "torch" and "onnx argmax agreement 98.00 %" in reason
    no_compiler = _trial()
    del no_compiler["ms"]["torch.compile"], no_compiler["agreement"]["torch.compile"]
    no_compiler["unavailable"]["torch.compile"] = "--compile failed (no C++ compiler)"
    backend, reason = pick_backend(no_compiler, None)
    assert backend == "onnx" and "torch.compile unavailable: --compile failed" in reason


def test_sources_know_how_many_frames_they_hold(street, video):
    from seglite.inference.sources import resolve_sources

    assert resolve_sources(str(street))[0].expected_frames() == 2  # a.png and sub/b.jpg
    assert resolve_sources(str(video))[0].expected_frames() == 12
    assert resolve_sources("0")[0].expected_frames() is None


@pytest.fixture
def web(street, video):
    """A local web server with an image and a video: URLs as users paste them, without the internet."""
    import functools
    import http.server
    import shutil
    import threading

    folder = street.parent / "web"
    folder.mkdir(exist_ok=True)
    shutil.copy(street / "a.png", folder / "street photo.png")
    shutil.copy(video, folder / "drive.mp4")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_an_image_url_is_segmented_as_that_image_and_a_video_url_as_a_video(web, street, video, tmp_path):
    from seglite.errors import InputError
    from seglite.inference.predict import expand_sources
    from seglite.inference.segmenter import Segmenter
    from seglite.inference.sources import resolve_sources

    weights = _random_checkpoint(tmp_path / "w.pt", "espnetv2_s0.5", (128, 64))
    same = ["--weights", str(weights), "--device", "cpu", "--backend", "torch", "--format", "trainid"]
    result = _seglite("predict", f"{web}/street%20photo.png?size=large", *same, "--out", str(tmp_path / "url"))
    assert result.returncode == 0, result.stderr
    from_url = cv2.imread(str(tmp_path / "url" / "street photo_trainid.png"), cv2.IMREAD_UNCHANGED)
    seg = Segmenter(str(weights), backend="torch")
    np.testing.assert_array_equal(from_url, seg(street / "a.png"))
    np.testing.assert_array_equal(from_url, seg(f"{web}/street%20photo.png"))  # Python takes the URL too
    # A video file's URL has an end: read as a video (frames known, named after the file), not as a live stream.
    (source,) = resolve_sources(f"{web}/drive.mp4")
    assert (source.kind, source.video_stem(), source.expected_frames()) == ("video", "drive", 12)
    assert [s.kind for s in resolve_sources("rtsp://camera.local/live")] == ["stream"]
    (tmp_path / "list.txt").write_text(f"{web}/street%20photo.png\nweb/drive.mp4\n")  # a list: URLs as they are
    (tmp_path / "web").mkdir()
    (tmp_path / "web" / "drive.mp4").write_bytes(video.read_bytes())
    listed = expand_sources([str(tmp_path / "list.txt")])
    assert [(s.kind, s.images[0].name if s.images else s.video_stem()) for s in listed] == [
        ("images", "street photo.png"),
        ("video", "drive"),
    ]
    result = _seglite("predict", f"{web}/drive.mp4", *FAST, "--out", str(tmp_path / "video"))
    assert result.returncode == 0, result.stderr
    assert cv2.VideoCapture(str(tmp_path / "video" / "drive_overlay.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 12
    with pytest.raises(InputError, match=rf"^{web}/gone.jpg: cannot download \(File not found\); check the address"):
        resolve_sources(f"{web}/gone.jpg")  # predict says it before loading a model (exit 2)


@pytest.mark.parametrize("out_size", [(540, 960), (64, 128), (37, 53)])
def test_resize_argmax_equals_torch_upsample_then_argmax(out_size):
    import torch
    import torch.nn.functional as F

    from seglite.inference.postprocess import resize_argmax

    # Smooth class scores like a network's (noise would make near-ties, where float rounding legitimately differs).
    generator = torch.Generator().manual_seed(0)
    coarse = torch.randn(1, 19, 16, 32, generator=generator)
    logits = F.interpolate(coarse, size=(64, 128), mode="bilinear", align_corners=False)
    expected = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False).argmax(1)[0].numpy()
    labels = resize_argmax(logits[0], out_size)
    assert labels.shape == out_size and labels.dtype == np.uint8
    channels_last = logits.contiguous(memory_format=torch.channels_last)[0]
    assert np.array_equal(resize_argmax(channels_last, out_size), labels)
    assert len(np.unique(expected)) > 5
    assert (labels == expected).mean() >= 0.999


@pytest.mark.parametrize("classes", [19, 3])
def test_resize_argmax_in_threads_gives_the_same_labels(classes):
    import torch

    from seglite.inference.postprocess import resize_argmax

    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(classes, 32, 64, generator=generator).round()  # rounded: many exact ties between classes
    single = resize_argmax(logits, (45, 70))
    assert len(np.unique(single)) == classes
    for threads in (2, 3, 5):
        assert np.array_equal(resize_argmax(logits, (45, 70), threads), single)


def test_segmenter_batches_channels_last_without_copying_one_image(street):
    import torch

    from seglite.inference.segmenter import Segmenter

    seg = Segmenter(model="espnetv2_s0.5", size=(128, 64))
    prepared = seg.prepare(cv2.imread(str(street / "a.png")))
    batch = seg.stack([prepared])
    assert batch.is_contiguous(memory_format=torch.channels_last)
    assert batch.data_ptr() == prepared.data_ptr()
    two = seg.stack([prepared, prepared])
    assert two.is_contiguous(memory_format=torch.channels_last) and torch.equal(two[1], prepared)


def test_segmenter_takes_the_images_python_users_hold(street, tmp_path):
    """A path, a PIL image (RGB, or 16-bit grey), a 0-1 float array and a list give the maps the BGR uint8 array
    gives."""
    import torch
    from PIL import Image

    from seglite.errors import InputError
    from seglite.inference.segmenter import Segmenter

    seg = Segmenter(model="espnetv2_s0.5", size=(128, 64), backend="torch")
    path = street / "a.png"
    bgr = cv2.imread(str(path))
    expected = seg(bgr)
    assert len(np.unique(expected)) > 1
    assert np.array_equal(seg(path), expected) and np.array_equal(seg(str(path)), expected)
    assert np.array_equal(seg(Image.open(path)), expected)  # PIL's RGB turned to BGR, not taken as BGR
    assert not np.array_equal(seg(bgr[:, :, ::-1].copy()), expected)  # (the colour order matters to the net)
    assert np.array_equal(seg(bgr.astype(np.float32) / 255), expected)  # not cast to a black 0/1 image
    grey16 = (cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) << 8) | 0x80
    cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    from_file = seg(tmp_path / "grey16.png")
    assert np.array_equal(seg(Image.open(tmp_path / "grey16.png")), from_file)  # not clipped to a white image
    assert np.array_equal(seg(Image.open(tmp_path / "grey16.png").convert("I")), from_file)
    maps = seg([bgr, path])
    assert isinstance(maps, list) and all(np.array_equal(m, expected) for m in maps)
    with pytest.raises(InputError, match="torch tensor.*permute"):
        seg(torch.from_numpy(bgr).permute(2, 0, 1))
    with pytest.raises(InputError, match="dict; expected"):
        seg({"image": bgr})
    assert repr(seg) == "Segmenter(espnetv2_s0.5, 19 classes, 128x64, torch on cpu)"


def test_predict_video_from_python_never_replaces_an_earlier_result_unasked(video, street, tmp_path):
    from seglite.errors import InputError
    from seglite.inference.segmenter import Segmenter

    seg = Segmenter(model="espnetv2_s0.5", size=(160, 96), backend="torch")
    first = seg.predict_video(video, tmp_path, formats=("overlay", "trainid"), streams=1)
    overlay = tmp_path / "drive_overlay.mp4"
    assert first.outputs[0] == overlay and first.frames_written == 12
    before = overlay.stat().st_mtime_ns
    with pytest.raises(InputError, match=f"{overlay}: already exists; pass another out_dir, or exist_ok=True"):
        seg.predict_video(str(video), tmp_path, formats=("overlay",))
    assert overlay.stat().st_mtime_ns == before
    again = seg.predict_video(str(video), tmp_path, formats=("overlay",), streams=1, exist_ok=True)
    assert again.frames_written == 12 and overlay.stat().st_mtime_ns != before
    with pytest.raises(InputError, match="not one video; call the Segmenter on images"):
        seg.predict_video(street / "a.png", tmp_path / "img")


def test_an_out_that_names_a_file_is_refused_with_the_folder_to_pass(street, tmp_path):
    for name in ("result.png", "drive.MP4"):
        result = cli("predict", str(street / "a.png"), *FAST, "--out", str(tmp_path / name))
        assert result.returncode == 2 and not (tmp_path / name).exists()
        assert "names a folder, not a file; " in result.stderr
        assert result.stderr.endswith(f"pass a folder, e.g. --out {tmp_path / Path(name).stem}\n")
    (tmp_path / "v1.png").mkdir()  # an existing folder of that name is a folder
    assert cli("predict", str(street / "a.png"), *FAST, "--out", str(tmp_path / "v1.png")).returncode == 0


def test_a_device_that_is_not_there_is_one_line_naming_what_is(street, monkeypatch):
    import torch

    from seglite.devices import resolve_device
    from seglite.errors import DeviceError

    for device, message in (
        ("mps", "--device mps: no Apple GPU (MPS) is visible to PyTorch here; use --device cpu or auto"),
        ("gpu", "--device 'gpu': expected auto, cpu, cuda, cuda:N or mps"),
        ("xpu", "--device 'xpu': expected auto, cpu, cuda, cuda:N or mps"),  # a torch device seglite never runs
    ):
        result = cli("predict", str(street), "--model", "espnetv2_s0.5", "--device", device)
        assert result.returncode == 2 and result.stderr == f"error: {message}\n"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(DeviceError, match=r"--device cuda:1: PyTorch sees 1 CUDA GPU\(s\), cuda:0 to cuda:0"):
        resolve_device("cuda:1")


def test_decoding_and_encoding_wait_for_the_model(video, tmp_path):
    """On a CPU, the pipeline's decoder and encoder never work while the model runs (Turns)."""
    import contextlib
    import threading
    import time

    from seglite.inference import video as video_module
    from seglite.inference.segmenter import Segmenter

    seg = Segmenter(model="espnetv2_s0.5", size=(160, 96))
    spans: dict[str, list[tuple[float, float]]] = {"model": [], "side": []}
    lock = threading.Lock()

    def recorded(kind, context):
        def wrapper(self, *args, **kwargs):
            with context(self, *args, **kwargs):
                start = time.perf_counter()
                try:
                    yield
                finally:
                    with lock:
                        spans[kind].append((start, time.perf_counter()))

        return contextlib.contextmanager(wrapper)

    original_model, original_side = video_module.Turns.model, video_module.Turns.side
    video_module.Turns.model = recorded("model", original_model)
    video_module.Turns.side = recorded("side", original_side)
    try:
        result = seg.predict_video(str(video), str(tmp_path), streams=1)  # latency mode: the turns are on
    finally:
        video_module.Turns.model, video_module.Turns.side = original_model, original_side
    assert result.frames_written == 12
    assert len(spans["model"]) == 12 and len(spans["side"]) >= 24  # 12 decodes (+ the end) and 12 encodes
    for model_start, model_end in spans["model"]:
        for side_start, side_end in spans["side"]:
            assert side_end <= model_start or side_start >= model_end


def test_two_streams_run_at_once_on_half_the_threads_and_write_the_frames_of_one_stream(video, tmp_path):
    import threading

    import torch

    from seglite.inference.segmenter import Segmenter
    from seglite.inference.video import throughput_streams

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seg = Segmenter(model="espnetv2_s0.5", size=(160, 96), device="cpu")
        assert throughput_streams(seg, live=False) == 1  # a requested backend: not measured, latency mode
        seg.runtime.streams = 2  # what --backend auto sets where two streams measured faster (streams_pay)
        assert throughput_streams(seg, live=False) == 2 and throughput_streams(seg, live=True) == 1
        torch.set_num_threads(1)  # a torchrun rank or a busy machine: no thread to split
        assert throughput_streams(seg, live=False) == 1
        torch.set_num_threads(2)
        forward, calls, threads_seen = seg.forward_for_labels, [], []
        both_running = threading.Barrier(2, timeout=30)  # the first two frames must be in the model together

        def meeting(batch):
            calls.append(batch)
            threads_seen.append(torch.get_num_threads())
            if len(calls) <= 2 and threads_seen[-1] == 1:
                both_running.wait()
            return forward(batch)

        one = seg.predict_video(str(video), str(tmp_path / "one"), formats=("trainid",), streams=1)
        assert one.streams == 1
        seg.forward_for_labels = meeting
        two = seg.predict_video(str(video), str(tmp_path / "two"), formats=("trainid",))  # default: throughput
        assert two.streams == 2 and two.frames_written == 12 and len(calls) == 12
        assert set(threads_seen) == {1} and torch.get_num_threads() == 2  # each stream one thread; restored after
        names = sorted(path.name for path in (tmp_path / "one" / "drive_trainid").iterdir())
        assert names == [f"{i:06d}.png" for i in range(12)]
        assert names == sorted(path.name for path in (tmp_path / "two" / "drive_trainid").iterdir())
        masks = {
            run: [cv2.imread(str(tmp_path / run / "drive_trainid" / n), 0).tobytes() for n in names]
            for run in ("one", "two")
        }
        assert masks["one"] == masks["two"]  # the same labels, frame by frame, in order
        assert len(set(masks["one"])) > 6  # and the frames differ, so an order swap would show
    finally:
        torch.set_num_threads(threads)


def test_video_files_decode_in_one_thread_on_a_cpu(video):
    from seglite.inference.sources import open_video

    assert open_video(str(video), decode_threads=1)[0].get(cv2.CAP_PROP_N_THREADS) == 1


def test_resize_argmax_ties_keep_the_first_class_and_channels_last_input_works():
    import torch

    from seglite.inference.postprocess import resize_argmax

    logits = torch.zeros(4, 3, 5)
    logits[2, 0, :] = 1.0  # class 2 wins the first row
    logits[1, 1, :] = 1.0
    logits[3, 1, :] = 1.0  # classes 1 and 3 tie on the second row
    channels_last = logits[None].contiguous(memory_format=torch.channels_last)[0]
    labels = resize_argmax(channels_last, (3, 5))
    assert labels[0].tolist() == [2] * 5 and labels[1].tolist() == [1] * 5 and labels[2].tolist() == [0] * 5


def _random_checkpoint(path: Path, model: str, size: tuple[int, int]) -> Path:
    import torch

    import seglite
    from seglite.data.labels import CLASS_NAMES
    from seglite.zoo.checkpoint import atomic_torch_save, checkpoint_dict
    from seglite.zoo.preprocess import IMAGENET

    torch.manual_seed(0)
    atomic_torch_save(checkpoint_dict(model, seglite.create_model(model), CLASS_NAMES, IMAGENET.with_size(size)), path)
    return path


def test_int8_is_cached_only_when_accepted_and_predict_int8_runs_it(tmp_path, monkeypatch):
    import seglite
    from seglite.bench.quantize import int8_path, quantize_and_validate
    from seglite.data.synth import write_dataset
    from seglite.errors import SegliteError

    monkeypatch.setenv("SEGLITE_HOME", str(tmp_path / "home"))
    data = write_dataset(tmp_path / "data", train=3, val=2, size=(256, 128), progress=False)
    weights = str(_random_checkpoint(tmp_path / "w.pt", "deeplabv3p_lcnet_050", (256, 128)))
    frame = cv2.imread(str(next((data / "leftImg8bit" / "val").glob("*/*.png"))))

    refused = quantize_and_validate(None, weights, data, max_miou_drop=-1.0, require_faster=False, progress=False)
    assert not refused.accepted and refused.path is None and refused.calibration_frames == 3
    with pytest.raises(SegliteError, match="seglite quantize"):
        seglite.Segmenter(weights=weights, device="cpu", int8=True)

    accepted = quantize_and_validate(None, weights, data, max_miou_drop=100.0, require_faster=False, progress=False)
    assert accepted.accepted and Path(accepted.path).is_file()
    assert accepted.path == str(int8_path(seglite.load_weights(weights), (256, 128)))
    assert accepted.eval_frames == 2 and 0.0 <= accepted.int8_miou <= 100.0
    segmenter = seglite.Segmenter(weights=weights, device="cpu", int8=True)
    assert segmenter.backend == "onnx" and "quantize" in segmenter.backend_reason
    labels = segmenter.predict_batch([frame, frame])
    assert labels[0].shape == frame.shape[:2] and np.array_equal(labels[0], labels[1])


@pytest.mark.slow  # CI's second step (-m slow)
def test_quantize_refuses_int8_for_the_published_espnetv2_and_says_why(tmp_path):
    weights = require_realdata("weights", "espnetv2/espnetv2_s_0.5_city_1024x512.pth")
    data = require_realdata("cityscapes_val_sample")
    env = {**os.environ, "SEGLITE_HOME": str(tmp_path / "home")}
    result = subprocess.run(
        [sys.executable, "-m", "seglite", "quantize", "--weights", str(weights), "--data-root", str(data), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout)
    assert report["model"] == "espnetv2_s0.5" and report["eval_frames"] == 2 and not report["accepted"]
    assert "INT8 not offered for espnetv2_s0.5" in result.stderr and "Traceback" not in result.stderr
    assert not list((tmp_path / "home").rglob("*int8*.onnx"))
    random_weights = subprocess.run(
        [sys.executable, "-m", "seglite", "quantize", "--model", "espnetv1", "--data-root", str(data)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert random_weights.returncode == 2 and "pass --weights" in random_weights.stderr


@pytest.mark.slow  # 35 s: a full Inductor compile on 2 cores (test_backends compiles every family with -m slow)
def test_compile_gives_the_eager_predictions(tmp_path):
    import torch

    import seglite

    weights = str(_random_checkpoint(tmp_path / "w.pt", "espnetv2_s0.5", (256, 128)))
    frame = render_scene(300, 150, seed=4)[0]
    eager = seglite.Segmenter(weights=weights, device="cpu", backend="torch")
    compiled = seglite.Segmenter(weights=weights, device="cpu", compile=True)
    assert compiled.backend == "torch.compile" and "torch.compile" in compiled.backend_reason
    expected, got = eager.logits(frame), compiled.logits(frame)
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-4)
    assert (eager(frame) == compiled(frame)).mean() >= 0.999
    # Another batch shape (a last partial batch, a test scale) runs eager instead of compiling again.
    assert compiled.runtime.shape == (1, 3, 128, 256)
    pair = compiled.predict_batch([frame, frame[::-1].copy()])
    assert compiled.runtime.shape == (1, 3, 128, 256)
    assert all((a == b).all() for a, b in zip(pair, eager.predict_batch([frame, frame[::-1].copy()]), strict=True))


def test_half_on_cpu_is_bf16_and_keeps_the_published_predictions():
    import torch

    import seglite
    from seglite.devices import cpu_supports_bf16

    if not cpu_supports_bf16():
        pytest.skip("this CPU has no bf16 instructions (AVX512-BF16 or AMX)")
    weights = str(require_realdata("weights", "espnetv2", "espnetv2_s_0.5_city_1024x512.pth"))
    frame = cv2.imread(str(require_realdata("images", "frankfurt_000000_000294_leftImg8bit.png")))
    fp32 = seglite.Segmenter(weights=weights, device="cpu", backend="torch")
    bf16 = seglite.Segmenter(weights=weights, device="cpu", half=True)
    assert bf16.dtype == torch.bfloat16 and bf16.backend_reason == "bfloat16"
    assert (fp32(frame) == bf16(frame)).mean() >= 0.99


def test_half_on_a_cpu_without_bf16_says_to_drop_it(monkeypatch):
    import seglite
    import seglite.inference.segmenter as segmenter_module
    from seglite.errors import SegliteError

    monkeypatch.setattr(segmenter_module, "cpu_supports_bf16", lambda: False)
    with pytest.raises(SegliteError, match="drop --half"):
        seglite.Segmenter(model="espnetv2_s0.5", device="cpu", half=True)


def test_the_trial_does_not_compile_when_a_run_cannot_pay_a_typical_compile_back():
    from seglite.inference.autotune import compile_could_pay

    trial = {"ms": {"torch": 175.0, "onnx": 200.0}}
    # The 221-frame dash-cam clip at 175 ms a frame: at best ~15 s saved, less than a ~20 s compile.
    assert not compile_could_pay(trial, 221)
    assert compile_could_pay(trial, 1000) and compile_could_pay(trial, None)


@pytest.mark.slow  # CI's second step: keeps the default run under 10 minutes on 2 cores
def test_auto_backend_goes_on_when_an_export_fails(tmp_path, monkeypatch):
    import seglite
    import seglite.inference.onnx_export as onnx_export
    from seglite.errors import SegliteError

    def refuse(model, size, *args, **kwargs):  # what an exporter's limit looks like (ESPNetv2 at 480x360 was one)
        raise SegliteError(f"ONNX export of {model.model_name} at {size[0]}x{size[1]} failed: a node is not constant")

    monkeypatch.setenv("SEGLITE_HOME", str(tmp_path))
    monkeypatch.setattr(onnx_export, "export_onnx", refuse)
    segmenter = seglite.Segmenter(model="espnetv2_s0.5", size=(480, 360), device="cpu", backend="auto", frames=1)
    # OpenVINO converts it (from PyTorch, not through ONNX) where it is installed, and may win.
    assert segmenter.backend in ("torch", "openvino")
    reason = "onnx unavailable: ONNX export of espnetv2_s0.5 at 480x360 failed: a node is not constant"
    assert reason in segmenter.backend_reason


def test_colorize_paints_each_class_its_palette_colour():
    from seglite.inference.visualize import PALETTE_BGR, colorize, overlay, palette_lut

    ids = np.arange(256, dtype=np.uint8).repeat(3).reshape(16, 48)
    assert np.array_equal(colorize(ids), PALETTE_BGR[ids])
    custom = palette_lut([[10, 20, 30], [40, 50, 60]])  # RGB, as checkpoints store it
    painted = colorize(np.array([[0, 1, 2, 255]], np.uint8), custom)
    assert painted.tolist() == [[[30, 20, 10], [60, 50, 40], [0, 0, 0], [0, 0, 0]]]
    image = np.full((1, 4, 3), 100, np.uint8)
    blended = overlay(image, np.array([[0, 1, 255, 255]], np.uint8), alpha=0.5, lut=custom)
    assert blended[0, 2].tolist() == [100, 100, 100]  # ignored pixels keep the image
    assert blended[0, 0].tolist() == [65, 60, 55]
    # A class coloured black (a data set's background) keeps the image too: potholes do not darken the street.
    with_background = palette_lut([[0, 0, 0], [40, 50, 60]])
    blended = overlay(image, np.array([[0, 1, 0, 255]], np.uint8), alpha=0.5, lut=with_background)
    assert blended[0].tolist() == [[100, 100, 100], [80, 75, 70], [100, 100, 100], [100, 100, 100]]
    cityscapes = overlay(np.full((1, 19, 3), 100, np.uint8), np.arange(19, dtype=np.uint8)[None], alpha=0.5)
    assert (cityscapes != 100).any(axis=2).all()  # every Cityscapes class is painted


def test_folder_in_two_streams_writes_what_one_stream_writes(tmp_path):
    """Throughput mode for images: the same files and labels, the same failures, progress for every input, and the
    autotuned stream count reaches the images (their model calls run in the stream threads)."""
    import threading

    import torch

    from seglite.inference.predict import expand_sources, predict_images, predict_units, work_units
    from seglite.inference.segmenter import Segmenter

    folder = tmp_path / "in"
    folder.mkdir()
    for index, (width, height) in enumerate([(128, 64)] * 3 + [(160, 96)] * 2 + [(128, 64)]):
        cv2.imwrite(str(folder / f"f{index}.png"), render_scene(width, height, seed=index)[0])
    (folder / "f3b.png").write_text("not an image")
    images = tuple(sorted(folder.iterdir()))
    segmenter = Segmenter(model="espnetv2_s0.5", size=(128, 64), device="cpu", backend="torch")
    runs = {}
    for streams in (1, 2):
        ticks: list[Path] = []
        out = tmp_path / f"out{streams}"
        run = predict_images(
            segmenter, images, out, ("overlay", "trainid"), batch=2, on_image=ticks.append, streams=streams
        )
        assert sorted(ticks) == list(images)  # every input once (an unreadable one as soon as it was read)
        runs[streams] = run, {p.name: p.read_bytes() for p in out.iterdir() if p.name.endswith("_trainid.png")}
    (one, one_labels), (two, two_labels) = runs[1], runs[2]
    assert one.processed == two.processed == 6 and len(one_labels) == 6 and (one.streams, two.streams) == (1, 2)
    assert one_labels == two_labels  # the same labels: each stream runs the same network on its own images
    assert sorted(p.name for p in one.written) == sorted(p.name for p in two.written)
    assert one.failures == two.failures and len(one.failures) == 1 and "f3b.png" in one.failures[0]

    callers = record_calling_threads(segmenter, "predict_batch")
    segmenter.runtime.streams = 2  # what --backend auto decides where two streams pay
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # two threads to split (a process with one keeps one stream)
    try:
        sources = expand_sources([str(folder)])
        run = predict_units(segmenter, sources, work_units(sources), tmp_path / "auto", ("trainid",))
        assert run.processed == 6 and callers and all(name.startswith("seglite-stream") for name in callers)
        assert run.image_streams == 2 and run.image_seconds > 0
        callers.clear()  # a lone image keeps every thread: no stream for it
        sources = expand_sources([str(folder / "f0.png")])
        run = predict_units(segmenter, sources, work_units(sources), tmp_path / "one", ("trainid",))
        assert run.processed == 1 and callers == {threading.main_thread().name} and run.image_streams == 1
    finally:
        torch.set_num_threads(threads)


def test_a_slow_model_load_is_explained_in_a_log_file(street, tmp_path, monkeypatch):
    """No spinner where stderr is not a terminal: a long wait gets a line saying what it is instead."""
    import time

    import seglite.cli.common as common
    from seglite.errors import CheckpointError

    def slow_load(*args, **kwargs):
        time.sleep(1.0)  # as a first run at a size timing its backends
        raise CheckpointError("stop here")

    monkeypatch.setattr(common, "SLOW_LOAD_SECONDS", 0.5)
    monkeypatch.setattr(common, "Segmenter", slow_load)
    result = cli("predict", str(street / "a.png"), "--model", "espnetv2_s0.5", "--out", str(tmp_path / "out"))
    lines = result.stderr.splitlines()
    assert lines[-2].startswith("loading the model; a first run at this size times its backends"), lines
    assert lines[-1] == "error: stop here"

    def quick_load(*args, **kwargs):
        raise CheckpointError("quick")

    monkeypatch.setattr(common, "Segmenter", quick_load)
    quick = cli("predict", str(street / "a.png"), "--model", "espnetv2_s0.5", "--out", str(tmp_path / "out"))
    assert quick.stderr.splitlines()[-1] == "error: quick" and "loading the model" not in quick.stderr
