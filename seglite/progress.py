"""Progress bars that also say how far a run is in a log file.

rich draws a bar only on a terminal; where the output goes to a file (`nohup seglite predict ... > log &`, a cluster
job) a transient bar shows nothing at all, and a lasting one appears once, at the end. There this Progress writes a
line per task every `every` seconds and when the task ends instead (rich has no such mode, so it is written here).
"""

from __future__ import annotations

import datetime
import time

from rich import progress as rich_progress
from rich.console import Console

LOG_EVERY_SECONDS = 30.0


class Progress(rich_progress.Progress):
    """rich.progress.Progress on a terminal; elsewhere lines such as `eval espnetv2_s2.0: 120/500, 0:02:10 left`."""

    def __init__(
        self,
        *columns,
        console: Console | None = None,
        disable: bool = False,
        every: float = LOG_EVERY_SECONDS,
        **kwargs,
    ):
        console = console or Console()
        self.lines = not disable and not console.is_terminal and not console.is_jupyter
        super().__init__(*columns, console=console, disable=disable or self.lines, **kwargs)
        self.every = every
        self._said: dict[rich_progress.TaskID, float] = {}

    def add_task(self, description: str, *args, **kwargs) -> rich_progress.TaskID:
        task = super().add_task(description, *args, **kwargs)
        self._said[task] = time.monotonic()
        return task

    def update(self, task_id: rich_progress.TaskID, *args, **kwargs) -> None:
        super().update(task_id, *args, **kwargs)
        self._maybe_say(task_id)

    def advance(self, task_id: rich_progress.TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_say(task_id)

    def _maybe_say(self, task_id: rich_progress.TaskID) -> None:
        if not self.lines or self._said[task_id] == float("inf"):
            return
        now = time.monotonic()
        task = next(t for t in self.tasks if t.id == task_id)
        if not task.finished and now - self._said[task_id] < self.every:
            return
        self._said[task_id] = float("inf") if task.finished else now  # a finished task is said once
        self.console.print(describe(task), markup=False, highlight=False, soft_wrap=True)


def describe(task: rich_progress.Task) -> str:
    """`NAME: DONE/TOTAL FIELDS, TIME left` (the total and the time left where known)."""
    done = f"{task.completed:.12g}/{task.total:.12g}" if task.total is not None else f"{task.completed:.12g} done"
    fields = " ".join(str(v) for v in task.fields.values() if isinstance(v, str) and v)
    text = f"{task.description}: {done}" + (f" {fields}" if fields else "")
    if task.finished:
        return f"{text}, done in {datetime.timedelta(seconds=round(task.finished_time or task.elapsed or 0))}"
    if task.time_remaining is not None:
        text += f", {datetime.timedelta(seconds=round(task.time_remaining))} left"
    return text
