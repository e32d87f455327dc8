"""seglite's main job, end to end on a fresh machine in about ten minutes on 2 cores.

Generates the synthetic city and a drive through it, trains the two small CPU recipes (ESPNetv2 s0.5 and
DeepLabV3+ LCNet 0.5x) for a few minutes each, evaluates one, writes the mIoU-vs-latency report of both (a Pareto
plot with two trained models), and segments the generated video. Each run writes a fresh folder (outputs/demo,
then demo2, ...). Where published
weights are available (zoo cache, $SEGLITE_HOME, or ../shared/realdata next to this checkout) it also
segments real street frames and a real dash-cam video with them.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from seglite.files import next_free_name

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def seglite(*args: str) -> None:
    print(f"\n$ seglite {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "seglite", *args], check=True)


def published_weights(zoo_name: str, shared_file: Path) -> Path | None:
    from seglite.zoo.registry import cached_path, fetch, find_entry

    entry = find_entry(zoo_name)
    if cached_path(entry).is_file():
        return cached_path(entry)
    if shared_file.is_file():
        return shared_file
    try:
        return fetch(entry, timeout=10)
    except Exception as exc:  # offline: say so and carry on with what we trained
        print(f"(published weights not available: {exc})")
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "demo")
    parser.add_argument("--train-iters", type=int, default=350, help="iterations of the ESPNetv2 s0.5 recipe")
    parser.add_argument("--lcnet-iters", type=int, default=250, help="iterations of the DeepLabV3+ LCNet recipe")
    args = parser.parse_args()
    out: Path = next_free_name(args.out)  # an earlier demo's outputs stay: outputs/demo2, demo3, ...
    start = time.perf_counter()
    data, video = out / "synth", out / "synth_drive.mp4"
    seglite(
        "data",
        "synth",
        str(data),
        "--train",
        "120",
        "--val",
        "16",
        "--size",
        "512x256",
        "--video",
        str(video),
        "--frames",
        "60",
    )
    # Two small recipes, so the report's Pareto plot compares two trained models.
    best = {}
    for model, recipe, iters in (
        ("espnetv2_s0.5", "configs/synth_espnetv2_s0.5.yaml", args.train_iters),
        ("deeplabv3p_lcnet_050", "configs/synth_deeplabv3p_lcnet_050.yaml", args.lcnet_iters),
    ):
        run = out / f"train_{model}"
        seglite(
            "train", recipe, "--data-root", str(data), "--out", str(run),
            "--set", f"schedule.iters={iters}", "--set", f"val_every={max(1, iters // 2)}",
        )  # fmt: skip
        best[model] = run / "best.pt"
    seglite("eval", "--weights", str(best["espnetv2_s0.5"]), "--data-root", str(data), "--split", "val")
    seglite(
        "report",
        "--models",
        ",".join(f"{model}={weights}" for model, weights in best.items()),
        "--data-root",
        str(data),
        "--size",
        "512x256",
        "--iters",
        "10",
        "--out",
        str(out / "report"),
    )
    seglite("predict", str(video), "--weights", str(best["espnetv2_s0.5"]), "--out", str(out / "predict"))
    outputs = [
        ("generated data set (Cityscapes layout)", data),
        ("generated video", video),
        *(
            (f"training run of {model}: checkpoints, metrics.jsonl, tensorboard/", w.parent)
            for model, w in best.items()
        ),
        ("mIoU-vs-latency report", out / "report" / "report.md"),
        ("Pareto plot", out / "report" / "pareto.png"),
        ("segmented generated video", out / "predict" / "synth_drive_overlay.mp4"),
    ]
    weights = published_weights(
        "espnetv2_s2.0_cityscapes_1024x512", REALDATA / "weights" / "espnetv2" / "espnetv2_s_2.0_city_1024x512.pth"
    )
    real_video = REALDATA / "video" / "solidWhiteRight.mp4"
    if weights is not None:
        images = REALDATA / "images"
        if images.is_dir():
            seglite("predict", str(images), "--weights", str(weights), "--out", str(out / "real_images"))
            outputs.append(("real street frames, published ESPNetv2 s2.0", out / "real_images"))
        if real_video.is_file():
            seglite("predict", str(real_video), "--weights", str(weights), "--out", str(out / "real_video"))
            outputs.append(("real dash-cam video, published ESPNetv2 s2.0", out / "real_video"))
    print(f"\nseglite demo finished in {(time.perf_counter() - start) / 60:.1f} min. Outputs:")
    for what, path in outputs:
        print(f"  {what}: {path}")


if __name__ == "__main__":
    main()
