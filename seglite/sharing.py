"""Running well on a CPU that other programs use too. Imports nothing heavy: it must run before torch loads.

Why: PyTorch's OpenMP threads spin-wait for each other between operations (libgomp's default). When another
program holds one of the cores, the spinning thread burns its share of the busy core while the thread it waits for
is descheduled: on the 2-core test machine `seglite bench` ran 5x slower next to a one-line busy loop. Waiting
passively (OMP_WAIT_POLICY=PASSIVE) fixes that, but costs ~30 % on an idle machine, where spinning is what makes
small operations fast. libgomp reads the policy once, when torch is imported, so seglite samples the load first and
chooses then (scripts/bench_shared.py measures both cases).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

SAMPLE_SECONDS = 0.15
BUSY_CORE = 0.5  # another program using at least half a core counts as a busy core
USER_CHOICE = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")


@dataclass(frozen=True)
class CpuLoad:
    cores: int  # cores this process may run on
    busy_by_others: float  # cores' worth of time other programs used while sampling

    @property
    def free(self) -> int:
        return max(1, round(self.cores - self.busy_by_others))


def _cpu_times(cpus: set[int]) -> tuple[float, float]:
    """(busy, total) jiffies over the given CPUs, from /proc/stat."""
    busy = total = 0.0
    with open("/proc/stat") as handle:
        for line in handle:
            name, *fields = line.split()
            if not name.startswith("cpu") or name == "cpu" or int(name[3:]) not in cpus:
                continue
            values = [float(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            idle = values[3] + values[4]
            total += sum(values)
            busy += sum(values) - idle
    return busy, total


def _own_jiffies() -> float:
    with open("/proc/self/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return float(fields[11]) + float(fields[12])  # utime + stime (fields 14 and 15 of proc(5))


def measure_load(seconds: float = SAMPLE_SECONDS) -> CpuLoad | None:
    """How busy the cores we may use are, not counting this process; None where /proc is not there."""
    try:
        cpus = os.sched_getaffinity(0)
        busy0, total0 = _cpu_times(cpus)
        own0 = _own_jiffies()
        time.sleep(seconds)
        busy1, total1 = _cpu_times(cpus)
        own1 = _own_jiffies()
    except (OSError, AttributeError, ValueError, IndexError):
        return None
    elapsed = total1 - total0
    if elapsed <= 0:
        return None
    others = max(0.0, (busy1 - busy0) - (own1 - own0))
    return CpuLoad(len(cpus), len(cpus) * others / elapsed)


def prepare_openmp(environ: os._Environ | dict | None = None, load: CpuLoad | None = None) -> str | None:
    """Before torch is imported: wait passively if another program keeps a core busy. Returns what was done (for the
    log), None if nothing. The user's own OMP settings, and SEGLITE_SHARED_CPU=0, leave everything as it is."""
    environ = os.environ if environ is None else environ
    if environ.get("SEGLITE_SHARED_CPU", "1") == "0" or any(key in environ for key in USER_CHOICE):
        return None
    load = load or measure_load()
    if load is None or load.busy_by_others < BUSY_CORE:
        return None
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return (
        f"other programs keep {load.busy_by_others:.1f} of {load.cores} cores busy: OpenMP threads wait passively "
        "(OMP_WAIT_POLICY=PASSIVE; set it, or SEGLITE_SHARED_CPU=0, to choose yourself)"
    )
