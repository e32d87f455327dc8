"""A shared machine: `seglite bench` and a short `seglite train`, alone and next to a one-thread busy program.

Each workload runs as the user would start it (the `seglite` command), with seglite's default (it samples the load at
start and runs one thread per free core; training re-checks every 10 s) and with the previous behaviour
(SEGLITE_SHARED_CPU=0: all cores' threads, OpenMP spinning), once alone and once next to `python -c "while True: pass"`.
Reported: the median latency or throughput, the slowdown busy/alone, the idle cost of the default against the previous
behaviour, and the floor: one thread alone against the default alone, i.e. the slowdown of running on the one core
another program leaves (PyTorch splits each operation evenly over its threads, so a thread on the busy core holds the
others up: two passive-waiting threads next to a busy loop measured as slow as one, four 3-9 % faster than one but
only with passive waiting, which costs ~30 % on an idle machine).
Run it alone on the machine (nothing else running). Usage: python scripts/bench_shared.py [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seglite.devices import cpu_description

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO.parent / "shared" / "realdata" / "camvid"
SEGLITE = [sys.executable, "-m", "seglite"]


@contextlib.contextmanager
def busy_program(active: bool):
    if not active:
        yield
        return
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    try:
        yield
    finally:
        process.kill()
        process.wait()


def _env(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "SEGLITE_SHARED_CPU")}
    if mode == "previous":
        env["SEGLITE_SHARED_CPU"] = "0"
    if mode == "one thread":
        env["OMP_NUM_THREADS"] = "1"
    return env


def _passive(stderr: str) -> bool:
    """Whether seglite found a busy core and ran fewer threads (it says so on stderr)."""
    return "cores busy" in stderr


def bench_ms(mode: str, iters: int) -> tuple[float, bool]:
    """Median latency of espnetv2_s1.0 (random weights; the same network cost) at 1024x512, eager PyTorch."""
    args = ["bench", "--model", "espnetv2_s1.0", "--backend", "torch", "--iters", str(iters), "--warmup", "5"]
    result = subprocess.run([*SEGLITE, *args, "--json"], capture_output=True, text=True, env=_env(mode), cwd=REPO)
    if result.returncode:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout)["median_ms"], _passive(result.stderr)


def train_images_per_s(mode: str, iters: int, data: list[str]) -> tuple[float, bool]:
    """Steady-state images/s of the CamVid s1.0 fine-tune recipe (generated data if CamVid is absent), from the
    run's metrics: the time between iteration 3 and the last, so start-up and the precision trial are left out."""
    with tempfile.TemporaryDirectory() as out:
        sets = [f"schedule.iters={iters}", "val_every=100000", "ckpt_every=100000", "data.val_limit=1"]
        args = ["train", data[0], *data[1:], "--out", out]
        for item in sets:
            args += ["--set", item]
        result = subprocess.run([*SEGLITE, *args], capture_output=True, text=True, env=_env(mode), cwd=REPO)
        if result.returncode:
            raise SystemExit(result.stderr)
        rows = [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "loss" in r]
    first, last = steps[2], steps[-1]
    batch = 8

    def elapsed(row: dict) -> float:
        return row["iteration"] * batch / row["images_per_second"]

    rate = (last["iteration"] - first["iteration"]) * batch / (elapsed(last) - elapsed(first))
    return rate, _passive(result.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run, noisier figures)")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    if CAMVID.is_dir():
        data = ["configs/camvid_espnetv2_s1.0_finetune.yaml", "--data-root", str(CAMVID)]
    else:
        synth = Path(tempfile.mkdtemp()) / "synth"
        subprocess.run([*SEGLITE, "data", "synth", str(synth), "--train", "16", "--val", "2"], check=True)
        data = ["configs/synth_espnetv2_s0.5.yaml", "--data-root", str(synth)]
    bench_iters, train_iters = (10, 6) if args.quick else (30, 12)
    workloads = {
        "bench ms (lower is better)": lambda mode: bench_ms(mode, bench_iters),
        "train img/s (higher is better)": lambda mode: train_images_per_s(mode, train_iters, data),
    }
    rows = []
    for name, run in workloads.items():
        values: dict[tuple[str, bool], list[float]] = {}
        for _ in range(args.rounds):
            for mode in ("seglite", "previous"):
                for busy in (False, True):
                    with busy_program(busy):
                        value, fewer = run(mode)
                    values.setdefault((mode, busy), []).append(value)
                    line = {"workload": name, "mode": mode, "busy": busy, "value": value, "fewer_threads": fewer}
                    print(json.dumps(line), flush=True)
            value, _ = run("one thread")  # alone: the speed of the one core left when another program holds one
            values.setdefault(("one thread", False), []).append(value)
        median = {key: statistics.median(v) for key, v in values.items()}
        latency = name.startswith("bench")
        for mode in ("seglite", "previous"):
            alone, busy = median[mode, False], median[mode, True]
            slowdown = busy / alone if latency else alone / busy
            idle_cost = (alone / median["previous", False] - 1) if latency else (median["previous", False] / alone - 1)
            rows.append((name, mode, alone, busy, slowdown, idle_cost))
        one = median["one thread", False]
        floor = one / median["seglite", False] if latency else median["seglite", False] / one
        rows.append((name, "floor: one thread, alone", one, None, floor, None))
    print("\n| workload | mode | alone | one core busy | slowdown | idle cost vs previous |")
    print("|---|---|---:|---:|---:|---:|")
    for name, mode, alone, busy, slowdown, idle_cost in rows:
        busy_cell = "" if busy is None else f"{busy:.1f}"
        cost_cell = "" if idle_cost is None else f"{idle_cost * 100:+.1f} %"
        print(f"| {name} | {mode} | {alone:.1f} | {busy_cell} | {slowdown:.2f}x | {cost_cell} |")


if __name__ == "__main__":
    main()
