"""seglite's main job, end to end on what this machine has: models, zoo, and real street frames."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
OUT = REPO / "outputs" / "demo"


def run(*args: str) -> None:
    print(f"\n$ seglite {' '.join(args)}", flush=True)
    subprocess.run([sys.executable, "-m", "seglite", *args], check=True)


def main() -> None:
    import seglite
    from seglite.data.labels import CLASS_NAMES
    from seglite.inference.visualize import overlay
    from seglite.zoo.registry import cached_path, list_zoo

    OUT.mkdir(parents=True, exist_ok=True)
    run("models")
    run("weights", "list")

    # Published weights: the zoo cache first, then the copy in ../shared/realdata.
    entry = next(e for e in list_zoo() if e.name == "espnetv2_s2.0_cityscapes_1024x512")
    candidates = [cached_path(entry), REALDATA / "weights" / "espnetv2" / entry.file]
    weights = next((p for p in candidates if p.is_file()), None)
    image_path = REALDATA / "images" / "frankfurt_000000_000294_leftImg8bit.png"
    if weights is None or not image_path.is_file():
        print(
            f"\nno published weights found (looked in {', '.join(map(str, candidates))}); "
            f"run `seglite weights list` and place a file there to segment real frames."
        )
        return
    segmenter = seglite.Segmenter(weights=str(weights), device="auto")
    image = cv2.imread(str(image_path))
    start = time.perf_counter()
    labels = segmenter(image)
    elapsed = time.perf_counter() - start
    out_file = OUT / f"{image_path.stem}_overlay.png"
    cv2.imwrite(str(out_file), overlay(image, labels))
    counts = np.bincount(labels[labels < 255].ravel(), minlength=len(CLASS_NAMES)) / labels.size
    top = ", ".join(f"{CLASS_NAMES[i]} {100 * counts[i]:.0f}%" for i in np.argsort(counts)[::-1][:5])
    print(
        f"\nsegmented {image_path.name} ({image.shape[1]}x{image.shape[0]}) with {weights.name} "
        f"in {elapsed:.2f} s on {segmenter.device}: {top}"
    )
    print(f"overlay written to {out_file}")

    sample = REALDATA / "cityscapes_val_sample"
    if sample.is_dir():
        run("eval", "--weights", str(weights), "--data-root", str(sample), "--split", "train")
        espnetv2 = REALDATA / "weights" / "espnetv2"
        pairs = [
            f"espnetv2_s{s}={espnetv2 / f'espnetv2_s_{s}_city_1024x512.pth'}" for s in ("0.5", "1.0", "1.5", "2.0")
        ]
        pairs.append(f"espnetv1={REALDATA / 'weights' / 'espnet_v1' / 'decoder_espnet_p_2_q_8.pth'}")
        run(
            "report",
            "--models",
            ",".join(pairs),
            "--data-root",
            str(sample),
            "--split",
            "train",
            "--size",
            "1024x512",
            "--iters",
            "10",
            "--out",
            str(OUT / "report"),
        )


if __name__ == "__main__":
    main()
