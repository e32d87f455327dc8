"""`seglite export`: build the artifact in a temporary folder, describe it, run it with its own runtime against
eager PyTorch on real frames, and only then give it its name."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from seglite.errors import InputError, SegliteError
from seglite.export import get_format
from seglite.export.base import METADATA_FILE, ExportRequest, quiet_converter, runtime_threads, write_record
from seglite.files import temporary_name, write_failure
from seglite.models.base import portable_graph
from seglite.zoo.checkpoint import LoadedWeights, load_model

MIN_FP32_AGREEMENT = 0.995  # argmax agreement an fp32 artifact must keep with eager PyTorch, or nothing is written
CALIBRATION_FRAMES = 32


@dataclass
class ExportReport:
    path: str
    format: str
    precision: str
    model: str
    size: str
    file_mb: float
    export_s: float
    frames: str  # what the parity check ran on
    agreement: float | None  # argmax agreement with eager PyTorch (None: the runtime does not run here)
    max_abs_diff: float | None
    note: str = ""
    calibration: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def default_name(loaded: LoadedWeights, weights: str | None, fmt: str, precision: str) -> str:
    stem = Path(weights).stem if weights and Path(weights).exists() else (weights or loaded.model_name)
    return f"{stem}_{fmt}{'' if precision == 'fp32' else '_' + precision}_model"


def file_sha256(weights: str | None) -> str | None:
    if weights is None:
        return None
    from seglite.zoo.registry import resolve_weights_file, sha256_of

    return sha256_of(resolve_weights_file(weights)[0])


def folder_mb(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file() and p.name != METADATA_FILE]
    return sum(p.stat().st_size for p in files) / 1e6


def check_frames(
    size: tuple[int, int], data=None, image: str | os.PathLike | None = None, count: int = 4
) -> tuple[list[np.ndarray], str]:
    """BGR frames for the parity check: --image, else the first val frames of --data, else generated streets."""
    from seglite.inference.sources import read_image

    if image is not None:
        return [read_image(Path(image))], str(image)
    if data is not None:
        samples = data.samples("val", require_labels=False)[:count]
        if samples:
            return [read_image(s.image) for s in samples], f"{len(samples)} {data.name} val frames"
    from seglite.data.synth import render_scene

    frames = [render_scene(size[0], size[1], seed=7 + i)[0] for i in range(2)]
    return frames, "2 generated street scenes"


def calibration_inputs(loaded: LoadedWeights, size, data, count: int = CALIBRATION_FRAMES) -> tuple[list, str]:
    """Preprocessed inputs that calibrate INT8 ranges: train frames of --data (generated streets without it)."""
    from seglite.inference.sources import read_image

    preprocess = loaded.preprocess.with_size(size)
    if data is not None:
        samples = data.samples("train", require_labels=False)
        if samples:
            step = max(1, len(samples) // count)
            chosen = samples[::step][:count]
            return [preprocess.to_array(read_image(s.image))[None] for s in chosen], (
                f"{len(chosen)} {data.name} train frames"
            )
    from seglite.data.synth import render_scene

    frames = [render_scene(size[0], size[1], seed=100 + i)[0] for i in range(min(count, 8))]
    return [preprocess.to_array(f)[None] for f in frames], (
        f"{len(frames)} generated streets (pass --data for frames like yours: calibration on them is worth more)"
    )


def artifact_record(loaded: LoadedWeights, weights: str | None, fmt, precision: str, size) -> dict:
    from seglite import __version__
    from seglite.bench.complexity import count_flops, count_parameters
    from seglite.data.labels import IGNORE_INDEX

    width, height = size
    dataset = dict(loaded.dataset or {"name": "cityscapes"})
    record = {
        "format": fmt.name,
        "precision": precision,
        "model": loaded.model_name,
        "model_file": fmt.model_file,
        "classes": list(loaded.classes),
        "num_outputs": int(loaded.model.num_classes),
        "palette": loaded.palette,
        "ignore_index": IGNORE_INDEX,
        "dataset": dataset,
        "preprocess": loaded.preprocess.with_size(size).to_dict(),
        "input_shape": [1, 3, height, width],
        "input_layout": "NCHW float32, preprocessed as `preprocess` says (the runner does it: pass BGR frames)",
        "output": "1 x num_outputs x H x W logits at the input size; argmax over classes, channels past classes = ignore",
        "params": int(count_parameters(loaded.model)),
        "gflops": round(count_flops(loaded.model, size) / 1e9, 3),
        "source_weights": loaded.source,
        "source_sha256": file_sha256(weights),
        "seglite_version": __version__,
        "torch_version": str(torch.__version__),
        "exported": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return json.loads(json.dumps(record))  # plain lists and strings: YAML and every format's metadata take them


def export_model(
    model: str | None,
    weights: str | None,
    fmt_name: str,
    out: str | os.PathLike | None = None,
    precision: str = "fp32",
    size: tuple[int, int] | None = None,
    data=None,
    image: str | os.PathLike | None = None,
    exist_ok: bool = False,
    threads: int | None = None,
    loaded: LoadedWeights | None = None,
    dynamic: bool = False,
    on_start: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export to one format; `out` is a folder (a `.onnx` path for onnx writes one self-describing file).
    `on_start` hears what is being exported once the request is checked (the converters are silent for minutes)."""
    fmt = get_format(fmt_name)
    if (why := fmt.missing()) is not None:
        raise InputError(why)
    fmt.check_precision(precision)
    if dynamic and fmt.name != "onnx":
        raise InputError(f"--dynamic is for --format onnx; {fmt.name} exports a static input shape")
    loaded = loaded or load_model(model, weights)
    if "artifact" in loaded.config:
        raise InputError(f"--weights {weights}: already an exported model; export from the PyTorch checkpoint")
    size = tuple(size or loaded.fixed_size())
    stride = getattr(loaded.model, "stride", 1)
    if size[0] % stride or size[1] % stride:
        raise InputError(f"--size {size[0]}x{size[1]}: {loaded.model_name} needs multiples of {stride}")
    out = Path(out) if out is not None else Path("outputs/export") / default_name(loaded, weights, fmt.name, precision)
    single_file = fmt.name == "onnx" and out.suffix == ".onnx"
    if out.exists() and not exist_ok:
        raise InputError(f"{out}: already exists; pass another --out, or --exist-ok to replace it")
    preprocess = loaded.preprocess.with_size(size)
    frames, frames_name = check_frames(size, data, image)
    calibration, calibration_name = ([], "")
    if precision == "int8":
        calibration, calibration_name = calibration_inputs(loaded, size, data)
    net = loaded.model.eval()
    example = torch.from_numpy(preprocess.to_array(frames[0])[None].copy())  # fresh strides: [None] gives 0
    record = artifact_record(loaded, weights, fmt, precision, size)
    out.parent.mkdir(parents=True, exist_ok=True)
    if on_start:
        on_start(f"exporting {loaded.model_name} at {size[0]}x{size[1]} to {fmt.name} {precision}")
    work = temporary_name(out, "partial")
    try:
        work.mkdir()
        started = time.perf_counter()
        with (
            torch.no_grad(),
            quiet_converter(),
            portable_graph(fmt.matrix_pooling) if fmt.portable else nullcontext(),
        ):
            try:
                fmt.export(ExportRequest(net, example, precision, calibration, work, threads, dynamic, record))
            except (SegliteError, OSError):
                raise
            except Exception as exc:  # converters raise their own types: name the format, the model and the cause
                cause = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
                raise SegliteError(
                    f"{fmt.name} conversion of {loaded.model_name} failed: {cause[:300]}"
                    + (f" ({exc.__notes__[-1][:300]})" if getattr(exc, "__notes__", None) else "")
                ) from None
        export_s = time.perf_counter() - started
        write_record(work, record)
        agreement = diff = None
        if not fmt.runs_here_note:
            agreement, diff = _parity(fmt, work, record, net, [preprocess.to_array(f)[None] for f in frames], threads)
            if precision == "fp32" and agreement < MIN_FP32_AGREEMENT:
                raise SegliteError(
                    f"{fmt.name} export of {loaded.model_name} rejected: its runtime agrees with PyTorch on only "
                    f"{100 * agreement:.2f} % of pixels of {frames_name} (< {100 * MIN_FP32_AGREEMENT:.1f} %); "
                    "nothing written"
                )
        result = work / fmt.model_file if single_file else work
        _replace(result, out, exist_ok)
    except OSError as exc:
        raise write_failure(exc, out) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ExportReport(
        str(out),
        fmt.name,
        precision,
        loaded.model_name,
        f"{size[0]}x{size[1]}",
        round(folder_mb(out), 3),
        round(export_s, 2),
        frames_name,
        agreement,
        diff,
        fmt.runs_here_note,
        calibration_name,
    )


def _parity(fmt, folder: Path, record: dict, net, inputs: list[np.ndarray], threads) -> tuple[float, float]:
    try:
        with quiet_converter():
            runner = fmt.load(folder, record, runtime_threads(threads))
        got = [np.asarray(runner(x), np.float32) for x in inputs]
    except SegliteError:
        raise
    except Exception as exc:  # runtimes raise their own types; the user needs the format and the cause
        raise SegliteError(
            f"the {fmt.name} runtime cannot run the exported model: {str(exc).splitlines()[0]}"
        ) from None
    with torch.inference_mode():
        expected = [net(torch.from_numpy(x)).float().numpy() for x in inputs]
    same = sum(int((g.argmax(1) == e.argmax(1)).sum()) for g, e in zip(got, expected, strict=True))
    total = sum(e[:, 0].size for e in expected)
    diff = max(float(np.abs(g - e).max()) for g, e in zip(got, expected, strict=True))
    return same / total, diff


def _replace(result: Path, out: Path, exist_ok: bool) -> None:
    """Rename the finished artifact to `out`; an old one (allowed by exist_ok) is moved aside first, then removed."""
    old = None
    if out.exists():
        if not exist_ok:
            raise InputError(f"{out}: already exists; pass another --out, or --exist-ok to replace it")
        old = temporary_name(out, "old")
        os.replace(out, old)
    os.replace(result, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
