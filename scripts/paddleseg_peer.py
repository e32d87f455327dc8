"""PaddleSeg's models in Paddle Inference + oneDNN: median ms, printed as one JSON object.

Runs in a separate environment (PaddleSeg needs numpy<2 and paddlepaddle 3.2.2, whose oneDNN inference works;
3.3.x fails on bilinear resizes), so it imports nothing from seglite; scripts/bench_peers.py calls it with
`--paddle-python`. Set up: python3 -m venv PADDLE_VENV && PADDLE_VENV/bin/pip install paddlepaddle==3.2.2 paddleseg
"numpy<2" "pandas<3". Usage: PADDLE_VENV/bin/python scripts/paddleseg_peer.py --models mnv3l_050,mnv3l_100
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

BACKBONES = {
    "mnv3l_050": "MobileNetV3_large_x0_5",
    "mnv3l_075": "MobileNetV3_large_x0_75",
    "mnv3l_100": "MobileNetV3_large_x1_0",
}


def build(name: str):
    """DeepLabV3+ as PaddleSeg builds it by default: low-level stride-4 features, ASPP on stride 32."""
    from paddleseg.models import DeepLabV3P, backbones

    return DeepLabV3P(num_classes=19, backbone=getattr(backbones, BACKBONES[name])(), backbone_indices=(0, 3))


def median_ms(name: str, width: int, height: int, threads: int, warmup: int, iters: int) -> float:
    import numpy as np
    import paddle
    from paddle import inference

    model = build(name)
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = str(Path(tmp) / "model")
        spec = [paddle.static.InputSpec([1, 3, height, width], "float32", "image")]
        paddle.jit.save(paddle.jit.to_static(model, input_spec=spec, full_graph=True), prefix)
        model_file = next(p for p in Path(tmp).iterdir() if p.suffix in (".json", ".pdmodel"))
        config = inference.Config(str(model_file), prefix + ".pdiparams")
        config.disable_gpu()
        config.enable_mkldnn()
        config.set_cpu_math_library_num_threads(threads)
        config.switch_ir_optim(True)
        config.disable_glog_info()
        predictor = inference.create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.copy_from_cpu(np.random.default_rng(0).standard_normal((1, 3, height, width), dtype=np.float32))
    for _ in range(warmup):
        predictor.run()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        predictor.run()
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default=",".join(BACKBONES))
    parser.add_argument("--size", default="1024x512")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    results = {}
    for name in args.models.split(","):
        if name not in BACKBONES:
            sys.exit(f"--models: {name!r} is not one of {', '.join(BACKBONES)}")
        results[name] = round(median_ms(name, width, height, args.threads, args.warmup, args.iters), 2)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
