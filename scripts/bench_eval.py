"""Images a second for `seglite eval`, in one and two inference streams, on CamVid val and generated 2048x1024 frames.

Defaults: the published ESPNetv2 s1.0 (random weights where absent), eager PyTorch; CamVid val at 480x360 with the
Cityscapes->CamVid class map (from ../shared/realdata/camvid; skipped when absent) and 16 generated Cityscapes-layout
frames at 2048x1024 evaluated at 1024x512. Every variant runs in turns in one process, round after round, and
prints its images a second and mIoU (the same in every variant: streams change the speed, not the figures).
Run it alone on the machine. Usage: python scripts/bench_eval.py [--weights W] [--model M] [--rounds 2]
                                      [--camvid DIR] [--frames 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from seglite.devices import cpu_description

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--weights", default=str(REALDATA / "weights" / "espnetv2" / "espnetv2_s_1.0_city_1024x512.pth")
    )
    parser.add_argument("--model", default="espnetv2_s1.0", help="used where --weights is no file (random weights)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--camvid", default=str(REALDATA / "camvid"))
    parser.add_argument("--frames", type=int, default=16, help="generated 2048x1024 val frames")
    args = parser.parse_args()

    from seglite.data.datasets import load_dataset
    from seglite.data.synth import write_dataset
    from seglite.evaluation.evaluator import EvalOptions, evaluate
    from seglite.inference.segmenter import Segmenter

    print(f"CPU: {cpu_description()}", flush=True)
    weights = args.weights if Path(args.weights).is_file() else None
    model = None if weights else args.model

    def segmenter(size: tuple[int, int]) -> Segmenter:
        return Segmenter(model=model, weights=weights, device="cpu", backend="torch", size=size)

    with tempfile.TemporaryDirectory() as tmp:
        cases = []
        if Path(args.camvid).is_dir():
            class_map = str(REPO / "configs" / "class_maps" / "cityscapes_to_camvid.yaml")
            camvid = load_dataset("camvid", args.camvid)
            cases.append(("CamVid val, 480x360", segmenter((480, 360)), camvid, class_map))
        else:
            print(f"CamVid: {args.camvid} is absent; only the generated frames", flush=True)
        write_dataset(Path(tmp), train=1, val=args.frames, size=(2048, 1024), seed=1)
        cases.append(
            (
                f"{args.frames} generated 2048x1024, 1024x512",
                segmenter((1024, 512)),
                load_dataset("cityscapes", tmp),
                None,
            )
        )
        for name, seg, data, class_map in cases:
            results: dict[int, list[str]] = {1: [], 2: []}
            for _ in range(args.rounds):
                for streams in results:
                    start = time.perf_counter()
                    result = evaluate(seg, data, EvalOptions(progress=False, streams=streams, class_map=class_map))
                    rate = result.num_images / (time.perf_counter() - start)
                    results[streams].append(f"{rate:.2f} (mIoU {result.summary['miou']:.2f})")
            for streams, rows in results.items():
                print(f"{name}, {streams} stream(s): images/s {', '.join(rows)}", flush=True)


if __name__ == "__main__":
    main()
