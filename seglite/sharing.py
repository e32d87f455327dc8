"""Running well on a CPU that other programs use too. Every command calls share_cpu first.

Why: PyTorch's OpenMP threads spin-wait for each other between operations. When another program holds one of the
cores, a thread spins on it while the thread it waits for is descheduled: on the 2-core test machine `seglite bench`
ran 8-10x slower next to a one-line busy loop. Running only as many threads as there are free cores removes the
waiting (one thread never waits for another) and is as fast there as passive waiting (OMP_WAIT_POLICY=PASSIVE), which
costs ~30 % on an idle machine and cannot change once torch has loaded; a thread count can change at any time, so
long runs re-check the load and take the cores back when the other program stops (scripts/bench_shared.py).
"""

from __future__ import annotations

import collections
import contextlib
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")

SAMPLE_SECONDS = 0.15
BUSY_CORE = 0.5  # other programs using at least half a core count as a busy core


@dataclass(frozen=True)
class CpuLoad:
    cores: int  # cores this process may run on
    busy_by_others: float  # cores' worth of time other programs used while sampling

    @property
    def free(self) -> int:
        return max(1, round(self.cores - self.busy_by_others))

    @property
    def shared(self) -> bool:
        return self.busy_by_others >= BUSY_CORE


@dataclass(frozen=True)
class CpuSample:
    busy: float  # jiffies the allowed CPUs spent busy
    total: float
    own: float  # jiffies this process and its children (data loader workers) used


def _cpu_times(cpus: set[int]) -> tuple[float, float]:
    busy = total = 0.0
    with open("/proc/stat") as handle:
        for line in handle:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                continue
            values = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            total += sum(values)
            busy += sum(values) - values[3] - values[4]
    return busy, total


def _jiffies(pid: str) -> float:
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return float(fields[11]) + float(fields[12])  # utime + stime (fields 14 and 15 of proc(5))


def _children() -> list[str]:
    pids = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as handle:
                pids += handle.read().split()
        except OSError:  # kernels without CONFIG_PROC_CHILDREN: workers then count as others
            pass
    return pids


def sample() -> CpuSample | None:
    try:
        busy, total = _cpu_times(os.sched_getaffinity(0))
        own = _jiffies("self")
        for pid in _children():
            try:
                own += _jiffies(pid)
            except OSError:  # exited meanwhile
                pass
    except (OSError, AttributeError, ValueError, IndexError):
        return None
    return CpuSample(busy, total, own)


def load_between(before: CpuSample | None, after: CpuSample | None) -> CpuLoad | None:
    if before is None or after is None or after.total <= before.total:
        return None
    cores = len(os.sched_getaffinity(0))
    others = max(0.0, (after.busy - before.busy) - (after.own - before.own))
    return CpuLoad(cores, cores * others / (after.total - before.total))


def measure_load(seconds: float = SAMPLE_SECONDS) -> CpuLoad | None:
    """How busy the cores we may use are, not counting this process; None where /proc is not there."""
    before = sample()
    time.sleep(seconds)
    return load_between(before, sample())


_state: dict = {"load": None, "default_threads": None}


def launched() -> bool:
    """Whether torchrun (or a launcher setting WORLD_SIZE > 1 the same way) started this process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or "TORCHELASTIC_RUN_ID" in os.environ


def local_processes() -> int:
    """How many processes of this run share this machine's cores (torchrun's LOCAL_WORLD_SIZE; 1 without it)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))) if launched() else 1


def _enabled() -> bool:
    """Off with SEGLITE_SHARED_CPU=0 and when the user fixed the thread count (OMP_NUM_THREADS)."""
    return os.environ.get("SEGLITE_SHARED_CPU", "1") != "0" and "OMP_NUM_THREADS" not in os.environ


def _note(load: CpuLoad, threads: int) -> str:
    return f"other programs keep {load.busy_by_others:.1f} of {load.cores} cores busy: {threads} thread(s)"


def share_cpu(load: CpuLoad | None = None) -> str | None:
    """At the start of a command: one thread per free core if other programs keep cores busy. Returns what was done
    (for the log), None if nothing. `--threads` set afterwards overrides it."""
    import torch

    _state["default_threads"] = torch.get_num_threads()
    ranks = local_processes()
    if ranks > 1 and os.environ.get("SEGLITE_SHARED_CPU", "1") != "0":
        # torchrun sets OMP_NUM_THREADS=1 for every process; on a CPU the ranks split the cores between them.
        cores = len(os.sched_getaffinity(0))
        threads = max(1, cores // ranks)
        torch.set_num_threads(threads)
        _state["default_threads"] = threads
        return f"{ranks} processes on this machine share its {cores} cores: {threads} thread(s) each"
    if not _enabled():
        return None
    load = load or measure_load()
    _state["load"] = load
    if load is None or not load.shared:
        return None
    threads = min(load.free, torch.get_num_threads())
    torch.set_num_threads(threads)
    return _note(load, threads) + " (--threads, OMP_NUM_THREADS or SEGLITE_SHARED_CPU=0 to choose yourself)"


def cpu_shared() -> bool:
    """Whether share_cpu found other programs busy (ONNX Runtime then does not spin either)."""
    load = _state["load"]
    return load is not None and load.shared


class ThreadGovernor:
    """For long runs (training): every `every_s` seconds, one thread per free core, and the usual count again once
    the other programs stop. `poll()` is cheap (a few /proc reads) and returns a message when it changed the count."""

    def __init__(self, every_s: float = 10.0):
        import torch

        self.torch, self.every_s, self.enabled = torch, every_s, _enabled()
        self.idle_threads = _state["default_threads"] or torch.get_num_threads()
        self.last, self.when = sample(), time.monotonic()

    def poll(self) -> str | None:
        if not self.enabled or time.monotonic() - self.when < self.every_s:
            return None
        now = sample()
        load = load_between(self.last, now)
        self.last, self.when = now, time.monotonic()
        if load is None:
            return None
        want = min(load.free, self.idle_threads) if load.shared else self.idle_threads
        if want == self.torch.get_num_threads():
            return None
        self.torch.set_num_threads(want)
        return _note(load, want) if load.shared else f"the cores are free again: {want} threads"


@contextlib.contextmanager
def split_threads(parts: int) -> Iterator[None]:
    """PyTorch's threads shared out among `parts` calls that run at once (throughput mode), restored after. The count
    applies to each calling thread's own parallel region, so every call gets its share."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // parts))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def in_streams(work: Callable[[Item], Result], items: Iterable[Item], streams: int) -> Iterator[Result]:
    """work(item) for `streams` items at once, each with 1/streams of the threads, yielded in input order (throughput
    mode for offline sources: one thread a call never waits on another, and each call's I/O overlaps the others'
    model). Items are pulled only as calls finish, so at most `streams` are in flight."""
    pool = ThreadPoolExecutor(streams, thread_name_prefix="seglite-stream")
    pending: collections.deque[Future] = collections.deque()
    try:
        with split_threads(streams):
            for item in items:
                pending.append(pool.submit(work, item))
                if len(pending) >= streams:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def single_threaded_opencv(enabled: bool) -> Iterator[None]:
    """OpenCV's own thread pool would compete with the model's threads where the pipeline's threads (or streams) are
    the parallelism."""
    import cv2

    previous = cv2.getNumThreads()
    if enabled:
        cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)
