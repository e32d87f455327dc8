"""A shared CPU: the load is measured without counting seglite itself, a busy core means one thread fewer, and long
runs take the cores back when the other program stops."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from seglite.sharing import BUSY_CORE, CpuLoad, ThreadGovernor, measure_load, share_cpu

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc")


def _start_other_program() -> int:
    """The one-line busy loop of the issue, started through a shell that exits: not our child (seglite counts its own
    children, e.g. data loader workers, as its own load)."""
    code = "while True: pass"
    shell = subprocess.run(
        ["sh", "-c", f"{sys.executable} -c '{code}' >/dev/null 2>&1 & echo $!"], capture_output=True, text=True
    )
    return int(shell.stdout.strip())


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def busy_core():
    pid = _start_other_program()
    time.sleep(0.3)  # let it start spinning
    yield pid
    _stop(pid)


def test_a_busy_program_is_measured(busy_core):
    load = measure_load(0.5)
    assert load is not None and load.cores == len(os.sched_getaffinity(0))
    assert load.busy_by_others >= BUSY_CORE, load


def test_this_process_own_work_is_not_counted_as_others():
    stop = threading.Event()

    def spin():  # the sampling thread sleeps, so this one runs: our own CPU time, not another program's
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin)
    worker.start()
    try:
        load = measure_load(0.5)
    finally:
        stop.set()
        worker.join()
    assert load is not None and load.busy_by_others < BUSY_CORE, load


@pytest.fixture
def threads(monkeypatch):
    """Restore torch's thread count; no user settings in the environment."""
    for key in ("OMP_NUM_THREADS", "SEGLITE_SHARED_CPU"):
        monkeypatch.delenv(key, raising=False)
    before = torch.get_num_threads()
    yield before
    torch.set_num_threads(before)


def test_thread_count_follows_the_load_and_respects_the_user(threads, monkeypatch):
    torch.set_num_threads(2)
    assert share_cpu(CpuLoad(2, 0.1)) is None and torch.get_num_threads() == 2
    assert "1 thread" in share_cpu(CpuLoad(2, 1.0)) and torch.get_num_threads() == 1
    torch.set_num_threads(2)
    for key, value in (("OMP_NUM_THREADS", "2"), ("SEGLITE_SHARED_CPU", "0")):
        monkeypatch.setenv(key, value)
        assert share_cpu(CpuLoad(2, 1.0)) is None and torch.get_num_threads() == 2
        monkeypatch.delenv(key)
    assert CpuLoad(2, 1.0).free == 1 and CpuLoad(2, 1.9).free == 1 and CpuLoad(4, 0.2).free == 4


def test_a_long_run_gives_up_a_busy_core_and_takes_it_back(threads):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores")
    torch.set_num_threads(2)
    share_cpu(CpuLoad(2, 0.0))  # remembers the usual count
    governor = ThreadGovernor(every_s=0.0)
    pid = _start_other_program()
    try:
        time.sleep(0.5)
        governor.poll()  # the window since construction saw the busy program
        assert torch.get_num_threads() == 1
    finally:
        _stop(pid)
    time.sleep(0.5)
    assert governor.poll() is not None and torch.get_num_threads() == 2


def _doctor(settings: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "SEGLITE_SHARED_CPU")}
    result = subprocess.run(
        [sys.executable, "-m", "seglite", "doctor", "--json"], capture_output=True, text=True, env={**env, **settings}
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_cli_runs_fewer_threads_next_to_a_busy_program(busy_core):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs 2 cores")
    facts = _doctor({})
    assert "busy" in facts["shared_cpu"] and facts["torch_threads"] < len(os.sched_getaffinity(0))
    mine = _doctor({"OMP_NUM_THREADS": "2"})
    assert mine["torch_threads"] == 2


def test_own_child_processes_count_as_own_work():
    """Data loader workers are seglite's own load: a busy child must not make it give up threads."""
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        load = measure_load(0.5)
    finally:
        child.kill()
        child.wait()
    assert load is not None and load.busy_by_others < BUSY_CORE, load
