"""Milliseconds a frame to turn a network's logits into labels on the CPU, per network kind, by each path.

Paths: the native kernel with the width pass in vector-wide groups (the default where the build has 256/512-bit
vectors), the same kernel with per-output taps (what ARM and SSE-only builds run), and the OpenCV path without a C
compiler (the net's own upsampling in PyTorch, then `resize_argmax`). Logits: smooth generated scores (19 classes)
at each network's own resolution for a 1024x512 input; the frame: the dash-cam clip's 960x540.
Run it alone on the machine. Usage: python scripts/bench_labels.py [--frame WxH] [--rounds 5] [--repeats 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from seglite.devices import cpu_description
from seglite.inference.postprocess import ResizeChainArgmax, resize_argmax, upsample_argmax_library

# network: (the stride its logits come out at, align_corners of its last upsampling)
NETWORKS = {"ESPNetv2": (2, True), "DeepLabV3+": (4, False), "ESPNet-C": (8, False)}


def milliseconds(work, repeats: int) -> float:
    work()
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frame", default="960x540", help="output frame WxH")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    parser.add_argument("--repeats", type=int, default=20, help="calls timed a round")
    args = parser.parse_args()
    frame_w, frame_h = map(int, args.frame.lower().split("x"))
    threads = torch.get_num_threads()
    library = upsample_argmax_library()
    print(f"CPU: {cpu_description()}; torch threads {threads}")
    if library is None:
        print("the native kernel could not be built (no C compiler?): only the OpenCV path runs")
    print(f"vector group of the width pass: {library.upsample_argmax_group() if library else '-'} outputs")
    print(f"{'network':<12}{'logits':>10}{'grouped ms':>12}{'per-output ms':>15}{'OpenCV ms':>11}  same labels")
    generator = torch.Generator().manual_seed(0)
    for name, (stride, corners) in NETWORKS.items():
        low = (512 // stride, 1024 // stride)
        logits = F.interpolate(torch.randn(1, 19, 8, 16, generator=generator) * 4, size=low, mode="bilinear")[0]
        steps = [(512, 1024, corners), (frame_h, frame_w, False)]
        paths = {}
        if library is not None:
            grouped = ResizeChainArgmax(low, steps)
            if grouped.col_group:  # else it runs the per-output form: no column of its own
                paths["grouped"] = grouped
            paths["per-output"] = ResizeChainArgmax(low, steps, grouped=False)

        def opencv(logits=logits, corners=corners):
            full = F.interpolate(logits[None], size=(512, 1024), mode="bilinear", align_corners=corners)[0]
            return resize_argmax(full, (frame_h, frame_w), threads)

        paths["OpenCV"] = opencv
        timings = {path: [] for path in paths}
        # The kernel paths in turns; the OpenCV path after them: its PyTorch resize leaves OpenMP threads spinning for
        # a few ms, which would slow whichever single-threaded kernel call came next.
        for path_names in ([path for path in paths if path != "OpenCV"], ["OpenCV"]):
            for _ in range(args.rounds):
                for path in path_names:
                    work = paths[path]
                    timings[path].append(milliseconds(lambda work=work, logits=logits: work(logits), args.repeats))
        labels = [work(logits) for work in paths.values()]
        same = " / ".join(f"{(labels[0] == other).mean():.4%}" for other in labels[1:])
        ms = {path: f"{statistics.median(values):.2f}" for path, values in timings.items()}
        print(
            f"{name:<12}{f'{low[1]}x{low[0]}':>10}{ms.get('grouped', '-'):>12}{ms.get('per-output', '-'):>15}"
            f"{ms['OpenCV']:>11}  {same}"
        )


if __name__ == "__main__":
    main()
