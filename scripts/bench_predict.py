"""End-to-end `predict` throughput against model-only FPS, and peak memory against video length.

Usage: python scripts/bench_predict.py [--video PATH] [--weights W] [--size WxH] [--backend torch|onnx]
                                      [--device cpu|cuda] [--half] [--compile] [--rounds N] [--streams 1,2]
                                      [--no-memory]
Defaults: ../shared/realdata/video/solidWhiteRight.mp4 with the published ESPNetv2 s2.0 (random init if absent).
Each round runs the whole video once per --streams count (1: latency mode, 2: throughput mode) in one process, and
times the model alone (one stream, batch 1) before and after every video: a video's ratio is its FPS over the mean of
the two model-only figures around it, so a shared VM's drift (10-30 % within minutes) moves both sides alike; the
median over rounds is reported.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from operator import itemgetter
from pathlib import Path

from seglite.devices import cpu_description

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"

_CHILD = """
import json, resource, sys, tempfile, torch
from seglite.inference.segmenter import Segmenter
from seglite.bench.latency import benchmark
args = json.loads(sys.argv[1])
torch.set_num_threads(args["threads"])
seg = Segmenter(model=args["model"], weights=args["weights"], device=args["device"], backend=args["backend"],
                half=args["half"], compile=args["compile"], size=args["size"])
if args["compile"]:  # compile before the clock starts: the video then measures the steady state
    width, height = seg.preprocess.size
    seg.forward(torch.zeros(args["batch"], 3, height, width, dtype=seg.dtype, device=seg.device))
def model_only_fps():
    return benchmark(seg.loaded.model, seg.model_name, seg.preprocess.size, device=seg.device,
                     threads=args["threads"], backend=args["backend"], precision="fp16" if args["half"] else "fp32",
                     warmup=5, iters=20, compile=args["compile"]).fps
rounds = []
before = model_only_fps() if args["model_only"] else None
for _ in range(args["rounds"]):
    out = {}
    for streams in args["streams"]:
        with tempfile.TemporaryDirectory() as tmp:
            result = seg.predict_video(args["video"], tmp, batch=args["batch"], streams=streams)
        run = dict(frames=result.frames_written, seconds=result.seconds, end_to_end_fps=result.throughput,
                   stages_ms_per_frame={k: round(1000 * v / max(1, result.frames_written), 1)
                                        for k, v in result.stage_seconds.items()},
                   peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        if args["model_only"]:
            after = model_only_fps()
            run["model_only_fps"] = (before + after) / 2
            run["model_only_fps_before_after"] = [before, after]
            run["ratio"] = run["end_to_end_fps"] / run["model_only_fps"]
            before = after
        out[f"streams_{streams}"] = run
    rounds.append(out)
print(json.dumps(rounds))
"""


def run_child(**kwargs) -> dict:
    result = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(kwargs)], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--video", default=str(REALDATA / "video" / "solidWhiteRight.mp4"))
    parser.add_argument(
        "--weights", default=str(REALDATA / "weights" / "espnetv2" / "espnetv2_s_2.0_city_1024x512.pth")
    )
    parser.add_argument("--model", default=None)
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--half", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile (compile time not counted)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", default=None, help="network input WxH (default: the weights' own)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--streams",
        default="1,2",
        help="inference streams to compare, in the same round (1: latency mode; 2: throughput mode, the default for "
        "a video file on a CPU)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory-vs-length runs")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    weights = args.weights if Path(args.weights).is_file() else None
    model = args.model or (None if weights else "espnetv2_s2.0")
    common = dict(
        model=model,
        weights=weights,
        device=args.device,
        backend=args.backend,
        half=args.half,
        compile=args.compile,
        threads=args.threads,
        batch=args.batch,
        size=[int(v) for v in args.size.lower().split("x")] if args.size else None,
        streams=[int(v) for v in args.streams.split(",")],
    )
    rounds = run_child(video=args.video, model_only=True, rounds=args.rounds, **common)
    for run in rounds:
        print(json.dumps(run))
    name = Path(args.weights).name if weights else model
    how = f"{args.backend}{' + torch.compile' if args.compile else ''}, {args.device}, {args.threads} threads"
    print(
        f"\n{name} ({how}), median of {len(rounds)} rounds, end to end against model only (1 stream, the mean of the "
        "runs just before and after each video):"
    )
    for streams in common["streams"]:
        runs = sorted((run[f"streams_{streams}"] for run in rounds), key=itemgetter("ratio"))
        middle = runs[(len(runs) - 1) // 2]  # a round's own figures: the lower middle one for an even count
        print(
            f"  {streams} stream(s): end to end {middle['end_to_end_fps']:.2f} FPS vs model only {middle['model_only_fps']:.2f} "
            f"FPS: ratio {middle['ratio']:.2f} (rounds {', '.join(format(run['ratio'], '.2f') for run in runs)})"
        )

    if args.no_memory:
        return
    # Memory against length: the same drive, short and four times longer (generated, so any length is possible).
    from seglite.data.synth import write_video

    with tempfile.TemporaryDirectory() as tmp:
        peaks = {}
        for frames in (50, 200):
            video = write_video(Path(tmp) / f"drive{frames}.mp4", frames=frames, size=(960, 540))
            one = common | {"streams": common["streams"][-1:]}
            run = run_child(video=str(video), model_only=False, rounds=1, **one)[0]
            peaks[frames] = run[f"streams_{one['streams'][0]}"]["peak_rss_mb"]
    print(
        f"peak RSS: {peaks[50]:.0f} MB for 50 frames, {peaks[200]:.0f} MB for 200 frames "
        f"({peaks[200] - peaks[50]:+.0f} MB)"
    )


if __name__ == "__main__":
    main()
