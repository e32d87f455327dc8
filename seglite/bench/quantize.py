"""INT8 static quantization for CPU with ONNX Runtime, kept only where it is measurably harmless.

`quantize_and_validate` calibrates on real frames, measures latency and mIoU of the fp32 and INT8 ONNX models on a
labelled split, and caches the INT8 model (next to the fp32 export, same key plus `-int8`) only when the mIoU drops
by less than `max_miou_drop` points. `Segmenter(..., precision="int8")` then runs the cached model.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from seglite.data.datasets import DatasetSpec
from seglite.errors import SegliteError
from seglite.files import atomic_write, atomic_write_bytes
from seglite.inference.backends.int8 import RunnerBackend, int8_path
from seglite.inference.onnx_export import OnnxRunner

MAX_MIOU_DROP = 1.0  # points; the bar for offering INT8 at all


def quantize_onnx(fp32_path: Path, out_path: Path, calibration: list[np.ndarray]) -> None:
    """QDQ, per-channel signed INT8 weights, unsigned INT8 activations (the VNNI-friendly U8S8 form), MinMax ranges."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Frames(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    # ORT's quantizer logs on the root logger per tensor it leaves per-tensor (1-D BatchNorm/PReLU weights: "Axis 1 is
    # out-of-range"): nothing a user acts on, and the mIoU change below is what judges the result.
    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as restore:
        root.setLevel(max(level, logging.ERROR))
        restore.callback(root.setLevel, level)
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared))
        quantize_static(
            str(prepared),
            str(Path(tmp) / "int8.onnx"),
            Frames(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
        move_atomically(Path(tmp) / "int8.onnx", out_path)


def move_atomically(source: Path, target: Path) -> None:
    """Copy next to the target, then rename over it (the temp folder may be on another filesystem)."""
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


@dataclass
class QuantizationReport:
    model: str
    weights: str
    size: str
    calibration_frames: int
    eval_frames: int
    fp32_ms: float
    int8_ms: float
    fp32_miou: float
    int8_miou: float
    argmax_agreement: float
    accepted: bool
    path: str | None

    @property
    def miou_change(self) -> float:
        return self.int8_miou - self.fp32_miou

    def to_dict(self) -> dict:
        return {**asdict(self), "miou_change": self.miou_change}


def runner_median_ms(runner: OnnxRunner, batch: np.ndarray, iters: int) -> float:
    """Median ms of an ONNX Runtime runner on one batch, after three warm-up runs."""
    for _ in range(3):
        runner(batch)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        runner(batch)
        times.append(1000 * (time.perf_counter() - start))
    return statistics.median(times)


def quantize_and_validate(
    model: str | None,
    weights: str | None,
    data: DatasetSpec | str | Path,
    size: tuple[int, int] | None = None,
    calibration_split: str = "train",
    eval_split: str = "val",
    max_calibration_frames: int = 32,
    threads: int | None = None,
    iters: int = 20,
    max_miou_drop: float = MAX_MIOU_DROP,
    require_faster: bool = True,
    progress: bool = True,
) -> QuantizationReport:
    """Calibrate, measure fp32 vs INT8 (latency and mIoU), and cache the INT8 model only if it passes."""
    from seglite.data.cityscapes import read_image
    from seglite.data.datasets import load_dataset
    from seglite.evaluation.evaluator import EvalOptions, evaluate
    from seglite.inference.onnx_export import export_onnx
    from seglite.inference.segmenter import Segmenter
    from seglite.zoo.checkpoint import load_model

    loaded = load_model(model, weights)
    size = tuple(size or loaded.fixed_size())
    preprocess = loaded.preprocess.with_size(size)
    dataset = data if isinstance(data, DatasetSpec) else load_dataset("cityscapes", data)
    for split in (calibration_split, eval_split):
        if not dataset.has_split(split):
            raise SegliteError(
                f"data set {dataset.name!r}: quantization needs split {split!r} (images to calibrate on, labelled "
                "images to measure the mIoU change); pass --calibration-split / --eval-split"
            )
    calibration_samples = dataset.samples(calibration_split, require_labels=False)[:max_calibration_frames]
    eval_samples = dataset.samples(eval_split)
    calibration = [preprocess(read_image(s.image))[None].numpy() for s in calibration_samples]
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path, int8_tmp = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        export_onnx(loaded.model, size, fp32_path)
        quantize_onnx(fp32_path, int8_tmp, calibration)
        runners = {"fp32": OnnxRunner(fp32_path, threads), "int8": OnnxRunner(int8_tmp, threads)}
        latency = {name: runner_median_ms(runner, calibration[0], iters) for name, runner in runners.items()}
        miou = {}
        for name, runner in runners.items():
            segmenter = Segmenter.from_loaded(
                loaded, size=size, backend=lambda context, r=runner, n=name: RunnerBackend(context, r, n)
            )
            result = evaluate(segmenter, dataset, EvalOptions(split=eval_split, progress=progress))
            miou[name] = result.summary["miou"]
        agreements = []
        for sample in eval_samples:
            x = preprocess(read_image(sample.image))[None].numpy()
            fp32, int8 = (runners[name](x).argmax(1) for name in ("fp32", "int8"))
            agreements.append(float(np.mean(fp32 == int8)))
        agreement = statistics.fmean(agreements)
        # Offered only when it keeps the accuracy and actually pays (on CPUs without VNNI, or on networks made of
        # depthwise convs and PReLU, the quantize/dequantize traffic can make it slower than fp32).
        faster = latency["int8"] < latency["fp32"] or not require_faster
        accepted = miou["fp32"] - miou["int8"] < max_miou_drop and faster
        path = None
        if accepted:
            path = int8_path(loaded, size)
            move_atomically(int8_tmp, path)
    report = QuantizationReport(
        model=loaded.model_name,
        weights=loaded.source,
        size=f"{size[0]}x{size[1]}",
        calibration_frames=len(calibration),
        eval_frames=len(eval_samples),
        fp32_ms=round(latency["fp32"], 2),
        int8_ms=round(latency["int8"], 2),
        fp32_miou=round(miou["fp32"], 3),
        int8_miou=round(miou["int8"], 3),
        argmax_agreement=round(agreement, 5),
        accepted=accepted,
        path=str(path) if path else None,
    )
    if path is not None:
        atomic_write_bytes(json.dumps(report.to_dict(), indent=1).encode(), path.with_suffix(".json"))
    return report
