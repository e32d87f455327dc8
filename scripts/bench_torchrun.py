"""Images/s of `seglite eval` and `seglite predict` in one process against `torchrun --nproc_per_node N` on this
machine (CPU ranks split the cores). On a 2-core machine the aim is parity: the point is that the same commands
scale out on a cluster. Run it alone (nothing else on the CPU).

Usage: python scripts/bench_torchrun.py [--weights W] [--camvid DIR] [--processes 2] [--rounds 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seglite.devices import cpu_description

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def timed(command: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(command)}\n{result.stderr[-2000:]}")
    return time.perf_counter() - start, result


def launcher(processes: int) -> list[str]:
    if processes == 1:
        return [sys.executable, "-m", "seglite"]
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes), "-m", "seglite"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--weights", default=str(REALDATA / "weights/espnetv2/espnetv2_s_1.0_city_1024x512.pth"))
    parser.add_argument("--camvid", type=Path, default=REALDATA / "camvid")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    from seglite.doctor import report

    facts = report()
    print(f"CPU: {cpu_description()}; torch {facts['packages'].get('torch')}")
    val = args.camvid / "val"
    images = sorted(val.glob("*.png"))
    count = len(images)
    common = ["--weights", args.weights, "--device", "cpu", "--backend", "torch", "--size", "480x360"]
    eval_args = ["eval", *common, "--data", "camvid", "--data-root", str(args.camvid), "--json"]
    eval_args += ["--class-map", str(REPO / "configs/class_maps/cityscapes_to_camvid.yaml")]
    rows = []
    for verb in ("eval", "predict"):
        seconds: dict[int, list[float]] = {1: [], args.processes: []}
        mious = set()
        for _ in range(args.rounds):
            for processes in seconds:  # alternate, so a drift of the VM's speed hits both
                with tempfile.TemporaryDirectory() as out:
                    command = launcher(processes)
                    if verb == "eval":
                        command += eval_args
                    else:
                        command += ["predict", str(val), *common, "--format", "trainid", "--out", out]
                    elapsed, result = timed(command)
                    if verb == "eval":
                        mious.add(json.loads(result.stdout)["miou"])
                seconds[processes].append(elapsed)
        one, many = (statistics.median(seconds[p]) for p in seconds)
        rows.append((verb, count, count / one, count / many, many / one, mious))
    print(
        f"\n{'verb':8s} {'images':>6s} {'1 proc img/s':>13s} {f'{args.processes} procs img/s':>14s} {'time ratio':>10s}"
    )
    for verb, n, single, sharded, ratio, mious in rows:
        same = "" if verb != "eval" else f"  mIoU {'identical' if len(mious) == 1 else f'DIFFERS {mious}'}"
        print(f"{verb:8s} {n:6d} {single:13.2f} {sharded:14.2f} {ratio:10.2f}{same}")
    print("(wall time of the whole command, start-up and model loading included; median of the rounds)")


if __name__ == "__main__":
    main()
