"""Training-step throughput: seglite's step against a plain eager fp32 PyTorch loop, same model, data and run.

Every variant starts from the same weights and sees the same batches (real CamVid crops when ../shared/realdata/camvid
is there, else generated frames), decoded once up front so only the step is timed. Variants run in turns, round after
round, and each ratio is taken within a round (same machine state), then the median over rounds. Each variant runs in
a process of its own (see VariantProcess), and each turn starts with an untimed step on the warm-up batch: a process's
first step after the others ran took up to 2.5x its usual time (its freed memory went back to the OS and comes back
page by page).
  plain          model(x) -> F.cross_entropy -> backward -> torch.optim.Adam (default), NCHW fp32
  allocator      the plain loop with freed memory kept for reuse (seglite.devices.reuse_freed_memory)
  channels_last  NHWC activations and weights
  bf16           CPU autocast to bf16 (native on AVX512-BF16 / AMX CPUs, emulated and slow elsewhere)
  fused          fused Adam (one kernel for the whole update)
  fused_norm     BatchNorm(+residual)+PReLU as compiled kernels (seglite.models.fused; compiled in the warm-up step)
  compile        torch.compile of the model (--compile; minutes of compilation first)
  seglite        what `seglite train` runs: allocator + channels_last + fused + fused_norm + the precision its
                 first-batch trial picks (fused_norm applies to fp32 only)
The loss columns show the curves agree: the last step's loss per variant, and the largest gap to plain's curve.
Run alone on the machine. Usage: python scripts/bench_train.py [--models ...] [--rounds 3] [--steps 4] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seglite.data.dataset import SegmentationDataset
from seglite.data.datasets import load_dataset
from seglite.data.synth import write_dataset
from seglite.data.transforms import train_transform
from seglite.devices import cpu_description, reuse_freed_memory
from seglite.models import fused
from seglite.models.registry import create_model
from seglite.training.losses import SegmentationLoss
from seglite.training.step import StepOptions, TrainStep, faster_precision, time_precisions
from seglite.zoo.preprocess import IMAGENET

CAMVID = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "camvid"
MODELS = ("espnetv2_s1.0", "deeplabv3p_lcnet_050")


def batches(root: Path | None, count: int, batch: int, crop: tuple[int, int]) -> tuple[list, int, str]:
    if root is not None and root.is_dir():
        spec, name = load_dataset("camvid", str(root)), "CamVid train"
    else:
        tmp = Path(tempfile.mkdtemp())
        spec, name = load_dataset("cityscapes", str(write_dataset(tmp, train=count * batch, val=1))), "generated"
    dataset = SegmentationDataset(spec, "train", IMAGENET, train_transform(crop, (0.75, 1.5), True, 0.2))
    generator = torch.Generator().manual_seed(0)
    order = torch.randperm(len(dataset), generator=generator).tolist()
    out = []
    for b in range(count):
        items = [dataset[(order[(b * batch + i) % len(order)], b * batch + i)] for i in range(batch)]
        out.append((torch.stack([x for x, _ in items]), torch.stack([y for _, y in items])))
    return out, spec.num_classes, name


class PlainLoop:
    """The baseline a user writes first."""

    def __init__(self, model, lr: float):
        self.model, self.optimizer = model, torch.optim.Adam(model.parameters(), lr=lr)

    def __call__(self, images, labels):
        loss = F.cross_entropy(self.model(images), labels, ignore_index=255)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss


def _step_for(variant: str, model, lr: float, data: list) -> tuple:
    """The step a variant runs, built inside its own process; and the seglite variant's precision trial."""
    if variant in ("allocator", "seglite"):
        reuse_freed_memory()
    if variant in ("fused_norm", "seglite"):
        fused.enable(fused.compiler_found())
    if variant in ("plain", "allocator"):
        return PlainLoop(model, lr), None
    if variant == "seglite":
        trial_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        options = [StepOptions(p, True) for p in ("fp32", "bf16")]
        seconds = time_precisions(trial_model, SegmentationLoss(), *data[0], options)
        picked = faster_precision(seconds)
        return seglite_step(model, StepOptions(picked, True), True, lr), {"picked": picked, "trial_s": seconds}
    options = {
        "channels_last": (StepOptions("fp32", True), False, False),
        "bf16": (StepOptions("bf16", False), False, False),
        "fused": (StepOptions("fp32", False), True, False),
        "fused_norm": (StepOptions("fp32", False), False, False),
        "compile": (StepOptions("fp32", False), False, True),
    }[variant]
    return seglite_step(model, options[0], options[1], lr, options[2]), None


class VariantProcess:
    """One variant in a child process of its own (this script, --worker): it holds the same weights and batches and
    runs the batch it is sent. Why processes: a user's loop runs alone in its process, and glibc's allocator state (a
    lever of its own) is per process; several networks in one process also made the default allocator's page faults
    up to 1.5x costlier than in a process with one network."""

    def __init__(self, variant: str, name: str, num_classes: int, state: dict, data: list, lr: float, threads: int):
        self.file = Path(tempfile.mkdtemp()) / "job.pt"
        job = {"name": name, "num_classes": num_classes, "state": state, "data": data, "lr": lr, "threads": threads}
        torch.save({**job, "variant": variant}, self.file)
        command = [sys.executable, __file__, "--worker", str(self.file)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = json.loads(self._reply())

    def _reply(self) -> str:
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit("a variant's worker process stopped; see its error above")
        return line

    def __call__(self, index: int) -> float:
        self.process.stdin.write(f"{index}\n")
        self.process.stdin.flush()
        return float(self._reply())

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
        self.file.unlink()


def worker(file: Path) -> None:
    job = torch.load(file, weights_only=True)
    torch.set_num_threads(job["threads"])
    model = create_model(job["name"], num_classes=job["num_classes"]).train()
    model.load_state_dict(job["state"])
    data = job["data"]
    step, info = _step_for(job["variant"], model, job["lr"], data)
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        print(step(*data[int(line)]).item(), flush=True)


def seglite_step(model, options: StepOptions, fused: bool, lr: float, compiled: bool = False) -> TrainStep:
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=fused)
    net = torch.compile(model) if compiled else model
    return TrainStep(net, SegmentationLoss(), optimizer, None, torch.device("cpu"), options)


def bench_model(
    name: str, data: list, num_classes: int, rounds: int, with_compile: bool, lr: float, threads: int
) -> list[dict]:
    torch.manual_seed(0)
    state = create_model(name, num_classes=num_classes).state_dict()
    names = ["plain", "allocator", "channels_last", "bf16", "fused", "fused_norm", "seglite"] + (
        ["compile"] if with_compile else []
    )
    variants = {}
    for v in names:  # one at a time: their start-up (and the seglite trial) is not timed against another's
        variants[v] = VariantProcess(v, name, num_classes, state, data, lr, threads)
    losses: dict[str, list[float]] = {v: [] for v in variants}
    warm = {}
    for v, step in variants.items():  # warm-up on batch 0 (oneDNN primitives, compilation); not timed, not counted
        start = time.perf_counter()
        losses[v].append(step(0))
        warm[v] = time.perf_counter() - start
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v, step in variants.items():
            losses[v].append(step(0))  # untimed: see the module's docstring
            start = time.perf_counter()
            for index in range(1, len(data)):
                losses[v].append(step(index))
            times[v].append(time.perf_counter() - start)
    for step in variants.values():
        step.close()
    seglite = variants["seglite"].info
    images = (len(data) - 1) * data[0][0].shape[0]
    rows = []
    for v in variants:
        ratios = [p / t for p, t in zip(times["plain"], times[v], strict=True)]
        gap = max(abs(a - b) / abs(b) for a, b in zip(losses[v], losses["plain"], strict=True))
        rows.append(
            {
                "model": name,
                "variant": v + (f" ({seglite['picked']})" if v == "seglite" else ""),
                "images_per_s": round(images / statistics.median(times[v]), 2),
                "vs_plain": round(statistics.median(ratios), 2),
                "first_step_s": round(warm[v], 1),
                "loss_last": round(losses[v][-1], 4),
                "loss_max_rel_gap": round(gap, 4),
                "trial_s": {k: round(s, 3) for k, s in seglite["trial_s"].items()} if v == "seglite" else None,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="timed steps per variant and round")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, nargs=2, default=[384, 288], metavar=("W", "H"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--camvid", type=Path, default=CAMVID)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:  # its stdout is the parent's channel: nothing but replies
        worker(args.worker)
        return
    print(f"CPU: {cpu_description()}", flush=True)
    torch.set_num_threads(args.threads)
    data, num_classes, source = batches(args.camvid, args.steps + 1, args.batch, tuple(args.crop))
    print(
        f"data: {source}, {num_classes} classes, batch {args.batch}, crop {args.crop[0]}x{args.crop[1]}, "
        f"{args.threads} threads, torch {torch.__version__}",
        flush=True,
    )
    rows = [
        r
        for name in args.models
        for r in bench_model(name, data, num_classes, args.rounds, args.compile, args.lr, args.threads)
    ]
    print("\n| model | variant | img/s | x plain | first step s | last loss | max loss gap to plain |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['variant']} | {r['images_per_s']} | {r['vs_plain']} | {r['first_step_s']} | "
            f"{r['loss_last']} | {r['loss_max_rel_gap'] * 100:.1f} % |"
        )


if __name__ == "__main__":
    main()
