"""Images a second for `predict` of a folder, in one and two inference streams, with PNG and JPEG overlays.

Defaults: the 30 JPEG frames (2048x1024) of ../shared/realdata/video/cityscapes_aachen_000000_seq with the published
ESPNetv2 s1.0 (random weights where absent). Every variant runs in turns in one process, round after round; the
"PNG overlay" variants write the overlay of a JPEG input as PNG (what predict did before JPEG overlays), and each
variant's ratio is its images a second over the mean of model-only FPS timed just before and after it.
Run it alone on the machine. Usage: python scripts/bench_images.py [--images DIR] [--weights W] [--model M]
                                        [--size WxH] [--rounds 2] [--formats overlay]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from seglite.devices import cpu_description

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=str(REALDATA / "video" / "cityscapes_aachen_000000_seq"))
    parser.add_argument(
        "--weights", default=str(REALDATA / "weights" / "espnetv2" / "espnetv2_s_1.0_city_1024x512.pth")
    )
    parser.add_argument("--model", default="espnetv2_s1.0", help="used where --weights is no file (random weights)")
    parser.add_argument("--size", default="1024x512", help="network input WxH")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--formats", default="overlay")
    args = parser.parse_args()

    import seglite.inference.outputs as outputs
    from seglite.bench.latency import benchmark
    from seglite.inference.predict import predict_images
    from seglite.inference.segmenter import Segmenter
    from seglite.inference.sources import IMAGE_EXTENSIONS

    print(f"CPU: {cpu_description()}", flush=True)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    weights = args.weights if Path(args.weights).is_file() else None
    segmenter = Segmenter(model=None if weights else args.model, weights=weights, device="cpu", size=size)
    images = tuple(sorted(p for p in Path(args.images).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS))
    if not images:
        raise SystemExit(f"no images in {args.images}")
    formats = tuple(args.formats.split(","))

    def model_only_fps() -> float:
        return benchmark(
            segmenter.loaded.model, segmenter.model_name, size, device=segmenter.device, threads=2, backend="torch",
            precision="fp32", warmup=3, iters=8,
        ).fps  # fmt: skip

    jpeg_suffixes = outputs.JPEG_SUFFIXES
    variants = [(overlay, streams) for overlay in ("PNG", "JPEG") for streams in (1, 2)]
    results: dict[tuple[str, int], list[tuple[float, float]]] = {variant: [] for variant in variants}
    before = model_only_fps()
    for _ in range(args.rounds):
        for overlay, streams in variants:
            outputs.JPEG_SUFFIXES = jpeg_suffixes if overlay == "JPEG" else ()
            with tempfile.TemporaryDirectory() as tmp:
                start = time.perf_counter()
                run = predict_images(segmenter, images, Path(tmp), formats, streams=streams)
                seconds = time.perf_counter() - start
            after = model_only_fps()
            rate = run.processed / seconds
            results[overlay, streams].append((rate, rate / ((before + after) / 2)))
            before = after
    outputs.JPEG_SUFFIXES = jpeg_suffixes
    first = images[0]
    print(f"{len(images)} images ({first.suffix}, e.g. {first.name}), {segmenter.model_name} at {args.size}, {formats}")
    print(f"{'overlay':<8}{'streams':>8}{'images/s (median)':>19}{'ratio to model-only':>21}  rounds")
    for (overlay, streams), values in results.items():
        rates, ratios = [v[0] for v in values], [v[1] for v in values]
        print(
            f"{overlay:<8}{streams:>8}{statistics.median(rates):>19.2f}{statistics.median(ratios):>21.2f}  "
            + ", ".join(f"{rate:.2f}" for rate in rates)
        )


if __name__ == "__main__":
    main()
