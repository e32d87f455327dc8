"""seglite against the peer implementations that install from the registry, same run, same protocol.

Peers measured here: segmentation-models-pytorch's DeepLabV3Plus (timm encoders, its lighter OS16 head) in ONNX
Runtime, and PaddleSeg's DeepLabV3P in Paddle Inference + oneDNN when `--paddle-python` (or $PADDLE_PYTHON) names
the Python of an environment with paddlepaddle 3.2.2 and paddleseg (scripts/paddleseg_peer.py says how to make
one), and the authors' own ESPNet / EdgeNets code when `--espnet-code` / `--edgenets-code` (or $ESPNET_CODE /
$EDGENETS_CODE) name local checkouts of github.com/sacmehta/ESPNet and github.com/sacmehta/EdgeNets (not on the
registry; scripts/espnet_peer.py times them in a fresh process, fastest of eager, channels_last and ONNX Runtime).
A peer that is not measured shows its figure from ../shared/research/peer_baselines.md, marked "ref": those were
taken on this machine on a faster day, so only same-run ratios are comparable. Also prints each model's GFLOPs and
the share of this CPU's fp32 peak it reaches.

Columns for seglite: "fp32" is the fastest of eager PyTorch, ONNX Runtime, OpenVINO (where the export extra is
installed) and torch.compile (all exact: argmax
agreement >= 99.9 % with eager; the backends `--backend auto` weighs, torch.compile for runs long enough to pay
back its compile); "bf16" (CPUs with bf16 instructions; not bit-identical, `seglite eval --half`
measures the mIoU change) and "int8" (ONNX Runtime static INT8 calibrated on generated frames: SPEED ONLY, the
mIoU change needs trained weights, see `seglite quantize`) show what reduced precision would give. Each row times
the peer and seglite's fastest fp32 backend `--rounds` times, alternating, and reports both medians; the ratio's
range over the rounds follows it in brackets. seglite's ONNX Runtime time is its runner's, end to end: the graph plus
the final half-pixel upsampling it does with OpenCV (seglite.inference.onnx_export.OnnxRunner); peers' graphs keep
their own upsampling, as their code exports it.
Usage: python scripts/bench_peers.py [--threads 2] [--iters 20] [--size 1024x512] [--no-compile] [--only TEXT] [--rounds 3]
                                    [--paddle-python PADDLE_VENV/bin/python] [--espnet-code DIR] [--edgenets-code DIR]
                                    [--peer-compile]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from seglite.bench.latency import benchmark
from seglite.devices import cpu_description, cpu_supports_bf16
from seglite.inference.backends.openvino import openvino_available
from seglite.models.registry import create_model
from seglite.sizes import parse_size

# (architecture, seglite model, peer: smp encoder, PaddleSeg model (paddle:...) or the authors' model
# (authors:...), reference ms from peer_baselines.md, target ratio)
ROWS = [
    ("ESPNet p2q8", "espnetv1", "authors:espnet", 94.0, 0.6),
    ("ESPNetV2 s1.0", "espnetv2_s1.0", "authors:espnetv2_s1.0", 118.0, 0.6),
    ("ESPNetV2 s2.0", "espnetv2_s2.0", "authors:espnetv2_s2.0", 180.0, 0.6),
    ("DeepLabV3+ MNv3-L 0.5x (PaddleSeg)", "deeplabv3p_mnv3l_050", "paddle:mnv3l_050", 141.0, 0.6),
    ("DeepLabV3+ MNv3-L 1.0x (PaddleSeg)", "deeplabv3p_mnv3l_100", "paddle:mnv3l_100", 135.0, 0.6),
    ("DeepLabV3+ LCNet 0.5x (smp head)", "deeplabv3p_lcnet_050", "tu-lcnet_050", 45.0, 1.0),
    ("DeepLabV3+ LCNet 1.0x (smp head)", "deeplabv3p_lcnet_100", "tu-lcnet_100", 62.0, 1.0),
    ("DeepLabV3+ MNv3-L 1.0x (smp head)", "deeplabv3p_mnv3l_100", "tu-mobilenetv3_large_100", 87.0, 0.6),
]


def cpu_peak_gflops(threads: int) -> float:
    """This CPU's practical fp32 peak: a large square SGEMM (MKL) on `threads` threads, best of 6.

    Measured rather than clock x FLOP/cycle: on this VM the nominal AVX-512 figure (2 FMA pipes) is twice what any
    kernel reaches (~96 GFLOP/s per core), and a share of a peak nobody reaches says little.
    """
    import time

    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    out = torch.empty(2048, 2048)
    best = float("inf")
    for _ in range(6):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best / 1e9


def int8_speed_ms(name: str, size: tuple[int, int], threads: int, iters: int) -> float:
    """Median ms of an INT8 ORT model calibrated on generated street frames (speed only: weights are random)."""
    from seglite.bench.quantize import quantize_onnx, runner_median_ms
    from seglite.data.synth import render_scene
    from seglite.inference.onnx_export import OnnxRunner, export_onnx
    from seglite.zoo.preprocess import IMAGENET

    preprocess = IMAGENET.with_size(size)
    frames = [preprocess(render_scene(size[0], size[1], seed=seed)[0])[None].numpy() for seed in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(create_model(name), size, fp32)
        quantize_onnx(fp32, int8, frames)
        runner = OnnxRunner(int8, threads)
    return runner_median_ms(runner, frames[0], iters)


def run_peer_harness(python: str, script: str, names: list[str], size: str, threads: int, iters: int, *extra: str):
    """Run a peer harness in its own process (its own environment, none of seglite's settings): its JSON."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [python, str(Path(__file__).with_name(script)), "--models", ",".join(names), "--size", size]
    command += ["--threads", str(threads), "--iters", str(iters), *extra]
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"{script} failed ({python}): {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_peer(peer: str, args: argparse.Namespace, backend: str | None = None) -> tuple[float, str, str] | None:
    """One timing of a row's peer: (median ms, how it ran, its backend), or None when it cannot run here.

    `backend` re-times only the backend an earlier round found fastest.
    """
    kind, _, model = peer.rpartition(":")
    common = ([model], args.size, args.threads, args.iters)
    if kind == "paddle":
        if not args.paddle_python:
            return None
        return run_peer_harness(args.paddle_python, "paddleseg_peer.py", *common)[model], "PaddleSeg+oneDNN", "onednn"
    if kind == "authors":
        code = {"espnet": args.espnet_code}.get(model, args.edgenets_code)
        if not code:
            return None
        flag = "espnet" if model == "espnet" else "edgenets"
        backends = backend or ("eager,eager_channels_last,onnx,compile" if args.peer_compile else None)
        extra = [f"--{flag}-code={code}"] + ([f"--backends={backends}"] if backends else [])
        result = run_peer_harness(sys.executable, "espnet_peer.py", *common, *extra)[model]
        return result["best_ms"], f"authors' code, {result['best_backend']}", result["best_backend"]
    import segmentation_models_pytorch as smp

    net = smp.DeepLabV3Plus(encoder_name=model, encoder_weights=None, classes=19)
    size = parse_size(args.size)
    ms = benchmark(net, model, size, threads=args.threads, backend="onnx", warmup=5, iters=args.iters).median_ms
    return ms, "smp+ORT", "onnx"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--size", default="1024x512")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (saves ~1 min per model)")
    parser.add_argument("--only", default="", help="only rows whose architecture contains this text")
    parser.add_argument("--rounds", type=int, default=3, help="peer/seglite timings alternated per row (median)")
    parser.add_argument(
        "--peer-compile", action="store_true", help="also time the authors' code under torch.compile (not a baseline)"
    )
    parser.add_argument("--paddle-python", default=os.environ.get("PADDLE_PYTHON"), help="Python with PaddleSeg")
    parser.add_argument("--espnet-code", default=os.environ.get("ESPNET_CODE"), help="sacmehta/ESPNet checkout")
    parser.add_argument("--edgenets-code", default=os.environ.get("EDGENETS_CODE"), help="sacmehta/EdgeNets checkout")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    size = parse_size(args.size)
    peak = cpu_peak_gflops(args.threads)
    rows = [row for row in ROWS if args.only.lower() in row[0].lower()]
    peers = {row[2] for row in rows}
    for missing, needed, hint in (
        (
            not args.paddle_python,
            {p for p in peers if p.startswith("paddle:")},
            "--paddle-python PADDLE_VENV/bin/python",
        ),
        (not args.espnet_code, peers & {"authors:espnet"}, "--espnet-code (a sacmehta/ESPNet checkout)"),
        (not args.edgenets_code, {p for p in peers if p.startswith("authors:espnetv2")}, "--edgenets-code (EdgeNets)"),
    ):
        if missing and needed:
            print(f"not measured, reference figures shown instead: {', '.join(sorted(needed))} (pass {hint})")
    bf16 = cpu_supports_bf16()
    print(
        f"\n| architecture | peer ms | seglite fp32 ms (backend) | ratio (range over {args.rounds} rounds) | target | "
        "bf16 ms | ratio | int8 ms (speed only) | ratio | GFLOPs | % of fp32 peak |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arch, name, peer_model, reference_ms, target in rows:

        def timed(backend: str = "torch", precision: str = "fp32", compile: bool = False, name: str = name):
            return benchmark(
                create_model(name),
                name,
                size,
                threads=args.threads,
                backend=backend,
                precision=precision,
                compile=compile,
                warmup=5,
                iters=args.iters,
            )

        import torch._dynamo

        torch._dynamo.reset()  # every model shares SegmentationNet.forward: start each row below the recompile limit
        peer = time_peer(peer_model, args)
        runs = [timed("torch"), timed("onnx")] + ([timed("openvino")] if openvino_available() else [])
        runs += [] if args.no_compile else [timed(compile=True)]
        best = min(runs, key=lambda r: r.median_ms)
        # Further rounds alternate the peer's and seglite's fastest backends: a slow spell of this shared VM then
        # hits both sides instead of one row's ratio.
        ours_ms, peer_times = [best.median_ms], [peer[0]] if peer else []
        for _ in range(args.rounds - 1):
            if peer:
                peer_times.append(time_peer(peer_model, args, backend=peer[2])[0])
            again = timed("torch", compile=True) if best.backend == "torch.compile" else timed(best.backend)
            ours_ms.append(again.median_ms)
        seglite_ms = statistics.median(ours_ms)
        if peer:
            peer_ms, peer_note = statistics.median(peer_times), f"{peer[1]}, measured"
            ratios = [mine / theirs for mine, theirs in zip(ours_ms, peer_times, strict=True)]
            spread = f" ({min(ratios):.2f}-{max(ratios):.2f})"
        else:
            peer_ms, peer_note, spread = reference_ms, "ref", ""
        half_ms = "-"
        if bf16:
            half_runs = [timed(precision="bf16")] + ([] if args.no_compile else [timed(precision="bf16", compile=True)])
            half_ms = min(r.median_ms for r in half_runs)
        int8_ms = int8_speed_ms(name, size, args.threads, args.iters)
        share = f"{100 * best.gflops / (seglite_ms / 1000) / peak:.1f}"
        half_cells = "- | -" if half_ms == "-" else f"{half_ms:.1f} | {half_ms / peer_ms:.2f}"
        print(
            f"| {arch} | {peer_ms:.1f} ({peer_note}) | {seglite_ms:.1f} ({best.backend}) | "
            f"{seglite_ms / peer_ms:.2f}{spread} | {target} | {half_cells} | {int8_ms:.1f} | {int8_ms / peer_ms:.2f} | "
            f"{best.gflops:.2f} | {share} |",
            flush=True,
        )
    print(f"\nfp32 peak: {peak:.0f} GFLOP/s (2048^3 SGEMM on {args.threads} threads, measured)")


if __name__ == "__main__":
    main()
