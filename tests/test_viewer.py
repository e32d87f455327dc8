"""`seglite predict --show`: the window, what stops it, and what each kind of source keeps when it is closed.

The window tests run on a virtual X display (Xvfb; `scripts/test.sh` installs it where it can) and skip without one.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import cli

from seglite.data.synth import render_scene, write_video
from seglite.errors import InputError, Interrupted

FAST = ["--model", "espnetv2_s0.5", "--size", "128x64", "--device", "cpu", "--backend", "torch"]


@pytest.fixture(scope="module")
def display() -> str:
    """A virtual X display for this module's windows."""
    if shutil.which("Xvfb") is None:
        pytest.skip("no Xvfb here (Debian/Ubuntu: apt install xvfb) to open windows on")
    pytest.importorskip("tkinter", reason="this Python has no Tk (apt install python3-tk)")
    read, write = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as answer:
        number = answer.readline().strip()
    if not number:
        server.kill()
        pytest.skip("Xvfb did not start")
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def viewer(display, monkeypatch):
    from seglite.inference.viewer import Viewer

    monkeypatch.setenv("DISPLAY", display)
    window = Viewer("test")
    yield window
    window.close()


def press(viewer, key: str) -> None:
    """A key press as the window receives it from the keyboard."""
    root = viewer._root
    root.focus_force()
    root.update()
    root.event_generate("<KeyPress>", keysym=key, when="tail")
    root.update()


def press_when_shown(viewer, count: int, key: str = "q") -> None:
    """Press `key` once the window has shown `count` frames (as a user who has seen enough)."""
    show = viewer.show

    def show_then_press(bgr: np.ndarray) -> bool:
        show(bgr)
        if viewer.shown == count:
            press(viewer, key)
        return not viewer.closed

    viewer.show = show_then_press


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "drive.mp4", frames=12, size=(160, 96), fps=12.0)


@pytest.fixture(scope="module")
def segmenter():
    from seglite.inference.segmenter import Segmenter

    return Segmenter(model="espnetv2_s0.5", size=(128, 64), device="cpu", backend="torch")


def test_show_without_a_display_is_refused_before_the_model_loads(tmp_path, monkeypatch):
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), render_scene(160, 96, seed=1)[0])
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = cli("predict", str(image), *FAST, "--show", "--out", str(tmp_path / "out"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error: --show needs a window, and this machine has no display (DISPLAY is not set" in result.stderr
    assert "drop --show" in result.stderr and "espnetv2_s0.5 (" not in result.stderr  # no model was loaded
    assert not list((tmp_path / "out").glob("*.png"))


def test_show_without_tk_names_the_package_to_install(tmp_path, monkeypatch):
    from seglite.errors import InputError
    from seglite.inference.viewer import Viewer

    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setitem(sys.modules, "tkinter", None)  # what `import tkinter` meets in a Python built without Tk
    with pytest.raises(InputError, match="this Python has no Tk .*python3-tk"):
        Viewer()


def test_the_window_shows_the_frame_scaled_to_fit_and_q_stops_it(viewer):
    frame = np.zeros((1024, 2048, 3), np.uint8)
    frame[:, :1024] = (0, 0, 255)  # BGR: the left half red, the right half black
    assert viewer.show(frame)
    assert (viewer._photo.width(), viewer._photo.height()) == (1280, 640)  # fits the 1280x720 box, aspect kept
    assert viewer.pixel(100, 320) == (255, 0, 0) and viewer.pixel(1000, 320) == (0, 0, 0)
    frame[:] = (255, 0, 0)  # the next frame, blue, replaces it
    assert viewer.show(frame) and viewer.pixel(100, 320) == (0, 0, 255)
    press(viewer, "q")
    assert viewer.closed and not viewer.show(frame)


def test_hold_keeps_the_last_image_up_until_escape(viewer):
    viewer.show(np.full((64, 96, 3), 200, np.uint8))
    viewer._root.after(300, lambda: press(viewer, "Escape"))
    viewer.hold()
    assert viewer.closed


def test_closing_the_window_stops_a_video_file_like_ctrl_c_and_keeps_what_was_written(
    viewer, segmenter, video, tmp_path
):
    from seglite.inference.video import segment_video

    press_when_shown(viewer, 3)
    with pytest.raises(
        Interrupted, match=r"^by closing the window after 3 frame\(s\); kept .*drive_overlay\.partial\.mp4"
    ):
        segment_video(segmenter, str(video), tmp_path, "drive", streams=1, viewer=viewer)
    assert not (tmp_path / "drive_overlay.mp4").exists()
    capture = cv2.VideoCapture(str(tmp_path / "drive_overlay.partial.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 3


def test_closing_the_window_ends_a_stream_with_a_complete_recording(viewer, segmenter, video, tmp_path):
    from seglite.inference.video import segment_video

    press_when_shown(viewer, 4)
    # (every frame queued: a file read as a stream comes faster than the model, and its newest frame is its last)
    result = segment_video(segmenter, f"file://{video}", tmp_path, "stream", streams=1, viewer=viewer, realtime=False)
    assert result.frames_written == 4 and result.outputs == [tmp_path / "stream_overlay.mp4"]
    capture = cv2.VideoCapture(str(tmp_path / "stream_overlay.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 4
    ok, frame = capture.read()
    assert ok and frame.shape == (96, 160, 3)


def test_closing_the_window_stops_a_run_of_images(viewer, segmenter, tmp_path):
    from seglite.inference.predict import predict_images

    images = []
    for seed in range(3):
        images.append(tmp_path / f"{seed}.png")
        cv2.imwrite(str(images[-1]), render_scene(160, 96, seed=seed)[0])
    press_when_shown(viewer, 1)
    with pytest.raises(Interrupted, match=r"^by closing the window after 1 of 3 image\(s\)"):
        predict_images(segmenter, tuple(images), tmp_path / "out", ("overlay",), viewer=viewer)
    assert [p.name for p in (tmp_path / "out").glob("*.png")] == ["0_overlay.png"]


def test_predict_show_runs_a_video_end_to_end_in_a_window(display, video, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "seglite", "predict", str(video), *FAST, "--show", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "DISPLAY": display},
    )
    assert result.returncode == 0, result.stderr
    capture = cv2.VideoCapture(str(tmp_path / "drive_overlay.mp4"))
    assert capture.get(cv2.CAP_PROP_FRAME_COUNT) == 12


def test_predict_video_from_python_shows_it_too(display, segmenter, video, tmp_path, monkeypatch):
    monkeypatch.setenv("DISPLAY", display)
    result = segmenter.predict_video(video, tmp_path, streams=1, show=True)
    assert result.frames_written == 12 and (tmp_path / "drive_overlay.mp4").is_file()
    monkeypatch.delenv("DISPLAY")
    with pytest.raises(InputError, match="--show needs a window"):
        segmenter.predict_video(video, tmp_path / "again", show=True)
    assert not (tmp_path / "again").exists()  # refused before anything was made
