"""Evaluate a segmenter on a Cityscapes split: the real-time protocol, optional flip / multi-scale TTA."""

from __future__ import annotations

import time
from collections.abc import Callable
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
    window: tuple[int, int] | None = None  # sliding-window crop (W, H) over the full-resolution image


@dataclass
class EvalResult:
    summary: dict
    num_images: int
    size: tuple[int, int] | None
    seconds_model: float
    seconds_metric: float
    extra: dict = field(default_factory=dict)


def sliding_window_logits(
    model: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor, window: tuple[int, int]
) -> torch.Tensor:
    """Logits of overlapping crops (stride 2/3 of the window), averaged where they overlap."""
    height, width = batch.shape[-2:]
    crop_w, crop_h = min(window[0], width), min(window[1], height)
    stride_w, stride_h = max(1, crop_w * 2 // 3), max(1, crop_h * 2 // 3)
    tops = sorted({*range(0, height - crop_h, stride_h), height - crop_h})
    lefts = sorted({*range(0, width - crop_w, stride_w), width - crop_w})
    total = counts = None
    for top in tops:
        for left in lefts:
            logits = model(batch[..., top : top + crop_h, left : left + crop_w]).float()
            if total is None:
                total = logits.new_zeros(logits.shape[:2] + (height, width))
                counts = logits.new_zeros((1, 1, height, width))
            total[..., top : top + crop_h, left : left + crop_w] += logits
            counts[..., top : top + crop_h, left : left + crop_w] += 1
    return total / counts


@torch.inference_mode()
def predict_logits(
    segmenter: Segmenter, image: np.ndarray, out_size: tuple[int, int], options: EvalOptions
) -> torch.Tensor:
    """Logits summed over scales (and flips), each upsampled to out_size (H, W) before summing."""
    if options.window:
        base = (image.shape[1], image.shape[0])
    else:
        base = segmenter.preprocess.size or (image.shape[1], image.shape[0])
    total = None
    for scale in options.scales:
        size = (max(16, round(base[0] * scale)), max(16, round(base[1] * scale)))
        batch = segmenter.preprocess.with_size(size)(image)[None].to(segmenter.device, segmenter.dtype)
        if options.flip:
            batch = torch.cat([batch, batch.flip(-1)])
        if options.window:
            logits = sliding_window_logits(segmenter.network, batch, options.window)
        else:
            logits = segmenter.network(batch).float()
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
