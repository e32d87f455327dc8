"""seglite against the peer implementations that install from the registry, same run, same protocol.

Peers measured here: segmentation-models-pytorch's DeepLabV3Plus (timm encoders, its lighter OS16 head) in ONNX
Runtime, and PaddleSeg's DeepLabV3P in Paddle Inference + oneDNN when `--paddle-python` (or $PADDLE_PYTHON) names
the Python of an environment with paddlepaddle 3.2.2 and paddleseg (scripts/paddleseg_peer.py says how to make
one; without it the reference values are printed, marked as such). The
authors' ESPNet/EdgeNets code is not on the registry: its figures from ../shared/research/peer_baselines.md are
printed as reference values, marked as such. Also prints each model's GFLOPs and the share of this CPU's fp32 peak
it reaches.

Columns for seglite: "fp32" is the fastest of eager PyTorch, ONNX Runtime and torch.compile (all exact: argmax
agreement >= 99.9 % with eager); "bf16" (CPUs with bf16 instructions; not bit-identical, `seglite eval --half`
measures the mIoU change) and "int8" (ONNX Runtime static INT8 calibrated on generated frames: SPEED ONLY, the
mIoU change needs trained weights, see `seglite quantize`) show what reduced precision would give.
Usage: python scripts/bench_peers.py [--threads 2] [--iters 20] [--size 1024x512] [--no-compile] [--only TEXT]
                                    [--paddle-python PADDLE_VENV/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from seglite.bench.latency import benchmark
from seglite.bench.sizes import parse_size
from seglite.devices import cpu_supports_bf16
from seglite.models.registry import create_model

# (architecture, seglite model, smp encoder or PaddleSeg model (paddle:...) or None, reference ms from
# peer_baselines.md, target ratio)
ROWS = [
    ("ESPNet p2q8", "espnetv1", None, 94.0, 0.6),
    ("ESPNetV2 s1.0", "espnetv2_s1.0", None, 118.0, 0.6),
    ("ESPNetV2 s2.0", "espnetv2_s2.0", None, 180.0, 0.6),
    ("DeepLabV3+ MNv3-L 0.5x (PaddleSeg)", "deeplabv3p_mnv3l_050", "paddle:mnv3l_050", 141.0, 0.6),
    ("DeepLabV3+ MNv3-L 1.0x (PaddleSeg)", "deeplabv3p_mnv3l_100", "paddle:mnv3l_100", 135.0, 0.6),
    ("DeepLabV3+ LCNet 0.5x (smp head)", "deeplabv3p_lcnet_050", "tu-lcnet_050", 45.0, 1.0),
    ("DeepLabV3+ LCNet 1.0x (smp head)", "deeplabv3p_lcnet_100", "tu-lcnet_100", 62.0, 1.0),
    ("DeepLabV3+ MNv3-L 1.0x (smp head)", "deeplabv3p_mnv3l_100", "tu-mobilenetv3_large_100", 87.0, 0.6),
]


def cpu_peak_gflops(threads: int) -> float | None:
    """fp32 peak estimate: threads x clock x 64 FLOP/cycle (two 512-bit FMA pipes); None if the clock is unknown."""
    try:
        with open("/proc/cpuinfo") as handle:
            mhz = next(float(line.split(":")[1]) for line in handle if line.startswith("cpu MHz"))
    except (OSError, StopIteration, ValueError):
        return None
    return threads * mhz * 1e6 * 64 / 1e9


def int8_speed_ms(name: str, size: tuple[int, int], threads: int, iters: int) -> float:
    """Median ms of an INT8 ORT model calibrated on generated street frames (speed only: weights are random)."""
    from seglite.data.synth import render_scene
    from seglite.inference.onnx_export import export_onnx, ort_session
    from seglite.inference.quantize import quantize_onnx, session_median_ms
    from seglite.zoo.preprocess import IMAGENET

    preprocess = IMAGENET.with_size(size)
    frames = [preprocess(render_scene(size[0], size[1], seed=seed)[0])[None].numpy() for seed in range(4)]
    with tempfile.TemporaryDirectory() as tmp:
        fp32, int8 = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(create_model(name), size, fp32)
        quantize_onnx(fp32, int8, frames)
        session = ort_session(int8, threads)
    return session_median_ms(session, frames[0], iters)


def paddleseg_ms(python: str, names: list[str], size: str, threads: int, iters: int) -> dict[str, float]:
    """Median ms of PaddleSeg models, timed by scripts/paddleseg_peer.py in the Paddle environment."""
    harness = Path(__file__).with_name("paddleseg_peer.py")
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    command = [python, str(harness), "--models", ",".join(names), "--size", size, "--threads", str(threads)]
    result = subprocess.run([*command, "--iters", str(iters)], capture_output=True, text=True, env=env)
    if result.returncode:
        sys.exit(f"PaddleSeg harness failed ({python}): {result.stderr.strip().splitlines()[-1:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--size", default="1024x512")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (saves ~1 min per model)")
    parser.add_argument("--only", default="", help="only rows whose architecture contains this text")
    parser.add_argument("--paddle-python", default=os.environ.get("PADDLE_PYTHON"), help="Python with PaddleSeg")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    size = parse_size(args.size)
    peak = cpu_peak_gflops(args.threads)
    rows = [row for row in ROWS if args.only.lower() in row[0].lower()]
    paddle = {}
    if args.paddle_python:
        names = [peer.removeprefix("paddle:") for _, _, peer, _, _ in rows if peer and peer.startswith("paddle:")]
        paddle = paddleseg_ms(args.paddle_python, names, args.size, args.threads, args.iters) if names else {}
    else:
        print(
            "PaddleSeg not measured (pass --paddle-python PADDLE_VENV/bin/python, see scripts/paddleseg_peer.py): "
            "its figures below are the reference values from peer_baselines.md"
        )
    bf16 = cpu_supports_bf16()
    print(
        "\n| architecture | peer ms | seglite fp32 ms (backend) | ratio | target | bf16 ms | ratio | "
        "int8 ms (speed only) | ratio | GFLOPs | % of fp32 peak |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for arch, name, peer_model, reference_ms, target in rows:
        peer_ms, peer_note = reference_ms, "ref"
        if peer_model and peer_model.startswith("paddle:") and paddle:
            peer_ms, peer_note = paddle[peer_model.removeprefix("paddle:")], "PaddleSeg+oneDNN, measured"
        elif peer_model and not peer_model.startswith("paddle:"):
            import segmentation_models_pytorch as smp

            peer = smp.DeepLabV3Plus(encoder_name=peer_model, encoder_weights=None, classes=19)
            peer_ms = benchmark(
                peer, arch, size, threads=args.threads, backend="onnx", warmup=5, iters=args.iters
            ).median_ms
            peer_note = "smp+ORT, measured"

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
        runs = [timed("torch"), timed("onnx")] + ([] if args.no_compile else [timed(compile=True)])
        best = min(runs, key=lambda r: r.median_ms)
        half_ms = "-"
        if bf16:
            half_runs = [timed(precision="bf16")] + ([] if args.no_compile else [timed(precision="bf16", compile=True)])
            half_ms = min(r.median_ms for r in half_runs)
        int8_ms = int8_speed_ms(name, size, args.threads, args.iters)
        share = f"{100 * best.gflops / (best.median_ms / 1000) / peak:.1f}" if peak else "-"
        half_cells = "- | -" if half_ms == "-" else f"{half_ms:.1f} | {half_ms / peer_ms:.2f}"
        print(
            f"| {arch} | {peer_ms:.1f} ({peer_note}) | {best.median_ms:.1f} ({best.backend}) | "
            f"{best.median_ms / peer_ms:.2f} | {target} | {half_cells} | {int8_ms:.1f} | {int8_ms / peer_ms:.2f} | "
            f"{best.gflops:.2f} | {share} |",
            flush=True,
        )
    if peak:
        print(f"\nfp32 peak assumed: {peak:.0f} GFLOP/s ({args.threads} threads x clock x 64 FLOP/cycle)")


if __name__ == "__main__":
    main()
