"""Training-step throughput: seglite's step against a plain eager fp32 PyTorch loop, same model, data and run.

Every variant starts from the same weights and sees the same batches (real CamVid crops when ../shared/realdata/camvid
is there, else generated frames), decoded once up front so only the step is timed. Variants run in turns, round after
round, and each ratio is taken within a round (same machine state), then the median over rounds.
  plain          model(x) -> F.cross_entropy -> backward -> torch.optim.Adam (default), NCHW fp32
  channels_last  NHWC activations and weights
  bf16           CPU autocast to bf16 (native on AVX512-BF16 / AMX CPUs, emulated and slow elsewhere)
  fused          fused Adam (one kernel for the whole update)
  compile        torch.compile of the model (--compile; minutes of compilation first)
  seglite        what `seglite train` runs: channels_last + fused + the precision its first-batch trial picks
The loss columns show the curves agree: the last step's loss per variant, and the largest gap to plain's curve.
Run alone on the machine. Usage: python scripts/bench_train.py [--models ...] [--rounds 3] [--steps 4] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from seglite.data.dataset import SegmentationDataset
from seglite.data.datasets import load_dataset
from seglite.data.synth import write_dataset
from seglite.data.transforms import train_transform
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


def seglite_step(model, options: StepOptions, fused: bool, lr: float, compiled: bool = False) -> TrainStep:
    if options.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=fused)
    net = torch.compile(model) if compiled else model
    return TrainStep(net, SegmentationLoss(), optimizer, None, torch.device("cpu"), options)


def bench_model(name: str, data: list, num_classes: int, rounds: int, with_compile: bool, lr: float) -> list[dict]:
    torch.manual_seed(0)
    initial = create_model(name, num_classes=num_classes).train()
    trial_model = copy.deepcopy(initial).to(memory_format=torch.channels_last)
    seconds = time_precisions(
        trial_model, SegmentationLoss(), *data[0], [StepOptions(p, True) for p in ("fp32", "bf16")]
    )
    picked = faster_precision(seconds)
    variants = {
        "plain": PlainLoop(copy.deepcopy(initial), lr),
        "channels_last": seglite_step(copy.deepcopy(initial), StepOptions("fp32", True), False, lr),
        "bf16": seglite_step(copy.deepcopy(initial), StepOptions("bf16", False), False, lr),
        "fused": seglite_step(copy.deepcopy(initial), StepOptions("fp32", False), True, lr),
        "seglite": seglite_step(copy.deepcopy(initial), StepOptions(picked, True), True, lr),
    }
    if with_compile:
        variants["compile"] = seglite_step(copy.deepcopy(initial), StepOptions("fp32", False), False, lr, True)
    losses: dict[str, list[float]] = {v: [] for v in variants}
    warm = {}
    for v, step in variants.items():  # warm-up on batch 0 (oneDNN primitives, compilation); not timed, not counted
        start = time.perf_counter()
        losses[v].append(step(*data[0]).item())
        warm[v] = time.perf_counter() - start
    times: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(rounds):
        for v, step in variants.items():
            start = time.perf_counter()
            for images, labels in data[1:]:
                losses[v].append(step(images, labels).item())
            times[v].append(time.perf_counter() - start)
    images = (len(data) - 1) * data[0][0].shape[0]
    rows = []
    for v in variants:
        ratios = [p / t for p, t in zip(times["plain"], times[v], strict=True)]
        gap = max(abs(a - b) / abs(b) for a, b in zip(losses[v], losses["plain"], strict=True))
        rows.append(
            {
                "model": name,
                "variant": v + (f" ({picked})" if v == "seglite" else ""),
                "images_per_s": round(images / statistics.median(times[v]), 2),
                "vs_plain": round(statistics.median(ratios), 2),
                "first_step_s": round(warm[v], 1),
                "loss_last": round(losses[v][-1], 4),
                "loss_max_rel_gap": round(gap, 4),
                "trial_s": {k: round(s, 3) for k, s in seconds.items()} if v == "seglite" else None,
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data, num_classes, source = batches(args.camvid, args.steps + 1, args.batch, tuple(args.crop))
    print(
        f"data: {source}, {num_classes} classes, batch {args.batch}, crop {args.crop[0]}x{args.crop[1]}, "
        f"{args.threads} threads, torch {torch.__version__}",
        flush=True,
    )
    rows = [r for name in args.models for r in bench_model(name, data, num_classes, args.rounds, args.compile, args.lr)]
    print("\n| model | variant | img/s | x plain | first step s | last loss | max loss gap to plain |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['model']} | {r['variant']} | {r['images_per_s']} | {r['vs_plain']} | {r['first_step_s']} | "
            f"{r['loss_last']} | {r['loss_max_rel_gap'] * 100:.1f} % |"
        )


if __name__ == "__main__":
    main()
