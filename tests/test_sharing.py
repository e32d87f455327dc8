"""A shared CPU: the load is measured without counting seglite itself, and a busy core makes OpenMP wait passively."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from seglite.sharing import BUSY_CORE, CpuLoad, measure_load, prepare_openmp

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="needs Linux /proc")


@pytest.fixture
def busy_core():
    """Another program keeping one core busy: the one-line loop of the issue."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.3)  # let it start spinning
    yield process
    process.kill()
    process.wait()


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


def test_policy_follows_the_load_and_respects_the_user():
    busy, idle = CpuLoad(2, 1.0), CpuLoad(2, 0.1)
    env: dict = {}
    assert prepare_openmp(env, busy) and env["OMP_WAIT_POLICY"] == "PASSIVE"
    env = {}
    assert prepare_openmp(env, idle) is None and "OMP_WAIT_POLICY" not in env
    for mine in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}, {"SEGLITE_SHARED_CPU": "0"}):
        env = dict(mine)
        assert prepare_openmp(env, busy) is None and env == mine
    assert CpuLoad(2, 1.0).free == 1 and CpuLoad(2, 1.9).free == 1 and CpuLoad(4, 0.2).free == 4


def _doctor(settings: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "SEGLITE_SHARED_CPU")}
    result = subprocess.run(
        [sys.executable, "-m", "seglite", "doctor", "--json"], capture_output=True, text=True, env={**env, **settings}
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_cli_waits_passively_next_to_a_busy_program(busy_core):
    facts = _doctor({})
    assert facts["openmp_wait_policy"] == "PASSIVE" and "busy" in facts["shared_cpu"]
    mine = _doctor({"OMP_WAIT_POLICY": "ACTIVE"})
    assert mine["openmp_wait_policy"] == "ACTIVE"


def test_the_cli_can_act_before_torch_loads():
    """The wait policy only takes effect if it is set before torch (and its OpenMP runtime) loads."""
    code = "import sys, seglite, seglite.errors, seglite.sharing; assert 'torch' not in sys.modules, 'torch loaded'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
