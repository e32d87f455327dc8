"""`--backend auto`: time the backends once per model, weights and size on this machine, keep the fastest whose
predictions agree with eager, and compile only where it pays. Knows backends only through their contract
(seglite.inference.backends); the decisions are pure functions (compile_could_pay, pick_backend)."""

from __future__ import annotations

import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from seglite import __version__
from seglite.errors import SegliteError
from seglite.files import atomic_write_bytes
from seglite.inference.backends import Backend, BackendContext, create_backend
from seglite.inference.backends.compiled import FRESH_COMPILE_S
from seglite.inference.backends.openvino import openvino_available
from seglite.inference.postprocess import class_argmax
from seglite.sharing import split_threads

BACKEND_TRIAL_FIELDS = ("ms", "agreement", "compile_s", "unavailable", "two_streams")  # one cached entry
# Two streams pay where a frame's model time in them is at most 15 % over eager's latency: the decoding, labels and
# encoding then overlap the model instead of taking turns with it, which cost latency mode 7-13 % end to end
# (ESPNetv2 s0.5-s2.0, scripts/bench_predict.py, 2-core Xeon with AMX).
THROUGHPUT_GAIN = 1.15
# The most torch.compile has saved over the faster static backend on any seglite network on CPU (ESPNetv2 s2.0:
# 133 vs 208 ms, ~36 %): the estimate, before compiling, of what a run could gain.
TYPICAL_COMPILE_SAVING = 0.4
AGREEMENT = 0.999  # share of pixels whose argmax must equal eager's


def compile_could_pay(trial: dict, frames: int | None) -> bool:
    """Whether a run of `frames` lasts long enough that torch.compile, at the best saving seen, could win back a
    typical fresh compile: only then is it worth timing (compiling) at all. A 221-frame video at 175 ms a frame
    could save ~15 s, less than the ~20 s compile, so it runs without the 40 s trial."""
    if frames is None:
        return True
    return frames * min(trial["ms"].values()) / 1000 * TYPICAL_COMPILE_SAVING > FRESH_COMPILE_S


def pick_backend(trial: dict, frames: int | None, compiled_already: bool = False) -> tuple[str, str]:
    """(backend, reason) from time_backends' measurements: the fastest backend whose argmax agrees with eager on
    >= 99.9 % of pixels; torch.compile only when the time it saves over `frames` (None: open-ended) exceeds its
    measured compile time, since every new process compiles again (unless `compiled_already`: the trial just
    compiled it in this process)."""
    ms, agreement = trial["ms"], trial["agreement"]
    exact = [name for name in ms if agreement.get(name, 1.0) >= AGREEMENT]
    static = min((name for name in exact if name != "torch.compile"), key=ms.get)
    choice, notes = static, []
    # A gain within timing noise is not worth compiling again in every new process.
    if "torch.compile" in exact and ms["torch.compile"] < 0.97 * ms[static]:
        saved_s = float("inf") if frames is None else frames * (ms[static] - ms["torch.compile"]) / 1000
        if compiled_already or saved_s > trial["compile_s"]:
            choice = "torch.compile"
        else:
            notes.append(
                f"torch.compile would not pay back its {trial['compile_s']:.0f} s compile over {frames} frame(s)"
            )
    measured = ", ".join(f"{name} {ms[name]:.0f} ms" for name in ms)
    if trial.get("compile_s") is not None:
        measured += f" (+{trial['compile_s']:.0f} s to compile{', done' if compiled_already else ''})"
    notes += [f"{name} argmax agreement {100 * agreement[name]:.2f} %" for name in agreement if name not in exact]
    notes += [f"{name} unavailable: {why}" for name, why in trial.get("unavailable", {}).items()]
    return choice, "; ".join([f"measured {measured}", *notes])


def streams_pay(trial: dict, choice: str) -> int:
    """Inference streams for offline sources (video files, images): two where the choice is eager PyTorch and two
    1-thread calls at once took at most 15 % longer a frame than one 2-thread call. Measured, not assumed: end to end
    ESPNetv2 s1.0 gains ~10 % in two streams (model alone 0.9-1.1x), DeepLabV3+ LCNet 0.5x loses ~30 % (model alone
    1.5x)."""
    two = trial.get("two_streams")
    return 2 if choice == "torch" and two is not None and two <= THROUGHPUT_GAIN else 1


def time_two_streams(backend: Backend, x: torch.Tensor, pairs: int = 3) -> float | None:
    """Time a frame takes with two calls at once, each on half the threads, over the time of one call on all of them
    (None with fewer than 2 threads). In blocks of `pairs` frames, one way then the other, twice, so a shared VM's
    drift hits both alike; not pair by pair: changing the thread count at every call slowed both."""
    if torch.get_num_threads() < 2:
        return None
    seconds = {"one": 0.0, "two": 0.0}
    with ThreadPoolExecutor(2) as pool:
        for block in range(3):  # the first block of each way warms it up (kernels are chosen per thread count)
            start = time.perf_counter()
            for _ in range(pairs):
                backend(x)
                backend(x)
            middle = time.perf_counter()
            with split_threads(2):
                for _ in range(pairs):
                    list(pool.map(lambda _: backend(x), range(2)))
            if block:
                seconds["one"] += middle - start
                seconds["two"] += time.perf_counter() - middle
    return seconds["two"] / seconds["one"]


def time_backends(context: BackendContext, names: list[str]) -> tuple[dict, dict[str, Backend]]:
    """Median ms of a 1-image pass per backend, argmax agreement with eager, and the seconds a fresh process pays to
    build a backend (torch.compile's compile); also the built backends, so the chosen one is not built twice."""
    width, height = context.size
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    x = x.contiguous(memory_format=context.memory_format)
    reference = class_argmax(create_backend("torch", context)(x))
    timings, agreement, unavailable, compile_s, built = {}, {}, {}, None, {}
    for name in names:
        start = time.perf_counter()
        try:
            backend = create_backend(name, context)
            out = backend(x)  # warm-up (for onnx the export, for torch.compile the compile)
        except SegliteError as exc:  # e.g. no C++ compiler for torch.compile: the others still run
            unavailable[name] = str(exc).split(";")[0]
            continue
        cost = backend.build_cost(time.perf_counter() - start)
        if cost is not None:
            compile_s = cost
        if name != "torch":
            agreement[name] = float((class_argmax(out) == reference).float().mean())
        times = []
        for _ in range(5):
            start = time.perf_counter()
            backend(x)
            times.append((time.perf_counter() - start) * 1000)
        timings[name], built[name] = statistics.median(times), backend
    two_streams = time_two_streams(built["torch"], x) if "torch" in built else None
    trial = {"ms": timings, "agreement": agreement, "compile_s": compile_s, "unavailable": unavailable}
    return trial | {"two_streams": two_streams}, built


def choose_backend(
    context: BackendContext, frames: int | None = None, compiled: Backend | None = None
) -> tuple[Backend, str]:
    """CPU at a fixed size: the fastest exact backend (torch.compile only where it pays back its compile over
    `frames`). `compiled`: a torch.compile backend this process already built (its compile is paid).

    The measurements are cached next to the ONNX exports (key: model, weights, size, seglite version), so later
    runs skip the trial and only redo the choice for their own number of frames. torch.compile is not even timed
    for a run too short to pay it back; a later, longer run adds it to the cache.
    """
    if context.device.type != "cpu":
        return create_backend("torch", context), "auto keeps PyTorch on a GPU"
    if context.size is None:
        # Exported runtimes fix the input size; each image at its own size stays in eager PyTorch.
        return create_backend("torch", context), "images at their own size: no fixed input to export"
    from seglite.inference.onnx_export import weights_fingerprint
    from seglite.zoo.registry import seglite_home

    width, height = context.size
    # The runtime speed changes with seglite's own optimisations: a new version measures again.
    key = (
        f"{context.loaded.model_name}-{weights_fingerprint(context.loaded.model)}-{width}x{height}-seglite{__version__}"
    )
    cache = seglite_home() / "onnx" / "backend_choices.json"
    try:
        choices = json.loads(cache.read_text())
    except (OSError, ValueError):
        choices = {}
    trial = choices.get(key)
    static = ["torch", "onnx"] + (["openvino"] if openvino_available() else [])
    cached = (
        isinstance(trial, dict)
        and set(trial) == set(BACKEND_TRIAL_FIELDS)
        and set(static) <= {*trial["ms"], *trial["unavailable"]}
    )
    built: dict[str, Backend] = {"torch.compile": compiled} if compiled is not None else {}
    if not cached:
        trial, more = time_backends(context, static)
        built.update(more)
    if "torch.compile" not in {*trial["ms"], *trial["unavailable"]} and compile_could_pay(trial, frames):
        cached = False
        measured, more = time_backends(context, ["torch.compile"])
        built.update(more)
        for field in ("ms", "agreement", "unavailable"):  # two_streams stays: eager's, from the first trial
            trial[field].update(measured[field])
        trial["compile_s"] = measured["compile_s"]
    if not cached:
        choices[key] = trial
        try:
            atomic_write_bytes(json.dumps(choices, indent=1).encode(), cache)
        except OSError:  # a read-only home: the trial runs again next time
            pass
    name, reason = pick_backend(trial, frames, compiled_already="torch.compile" in built)
    backend = built.get(name) or create_backend(name, context)
    if hasattr(backend, "reset_shape"):
        backend.reset_shape()  # the run's own first batch decides the compiled shape
    backend.streams = streams_pay(trial, name)
    if trial["two_streams"] is not None:
        reason += f"; 2 streams x 1 thread {trial['two_streams']:.2f}x torch's time a frame"
        reason += " (images and video files run 2 at once)" if backend.streams > 1 else ""
    return backend, reason + (" (cached)" if cached else "")
