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
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from seglite.data.cityscapes import Sample, read_image
from seglite.data.classmap import describe_links, link_classes, load_class_map, shipped_class_maps
from seglite.data.datasets import DatasetSpec, load_dataset, trained_dataset
from seglite.data.labels import IGNORE_INDEX, train_ids_to_label_ids
from seglite.distributed import DistInfo, all_reduce_sum, shard
from seglite.errors import DataError
from seglite.evaluation.metrics import ConfusionMatrix
from seglite.files import atomic_write_bytes, write_failure
from seglite.inference.postprocess import class_argmax
from seglite.inference.segmenter import Segmenter
from seglite.inference.video import offline_streams
from seglite.progress import Progress
from seglite.sharing import in_streams, single_threaded_opencv


@dataclass
class EvalOptions:
    split: str = "val"
    flip: bool = False
    scales: tuple[float, ...] = (1.0,)
    save_predictions: Path | None = None
    limit: int | None = None
    progress: bool = True
    window: tuple[int, int] | None = None  # sliding-window crop (W, H) over the full-resolution image
    class_map: str | Path | dict | None = None  # data set class <- predicted class(es), for weights of other classes
    streams: int | None = None  # images at once on a CPU, each on its share of the threads (None: the backend's choice)


@dataclass
class EvalResult:
    """What evaluate returns: `summary` holds miou, per_class_iou (None: a class absent and never predicted) and
    pixel_acc, in percent; the seconds are summed over the images (see `streams`)."""

    summary: dict
    num_images: int
    size: tuple[int, int] | None
    seconds_model: float
    seconds_metric: float
    extra: dict = field(default_factory=dict)
    streams: int = 1  # images at once (each image's seconds are then its own, in its stream)

    @property
    def miou(self) -> float:
        """mIoU in percent, as the official Cityscapes evaluator averages it (classes absent from the split and
        never predicted are left out)."""
        return self.summary["miou"]


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


def prediction_lookup(
    predicted: tuple[str, ...], dataset: DatasetSpec, class_map: str | Path | dict | None
) -> tuple[torch.Tensor | None, str]:
    """How predicted class ids become the data set's ids: None when the classes are the same; otherwise a table
    merging predicted classes many-to-one (unmapped predictions become 255: misses of the true class)."""
    predicted_names, names = [n.lower() for n in predicted], [n.lower() for n in dataset.names]
    if predicted_names == names and not class_map:
        return None, "same classes"
    if not class_map and sorted(predicted_names) != sorted(names):  # the same classes in another order link by name
        raise DataError(
            f"the weights predict {len(predicted)} classes ({', '.join(predicted[:4])}, ...) and data set "
            f"{dataset.name!r} has {dataset.num_classes} ({', '.join(dataset.names[:4])}, ...): pass --class-map "
            f"MAP.yaml {{data set class: predicted class(es)}} or a map seglite ships ({', '.join(shipped_class_maps())})"
        )
    links = link_classes(dataset.names, predicted, load_class_map(class_map))
    table = torch.full((256,), IGNORE_INDEX, dtype=torch.long)
    for target, sources in links.items():
        for source in sources:
            table[source] = target
    return table, describe_links(links, dataset.names, predicted)


def evaluate(
    segmenter: Segmenter,
    data: DatasetSpec | str | Path | None = None,
    options: EvalOptions | None = None,
    dist: DistInfo | None = None,
    *,
    root: str | Path | None = None,
) -> EvalResult:
    """`data`: a data set (seglite.data.datasets.load_dataset), a Cityscapes root folder, or what `--data` takes (a
    built-in name such as "camvid", or a data set YAML) with `root` as `--data-root`; None: the data set the weights
    were trained on, as their checkpoint or export recorded it (`seglite eval` without --data). Under torchrun (`dist`), each rank
    evaluates its shard of the split and the integer confusion matrices are summed: every rank returns the totals,
    the same figures as one process (only rank 0 shows progress)."""
    options = options or EvalOptions()
    dist = dist or DistInfo()
    if isinstance(data, DatasetSpec):
        dataset = data.with_root(root) if root else data
    elif data is None:
        record = segmenter.loaded.dataset or {"name": segmenter.loaded.dataset_name}  # the zoo's: Cityscapes
        trained = trained_dataset(record, None, root)
        if trained is None:
            raise DataError(
                f"evaluate: {segmenter.loaded.source} was trained on {record.get('file') or record.get('name')!r}, "
                "which is not on this machine: name the data set (a data set YAML, a built-in name or a DatasetSpec)"
            )
        dataset = trained.spec
    elif root is None and Path(data).is_dir():
        dataset = load_dataset("cityscapes", data)
    else:
        dataset = load_dataset(data, root)
    lookup, mapping = prediction_lookup(segmenter.loaded.classes, dataset, options.class_map)
    samples = dataset.samples(options.split)
    if options.limit:
        samples = samples[: options.limit]
    total_images = len(samples)
    samples = shard(samples, dist)
    matrix = ConfusionMatrix(dataset.num_classes, device=segmenter.device)
    if lookup is not None:
        lookup = lookup.to(segmenter.device)
    seconds_model = seconds_metric = 0.0
    if options.save_predictions:
        options.save_predictions.mkdir(parents=True, exist_ok=True)

    def judge(sample: Sample) -> tuple[Sample, torch.Tensor, np.ndarray, float]:
        """One image's prediction in the data set's ids, its label, and the seconds its prediction took."""
        image = read_image(sample.image)
        target = dataset.read_label(sample)
        if target.shape != image.shape[:2]:
            raise DataError(
                f"{sample.label}: label is {target.shape[1]}x{target.shape[0]} but its image "
                f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}"
            )
        start = time.perf_counter()
        logits = predict_logits(segmenter, image, target.shape, options)
        prediction = class_argmax(logits)[0]
        if logits.shape[1] > segmenter.num_known:
            prediction[prediction >= segmenter.num_known] = IGNORE_INDEX
        if lookup is not None:
            prediction = lookup[prediction]
        if segmenter.device.type == "cuda":
            torch.cuda.synchronize()
        return sample, prediction, target, time.perf_counter() - start

    # Throughput mode as in predict (seglite.sharing.in_streams): one image's reading and upsampling overlap the
    # other's model. The confusion matrix is only ever updated here, in this thread.
    streams = offline_streams(segmenter, options.streams, len(samples))
    judged = map(judge, samples) if streams == 1 else in_streams(judge, samples, streams)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    # On stderr: stdout carries the results (a piped run's stdout would get the bar's closing newline).
    progress = Progress(
        *columns, console=Console(stderr=True), disable=not (options.progress and dist.is_main), transient=True
    )
    with progress, single_threaded_opencv(streams > 1):
        task = progress.add_task(f"eval {segmenter.model_name}", total=len(samples))
        for sample, prediction, target, seconds in judged:
            seconds_model += seconds
            middle = time.perf_counter()
            matrix.update(prediction, torch.from_numpy(target))
            if segmenter.device.type == "cuda":
                torch.cuda.synchronize()
            seconds_metric += time.perf_counter() - middle
            if options.save_predictions:
                _save_prediction(options.save_predictions, sample.stem, prediction, dataset.layout == "cityscapes")
            progress.advance(task)
    all_reduce_sum(matrix.matrix, dist)
    seconds = torch.tensor([seconds_model, seconds_metric], dtype=torch.float64, device=matrix.matrix.device)
    seconds = all_reduce_sum(seconds, dist).cpu()
    return EvalResult(
        matrix.summary(dataset.names),
        total_images,
        segmenter.preprocess.size,
        float(seconds[0]),  # summed over ranks: per image, the time one frame took
        float(seconds[1]),
        {"dataset": dataset.name, "data_root": str(dataset.root()), "split": options.split, "class_map": mapping},
        streams,
    )


def prediction_name(stem: str, cityscapes: bool) -> str:
    """Cityscapes' submission format names a prediction after its image; other data sets use the stem."""
    return f"{stem}_leftImg8bit.png" if cityscapes else f"{stem}.png"


def _save_prediction(folder: Path, stem: str, prediction: torch.Tensor, cityscapes: bool) -> None:
    """One class-id PNG (labelIds for Cityscapes, the submission format), written atomically."""
    class_ids = prediction.to(torch.uint8).cpu().numpy()
    path = folder / prediction_name(stem, cityscapes)
    ok, encoded = cv2.imencode(".png", train_ids_to_label_ids(class_ids) if cityscapes else class_ids)
    try:
        if not ok:
            raise OSError(f"{path}: could not be encoded as PNG")
        atomic_write_bytes(encoded.tobytes(), path)
    except OSError as exc:
        raise write_failure(exc, path) from None
