"""Progress where the output is a log file: lines instead of a bar that would show only at the end, or never."""

from __future__ import annotations

import io
import re
import time

from rich.console import Console

from seglite.progress import Progress


def _run(console: Console, every: float) -> None:
    with Progress(console=console, every=every, transient=True) as progress:
        frames = progress.add_task("frames", total=6, rate="")
        for done in range(1, 7):
            time.sleep(0.03)
            progress.advance(frames)
            progress.update(frames, rate=f"{done}.0 FPS")  # updated once more after it finished
        images = progress.add_task("images", total=None)
        progress.advance(images)


def test_a_log_file_gets_a_line_per_interval_and_one_at_the_end():
    log = io.StringIO()
    _run(Console(file=log), every=0.05)
    lines = log.getvalue().splitlines()
    assert 2 <= len(lines) <= 4, lines
    assert all(re.fullmatch(r"frames: [1-5]/6 [1-5]\.0 FPS, 0:00:0\d left", line) for line in lines[:-1]), lines
    assert re.fullmatch(r"frames: 6/6 \d\.0 FPS, done in 0:00:0\d", lines[-1]), lines  # said once
    # a task of unknown length says nothing before its interval is up


def test_a_terminal_gets_the_bar_and_no_lines():
    screen = io.StringIO()
    _run(Console(file=screen, force_terminal=True, width=100), every=0.05)
    assert "left" not in screen.getvalue() and "done in" not in screen.getvalue()
