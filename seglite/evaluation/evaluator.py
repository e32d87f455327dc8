"""Evaluate a segmenter on a Cityscapes split: the real-time protocol, optional flip / multi-scale TTA."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from seglite.data.cityscapes import find_samples, read_image, read_train_ids
from seglite.data.labels import IGNORE_INDEX, train_ids_to_label_ids
from seglite.errors import DataError
from seglite.evaluation.metrics import ConfusionMatrix
from seglite.inference.segmenter import Segmenter


@dataclass
class EvalOptions:
    split: str = "val"
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    save_predictions: Path | None = None
    limit: int | None = None
    progress: bool = True


@dataclass
class EvalResult:
    summary: dict
    num_images: int
    size: tuple[int, int] | None
    seconds_model: float
    seconds_metric: float
    extra: dict = field(default_factory=dict)


@torch.inference_mode()
def predict_logits(
    segmenter: Segmenter, image: np.ndarray, out_size: tuple[int, int], options: EvalOptions
) -> torch.Tensor:
    """Sum of softmax-free logits over scales (and flips), each upsampled to out_size (H, W) before summing."""
    base = segmenter.preprocess.size or (image.shape[1], image.shape[0])
    total = None
    for scale in options.scales:
        size = (max(16, round(base[0] * scale)), max(16, round(base[1] * scale)))
        batch = segmenter.preprocess.with_size(size)(image)[None].to(segmenter.device, segmenter.dtype)
        if options.flip:
            batch = torch.cat([batch, batch.flip(-1)])
        logits = segmenter.model(batch).float()
        if options.flip:
            logits = logits[:1] + logits[1:].flip(-1)
        logits = F.interpolate(logits, size=out_size, mode="bilinear", align_corners=False)
        total = logits if total is None else total + logits
    return total


def evaluate(segmenter: Segmenter, data_root: str | Path, options: EvalOptions | None = None) -> EvalResult:
    options = options or EvalOptions()
    samples = find_samples(data_root, options.split)
    if options.limit:
        samples = samples[: options.limit]
    matrix = ConfusionMatrix(device=segmenter.device)
    seconds_model = seconds_metric = 0.0
    if options.save_predictions:
        options.save_predictions.mkdir(parents=True, exist_ok=True)
    columns = (TextColumn("eval {task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not options.progress, transient=True) as progress:
        task = progress.add_task(segmenter.model_name, total=len(samples))
        for sample in samples:
            image = read_image(sample.image)
            target = read_train_ids(sample.label)
            if target.shape != image.shape[:2]:
                raise DataError(
                    f"{sample.label}: label is {target.shape[1]}x{target.shape[0]} but its image "
                    f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}"
                )
            start = time.perf_counter()
            logits = predict_logits(segmenter, image, target.shape, options)
            prediction = logits.argmax(1)[0]
            if logits.shape[1] > segmenter.num_known:
                prediction[prediction >= segmenter.num_known] = IGNORE_INDEX
            if segmenter.device.type == "cuda":
                torch.cuda.synchronize()
            middle = time.perf_counter()
            matrix.update(prediction, torch.from_numpy(target))
            if segmenter.device.type == "cuda":
                torch.cuda.synchronize()
            seconds_metric += time.perf_counter() - middle
            seconds_model += middle - start
            if options.save_predictions:
                label_ids = train_ids_to_label_ids(prediction.to(torch.uint8).cpu().numpy())
                cv2.imwrite(str(options.save_predictions / f"{sample.stem}_leftImg8bit.png"), label_ids)
            progress.advance(task)
    return EvalResult(
        matrix.summary(segmenter.loaded.classes), len(samples), segmenter.preprocess.size, seconds_model, seconds_metric
    )
