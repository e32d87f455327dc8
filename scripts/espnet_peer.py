"""The authors' own ESPNet / ESPNetv2 code, timed the ways it can run: median ms, printed as one JSON object.

Imports the models from local checkouts of the authors' repositories (not on the registry, so never vendored here):
  git clone https://github.com/sacmehta/ESPNet    (its train/Model.py, ESPNet(classes=20, p=2, q=8))
  git clone https://github.com/sacmehta/EdgeNets  (model/segmentation/espnetv2.py, espnetv2_seg, dataset='city')
Random weights, 20 classes as in the originals. Each is timed in eager NCHW, eager channels_last and ONNX Runtime
(dynamo exporter: their code does not go through the TorchScript one), the backends of peer_baselines.md, same
protocol as seglite's benchmark; the fastest counts. `--backends ...,compile` adds torch.compile (frozen weights,
channels_last) of their code, which peer_baselines.md did not measure. scripts/bench_peers.py runs this in a fresh process, so seglite's process-wide settings (its
allocator tuning) do not help the peer. Usage:
  python scripts/espnet_peer.py --espnet-code ESPNet --edgenets-code EdgeNets --models espnet,espnetv2_s1.0
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

MODELS = ("espnet", "espnetv2_s0.5", "espnetv2_s1.0", "espnetv2_s2.0")
BACKENDS = ("eager", "eager_channels_last", "onnx", "compile")
DEFAULT_BACKENDS = BACKENDS[:3]  # peer_baselines.md's protocol; "compile" (torch.compile, channels_last) is opt-in


def checkout(path: Path | None, flag: str, repo: str, marker: str) -> Path:
    """The checkout's root, or exit with what to pass."""
    if path is None or not (path / marker).is_file():
        found = "not given" if path is None else f"{path} has no {marker}"
        sys.exit(f"--{flag}: a checkout of github.com/{repo} is needed ({found}); git clone it and pass its folder")
    return path


def build(name: str, espnet_code: Path | None, edgenets_code: Path | None) -> torch.nn.Module:
    """The authors' model, from their checkout."""
    if name == "espnet":
        espnet_code = checkout(espnet_code, "espnet-code", "sacmehta/ESPNet", "train/Model.py")
        sys.path.insert(0, str(espnet_code / "train"))
        from Model import ESPNet  # the authors' train/Model.py

        return ESPNet(classes=20, p=2, q=8)
    edgenets_code = checkout(edgenets_code, "edgenets-code", "sacmehta/EdgeNets", "model/segmentation/espnetv2.py")
    sys.path.insert(0, str(edgenets_code))
    from model.segmentation.espnetv2 import espnetv2_seg

    args = types.SimpleNamespace(classes=20, s=float(name.rsplit("_s", 1)[1]), weights="", dataset="city")
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Training from scratch!!"
        return espnetv2_seg(args)


def median_ms(run: Callable[[], object], warmup: int, iters: int) -> float:
    for _ in range(warmup):
        run()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def onnx_runner(model: torch.nn.Module, image: torch.Tensor, threads: int) -> Callable[[], object]:
    """ONNX Runtime session on the dynamo export (their code does not go through the TorchScript exporter)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(model, (image,), str(path), dynamo=True, external_data=False)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(image.numpy())}
    return lambda: session.run(None, feed)


def time_backends(
    model: torch.nn.Module, shape: tuple[int, ...], threads: int, warmup: int, iters: int, backends: list[str]
) -> dict:
    """Median ms per backend (eager, eager_channels_last, onnx); a backend that fails is reported, not fatal."""
    model = model.eval()
    image = torch.randn(shape)
    results = {}
    for backend in backends:
        try:
            if backend == "onnx":
                run = onnx_runner(model.to(memory_format=torch.contiguous_format), image, threads)
            else:
                layout = torch.contiguous_format if backend == "eager" else torch.channels_last
                net, x = model.to(memory_format=layout), image.contiguous(memory_format=layout)
                if backend == "compile":
                    net = torch.compile(net, dynamic=False, options={"freezing": True})

                def run(net=net, x=x):
                    with torch.inference_mode():
                        return net(x)

            results[backend] = median_ms(run, warmup, iters)
        except Exception as error:  # noqa: BLE001 - e.g. an export failure; the other backends still count
            results[f"{backend}_error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--espnet-code", type=Path, help="checkout of github.com/sacmehta/ESPNet")
    parser.add_argument("--edgenets-code", type=Path, help="checkout of github.com/sacmehta/EdgeNets")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    parser.add_argument("--size", default="1024x512", help="WxH")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument(
        "--backends", default=",".join(DEFAULT_BACKENDS), help=f"comma-separated, from {', '.join(BACKENDS)}"
    )
    args = parser.parse_args()
    backends = args.backends.split(",")
    if unknown := sorted(set(backends) - set(BACKENDS)):
        sys.exit(f"unknown backend {unknown[0]!r}: expected some of {', '.join(BACKENDS)}")
    width, height = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    report = {}
    for name in args.models.split(","):
        if name not in MODELS:
            sys.exit(f"unknown peer model {name!r}: expected one of {', '.join(MODELS)}")
        model = build(name, args.espnet_code, args.edgenets_code)
        times = time_backends(model, (1, 3, height, width), args.threads, args.warmup, args.iters, backends)
        timed = {k: v for k, v in times.items() if isinstance(v, float)}
        if not timed:
            sys.exit(f"{name}: no backend ran ({json.dumps(times)})")
        best = min(timed, key=timed.get)
        report[name] = {"best_ms": timed[best], "best_backend": best, **times}
        print(f"{name}: {json.dumps(report[name])}", file=sys.stderr, flush=True)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
