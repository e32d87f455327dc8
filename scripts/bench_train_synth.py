"""Train espnetv2_s0.5 and deeplabv3p_lcnet_050 from scratch on the generated city on this CPU.

Prints, per model: the validation mIoU reached, training images/s, and the data loader's images/s alone.
Usage: python scripts/bench_train_synth.py [--minutes 5] [--data data/synth] [--out runs/bench_train]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from seglite.data.dataset import SegmentationDataset
from seglite.data.datasets import load_dataset
from seglite.data.synth import write_dataset
from seglite.data.transforms import train_transform
from seglite.devices import cpu_description
from seglite.training.config import load_config
from seglite.training.sampler import ResumableBatchSampler
from seglite.training.trainer import Trainer
from seglite.zoo.preprocess import IMAGENET

CONFIGS = ("configs/synth_espnetv2_s0.5.yaml", "configs/synth_deeplabv3p_lcnet_050.yaml")


def loader_throughput(config, batches: int = 30) -> float:
    dataset = SegmentationDataset(
        load_dataset(config.data.dataset, config.data.root),
        config.data.train_split,
        IMAGENET,
        train_transform(tuple(config.data.crop), tuple(config.data.scale_range)),
    )
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=ResumableBatchSampler(len(dataset), config.batch_size, 0),
        num_workers=config.data.workers,
    )
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * config.batch_size / (time.perf_counter() - start)


def iterations_for(config, minutes: float) -> int:
    """Measure a few iterations, then size the run to the time budget."""
    probe = load_config(
        None, [f"{k}={v}" for k, v in _flat(config.to_dict()).items()] + ["schedule.iters=8", "val_every=100000"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = Trainer(probe, Path(tmp), show_progress=False).run()
    per_iter = config.batch_size / result["images_per_second"]
    return max(20, int(minutes * 60 / per_iter * 0.9))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("model_kwargs", "lr_multipliers"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = json.dumps(v)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=5.0, help="CPU training budget per model")
    parser.add_argument("--data", type=Path, default=Path("data/synth"))
    parser.add_argument("--out", type=Path, default=Path("runs/bench_train"))
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    if not (args.data / "leftImg8bit").is_dir():
        write_dataset(args.data, train=200, val=20, size=(512, 256))
    rows = []
    for path in CONFIGS:
        config = load_config(path, [f"data.root={args.data}"])
        loader_ips = loader_throughput(config)
        iters = iterations_for(config, args.minutes)
        config = load_config(path, [f"data.root={args.data}", f"schedule.iters={iters}", f"val_every={iters}"])
        start = time.perf_counter()
        result = Trainer(config, args.out / config.model).run()
        minutes = (time.perf_counter() - start) / 60
        rows.append(
            {
                "model": config.model,
                "iterations": iters,
                "minutes": round(minutes, 1),
                "val_miou": round(result["best_miou"], 2),
                "train_images_per_s": round(result["images_per_second"], 1),
                "loader_images_per_s": round(loader_ips, 1),
                "crop": config.data.crop,
                "threads": torch.get_num_threads(),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    print(
        "\n| model | iterations | minutes | val mIoU % | train img/s | loader img/s |\n|---|---:|---:|---:|---:|---:|"
    )
    for r in rows:
        print(
            f"| {r['model']} | {r['iterations']} | {r['minutes']} | {r['val_miou']} | {r['train_images_per_s']} | "
            f"{r['loader_images_per_s']} |"
        )


if __name__ == "__main__":
    main()
