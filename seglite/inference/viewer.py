"""`predict --show`: a window that shows each overlay as it is made.

Tk (Python's standard library) draws it, by hand because nothing we depend on can at video rate: the OpenCV wheel
seglite installs is the headless one (albumentations depends on it, and a second, GUI, OpenCV in the same environment
breaks cv2), and matplotlib takes ~60 ms to draw a 1280x640 frame where a Tk photo takes ~6. The window lives in the
main thread, as GUI toolkits require (macOS above all); the pipeline's threads never touch it.
"""

from __future__ import annotations

import os
import sys
import time

import cv2
import numpy as np

from seglite.errors import InputError

MAX_WINDOW = (1280, 720)  # a 2048x1024 frame is shown at 1280x640: it fits a laptop screen and draws in a few ms
STOP_KEYS = ("q", "Q", "Escape")
OR_DROP_IT = "or drop --show (the outputs are written either way)"


class Viewer:
    """Shows BGR frames in one window until the user closes it or presses q / Esc (`closed` then turns True).

    Made before the model loads, so a machine without a display is told at once; the window appears with the first
    frame."""

    def __init__(self, title: str = "seglite predict"):
        try:
            import tkinter
        except ImportError:
            raise InputError(f"--show needs a window, and {_no_tk()}; {OR_DROP_IT}") from None
        if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise InputError(
                "--show needs a window, and this machine has no display (DISPLAY is not set; over SSH, connect with "
                f"`ssh -X`); {OR_DROP_IT}"
            )
        try:
            self._root = tkinter.Tk()
        except tkinter.TclError as exc:
            raise InputError(f"--show: cannot open a window ({exc}); {OR_DROP_IT}") from None
        self._tk = tkinter
        self._root.withdraw()
        self._root.title(f"{title}  (q or Esc: stop)")
        self._root.protocol("WM_DELETE_WINDOW", self.close)
        self._root.bind("<KeyPress>", self._on_key)
        self._photo = None
        self._label = None
        self.closed = False
        self.shown = 0

    def show(self, bgr: np.ndarray) -> bool:
        """Draw this frame; False once the window was closed (the caller then stops)."""
        if self.closed:
            return False
        rgb = cv2.cvtColor(_fit(bgr, MAX_WINDOW), cv2.COLOR_BGR2RGB)
        height, width = rgb.shape[:2]
        ppm = b"P6 %d %d 255 " % (width, height) + rgb.tobytes()  # binary PPM: Tk takes it as is, nothing to encode
        if self._photo is None or (self._photo.width(), self._photo.height()) != (width, height):
            self._photo = self._tk.PhotoImage(data=ppm, format="PPM", master=self._root)
            if self._label is None:
                self._label = self._tk.Label(self._root, borderwidth=0)
                self._label.pack()
                self._root.deiconify()
            self._label.configure(image=self._photo)
        else:
            self._photo.configure(data=ppm, format="PPM")
        self.shown += 1
        self._events()
        return not self.closed

    def pixel(self, x: int, y: int) -> tuple[int, int, int]:
        """The RGB colour the window shows at (x, y) of its picture."""
        return tuple(self._photo.get(x, y))

    def hold(self) -> None:
        """Keep the last frame up until the user closes the window (an image would otherwise only flash by)."""
        while not self.closed and self.shown:
            self._events()
            time.sleep(0.03)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._root.destroy()

    def _events(self) -> None:
        """Let Tk paint the window and deliver key presses and the close button."""
        if not self.closed:
            self._root.update()

    def _on_key(self, event) -> None:
        if event.keysym in STOP_KEYS:
            self.close()


def _no_tk() -> str:
    if sys.platform == "darwin":
        return "this Python has no Tk (Homebrew: `brew install python-tk`)"
    return "this Python has no Tk (Debian/Ubuntu: `sudo apt install python3-tk`; Fedora: `sudo dnf install python3-tkinter`)"


def _fit(image: np.ndarray, box: tuple[int, int]) -> np.ndarray:
    height, width = image.shape[:2]
    scale = min(box[0] / width, box[1] / height)
    if scale >= 1:
        return image
    return cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
