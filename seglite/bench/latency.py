"""Model-only latency: inputs already on the device, CUDA synchronised, warm-up excluded."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from seglite.bench.complexity import count_flops, count_parameters
from seglite.errors import SegliteError
from seglite.export.base import runtime_threads

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class LatencyResult:
    model: str
    backend: str
    device: str
    precision: str
    size: list[int]
    batch: int
    threads: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    fps: float
    peak_memory_mb: float
    params: int
    gflops: float
    machine: dict

    def to_dict(self) -> dict:
        return asdict(self)


def machine_fingerprint(device: torch.device, threads: int) -> dict:
    from seglite.devices import SPEED_FEATURES, cpu_info

    cpu, flags = cpu_info()
    info = {
        "cpu": cpu,
        "cpu_features": [name for name in SPEED_FEATURES if name in flags],
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def describe_machine(machine: dict) -> str:
    """machine_fingerprint as one line for a report's reader."""
    features = f" ({', '.join(machine['cpu_features'])})" if machine.get("cpu_features") else ""
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    software = [f"torch {machine['torch']}", f"Python {machine['python']}"]
    software += [f"onnxruntime {machine['onnxruntime']}"] if machine.get("onnxruntime") else []
    return f"{machine['cpu']}, {machine['cores']} cores, {machine['threads']} threads{features}{gpu}; " + ", ".join(
        software
    )


def _timed(run, warmup: int, iters: int, sync) -> list[float]:
    for _ in range(warmup):
        run()
    sync()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        sync()
        times.append((time.perf_counter() - start) * 1000.0)
    return times


def benchmark(
    model: torch.nn.Module,
    model_name: str,
    size: tuple[int, int],
    batch: int = 1,
    device: torch.device = torch.device("cpu"),
    threads: int | None = None,
    backend: str = "torch",
    precision: str = "fp32",
    warmup: int = 10,
    iters: int = 50,
    channels_last: bool = True,
    compile: bool = False,
) -> LatencyResult:
    """Time `iters` forward passes at size (W, H) after `warmup`; report the distribution."""
    if compile and backend != "torch":
        raise SegliteError("--compile is for --backend torch")
    if precision not in PRECISIONS:
        raise SegliteError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if threads:
        torch.set_num_threads(threads)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        from seglite.devices import reuse_freed_memory

        reuse_freed_memory()
    model = model.eval()
    params = count_parameters(model)
    gflops = count_flops(model, size) / 1e9
    shape = (batch, 3, size[1], size[0])
    if backend == "onnx":
        if device.type != "cpu" or precision != "fp32":
            raise SegliteError("--backend onnx runs on CPU in fp32 here; use --backend torch for GPU or fp16/bf16")
        from seglite.inference.onnx_export import OnnxRunner, export_onnx

        runner = OnnxRunner(export_onnx(model, size, batch=batch, final_upsample_outside=True), threads=threads)
        images = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)

        def run():
            runner(images)

        times = _timed(run, warmup, iters, lambda: None)
    elif backend == "openvino":
        if device.type != "cpu" or precision != "fp32":
            raise SegliteError("--backend openvino runs on CPU in fp32 here; use --backend torch for GPU or fp16/bf16")
        from seglite.inference.backends.openvino import convert_torch, openvino_available

        if not openvino_available():
            raise SegliteError("--backend openvino needs openvino: pip install 'seglite[export]'")
        import openvino as ov

        from seglite.inference.optimize import fold_batchnorm

        example = torch.zeros(shape)
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        compiled = ov.Core().compile_model(convert_torch(fold_batchnorm(model), example), "CPU", config)
        request = compiled.create_infer_request()
        images = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
        times = _timed(lambda: request.infer({0: images}), warmup, iters, lambda: None)
    elif backend == "torch":
        from seglite.inference.optimize import fold_batchnorm

        model = fold_batchnorm(model)
        dtype = PRECISIONS[precision]
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        model = model.to(device=device, dtype=dtype, memory_format=memory_format)
        x = torch.randn(shape, device=device, dtype=dtype).contiguous(memory_format=memory_format)
        if compile:
            from seglite.inference.backends.compiled import compile_model

            model = compile_model(model, size)
            warmup = max(warmup, 2)  # the first call compiles
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        def run():
            with torch.inference_mode():
                model(x)

        times = _timed(run, warmup, iters, sync)
    else:
        raise SegliteError(f"--backend {backend!r}: expected torch, onnx or openvino")
    return _result(
        times,
        model_name,
        "torch.compile" if compile else backend,
        device,
        precision,
        size,
        batch,
        threads,
        params,
        gflops,
    )


def _result(times, model_name, backend, device, precision, size, batch, threads, params, gflops) -> LatencyResult:
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS (kB on Linux)
    median = statistics.median(times)
    return LatencyResult(
        model=model_name,
        backend=backend,
        device=str(device),
        precision=precision,
        size=list(size),
        batch=batch,
        threads=threads,
        median_ms=round(median, 3),
        p90_ms=round(float(np.percentile(times, 90)), 3),
        mean_ms=round(statistics.fmean(times), 3),
        min_ms=round(min(times), 3),
        fps=round(1000.0 * batch / median, 2),
        peak_memory_mb=round(peak, 1),
        params=params,
        gflops=round(gflops, 3),
        machine=machine_fingerprint(device, threads),
    )


def benchmark_artifact(loaded, warmup: int = 10, iters: int = 50, threads: int | None = None) -> LatencyResult:
    """Model-only latency of an exported model in its own runtime (seglite.export), at the size it was exported
    for; params and GFLOPs come from its record (measured on the PyTorch network at export)."""
    if threads:
        torch.set_num_threads(threads)  # the runtime that runs on PyTorch's own pool (TorchScript), as benchmark()
    net = loaded.model
    record = net.record
    images = np.random.default_rng(0).standard_normal(net.input_shape, dtype=np.float32)
    times = _timed(lambda: net.runner(images), warmup, iters, lambda: None)
    height, width = net.input_shape[2:]
    return _result(
        times,
        loaded.model_name,
        record["format"],
        torch.device("cpu"),
        record.get("precision", "fp32"),
        (width, height),
        1,
        runtime_threads(threads),
        int(record.get("params", 0)),
        float(record.get("gflops", 0.0)),
    )


def benchmark_backends(
    model: torch.nn.Module,
    model_name: str,
    size: tuple[int, int],
    backend: str = "auto",
    device: torch.device = torch.device("cpu"),
    precision: str = "fp32",
    compile: bool = False,
    **kwargs,
) -> tuple[LatencyResult, list[LatencyResult]]:
    """`backend="auto"`: on CPU in fp32 time eager PyTorch, ONNX Runtime and torch.compile (skipped without a C++
    compiler), return the fastest and all results. Steady-state latency: the compile time is not counted."""
    candidates = [(backend, compile)]
    if backend == "auto":
        on_cpu_fp32 = device.type == "cpu" and precision == "fp32" and not compile
        from seglite.inference.backends.openvino import openvino_available

        static = [("torch", False), ("onnx", False)] + ([("openvino", False)] if openvino_available() else [])
        candidates = [*static, ("torch", True)] if on_cpu_fp32 else [("torch", compile)]
    results = []
    for name, compiled in candidates:
        try:
            results.append(
                benchmark(
                    model,
                    model_name,
                    size,
                    device=device,
                    backend=name,
                    precision=precision,
                    compile=compiled,
                    **kwargs,
                )
            )
        except SegliteError:
            if backend != "auto" or not compiled:
                raise
    return min(results, key=lambda r: r.median_ms), results
