"""The training loop: poly LR, AMP, DDP, periodic validation, atomic checkpoints and exact resume."""

from __future__ import annotations

import contextlib
import datetime
import itertools
import json
import math
import os
import random
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from seglite.data.check import check_dataset, espnet_class_weights, frequencies
from seglite.data.cityscapes import read_image
from seglite.data.classmap import link_classes, load_class_map
from seglite.data.dataset import SegmentationDataset
from seglite.data.datasets import load_dataset
from seglite.data.transforms import train_transform
from seglite.devices import free_memory_bytes, resolve_device, reuse_freed_memory
from seglite.distributed import DistInfo, broadcast_buffers, broadcast_flag, cleanup, init_distributed
from seglite.errors import ConfigError, DataError, InputError, SegliteError
from seglite.files import prepare_output_folder, write_failure
from seglite.models import fused
from seglite.models.registry import create_model
from seglite.sharing import ThreadGovernor
from seglite.training.config import DataConfig, TrainConfig, anchored
from seglite.training.distill import DistillationLoss, Teacher, cached_soft_targets
from seglite.training.finetune import init_from
from seglite.training.losses import SegmentationLoss
from seglite.training.sampler import ResumableBatchSampler
from seglite.training.schedule import poly_lr_factor
from seglite.training.step import (
    PRECISIONS,
    StepOptions,
    TrainStep,
    cpu_bf16_candidate,
    faster_precision,
    fused_supported,
    time_precisions,
)
from seglite.zoo.checkpoint import (
    LoadedWeights,
    atomic_torch_save,
    checkpoint_dict,
    load_model,
    read_checkpoint_file,
)
from seglite.zoo.preprocess import ESPNET_V1, IMAGENET
from seglite.zoo.registry import BEST, LAST

DEFAULT_RUNS = "runs"  # `seglite train` without --out: runs/train, runs/train2, ...
RUN_FILES = (LAST, BEST, "metrics.jsonl", "tensorboard")  # what makes a folder a run folder


def describe_run(out_dir: str | Path) -> str | None:
    """What a run folder holds, in words for the user (None: no run there): finished or not, iteration, best mIoU."""
    out_dir = Path(out_dir)
    if not any((out_dir / name).exists() for name in RUN_FILES):
        return None
    for name in (LAST, BEST):
        if (out_dir / name).is_file():
            try:
                ckpt = read_checkpoint_file(out_dir / name)
            except SegliteError:
                return f"a run whose {name} cannot be read"
            total = ((ckpt.get("config") or {}).get("schedule") or {}).get("iters")
            done = int(ckpt.get("iteration") or 0)
            best = ckpt.get("best_miou")
            state = "a finished run" if total and done >= total else "an unfinished run"
            return (
                f"{state} ({name} at iteration {done} of {total or '?'}, best val mIoU "
                f"{'-' if best is None else f'{best:.2f} %'})"
            )
    return "a run's log (metrics.jsonl or tensorboard/) without checkpoints"


def newest_run(parent: str | Path = DEFAULT_RUNS) -> Path | None:
    """The most recently written run folder below `parent` that `--resume` can continue (holds last.pt)."""
    found = [p.parent for p in Path(parent).glob(f"*/{LAST}")]
    return max(found, key=lambda p: (p / LAST).stat().st_mtime) if found else None


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between iterations, so a step is never cut in half."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _param_groups(model: nn.Module, config: TrainConfig) -> list[dict]:
    """LR multipliers by name prefix; no weight decay on 1-D tensors (BN, biases, PReLU slopes)."""
    groups: dict[tuple[float, bool], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        multiplier = next((m for prefix, m in config.optim.lr_multipliers.items() if name.startswith(prefix)), 1.0)
        decay = param.ndim > 1
        groups.setdefault((multiplier, decay), []).append(param)
    return [
        {"params": params, "lr_mult": mult, "weight_decay": config.optim.weight_decay if decay else 0.0}
        for (mult, decay), params in groups.items()
    ]


def _optimizer(groups: list[dict], config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    name = config.optim.name
    # L2-coupled weight decay for adam, as ESPNet's recipe used
    cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[name]
    kwargs = {"momentum": config.optim.momentum} if name == "sgd" else {}
    if device.type in ("cpu", "cuda") and fused_supported(cls):
        kwargs["fused"] = True  # one kernel over all parameters: the same update, fewer passes over memory
    return cls(groups, lr=config.optim.lr, **kwargs)


def _precision(config: TrainConfig, device: torch.device) -> str | None:
    """The precision the config fixes on this device; None = decide by a trial on the first batch."""
    if config.amp == "none":
        return "fp32"
    if device.type == "cuda":
        if config.amp == "bf16" or (config.amp == "auto" and torch.cuda.is_bf16_supported()):
            return "bf16"
        return "fp16"
    if config.amp == "fp16":
        raise SegliteError("amp: fp16 needs a CUDA GPU; on a CPU use amp: bf16, none or auto")
    if config.amp == "bf16":
        return "bf16"
    return None if cpu_bf16_candidate(device) else "fp32"


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": _numpy_state(), "python": _python_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _numpy_state() -> dict:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _python_state() -> list:
    version, internal, gauss = random.getstate()
    return [version, list(internal), gauss]


def _restore_rng(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _load_config_weights(key: str, name: str) -> LoadedWeights:
    """Weights a recipe names, with errors that name the recipe's key (not the --weights of other commands)."""
    try:
        return load_model(None, name)
    except SegliteError as exc:
        raise type(exc)(f"{key}: {str(exc).removeprefix('--weights ')}") from None


def whole_scenes(train_frame: tuple[int, int], data: DataConfig) -> tuple[float, list[int], list[float]] | None:
    """Where a crop sees a sliver of large frames (under 1/12 of one at the middle of data.scale_range; Cityscapes'
    recipes crop a quarter or more, CamVid's most of one): that share, and the val_size and scale_range that show
    the frames twice the crop wide, so that a crop sees a quarter of a scene. None where crops see enough."""
    (crop_width, crop_height), (low, high) = data.crop, data.scale_range
    middle = (low * high) ** 0.5
    seen = crop_width * crop_height / (train_frame[0] * middle * train_frame[1] * middle)
    if seen >= 1 / 12:
        return None
    shrink = 2 * crop_width / train_frame[0]
    fit = [round(train_frame[0] * shrink / 16) * 16, round(train_frame[1] * shrink / 16) * 16]
    return seen, fit, [round(low * shrink, 2), round(high * shrink, 2)]


def scale_notes(train_frame: tuple[int, int], val_frame: tuple[int, int], data: DataConfig) -> list[str]:
    """Where validation (and so every later prediction, which runs at the same size) shows the frames at a scale
    training never did, or stretched, and where a crop sees a sliver of large frames: the usual slips when a recipe
    made for other frames meets your own."""
    notes = []
    val_width, val_height = data.val_size or val_frame
    ratio = val_width / train_frame[0]  # validation's frame width against the raw training frame's
    low, high = data.scale_range
    if not low * 0.8 <= ratio <= high * 1.25:
        sizes = f"val_size {val_width}x{val_height}" if data.val_size else "their own size"
        notes.append(
            f"scale: validation shows the {val_frame[0]}x{val_frame[1]} frames at {sizes} ({ratio:.2f}x the "
            f"{train_frame[0]}-pixel-wide training frames), training at {low:g}-{high:g}x (data.scale_range): "
            f"the network is validated, and will predict, at a scale it never trained at; set data.scale_range "
            f"near [{ratio * 0.75:.2f}, {ratio * 1.25:.2f}] or data.val_size"
        )
    crop_width, crop_height = data.crop
    largest = (round(train_frame[0] * high), round(train_frame[1] * high))
    if crop_width > largest[0] * 1.1 or crop_height > largest[1] * 1.1:
        fit = [min(crop_width, train_frame[0] // 16 * 16), min(crop_height, train_frame[1] // 16 * 16)]
        notes.append(
            f"crop: data.crop {crop_width}x{crop_height} is larger than the {train_frame[0]}x{train_frame[1]} "
            f"training frames at their largest scale ({largest[0]}x{largest[1]}): the rest of each crop is padding "
            f"that costs time and teaches nothing; set data.crop={fit} (or a data.scale_range that reaches it)"
        )
    sliver = whole_scenes(train_frame, data)
    if sliver and not notes:  # (after a scale note, whose scale_range fixes this too)
        seen, fit, scales = sliver
        notes.append(
            f"crop: a {crop_width}x{crop_height} crop sees 1/{1 / seen:.0f} of a {train_frame[0]}x{train_frame[1]} "
            f"training frame at {(low * high) ** 0.5:.2f}x (data.scale_range {low:g}-{high:g}): objects larger than "
            f"the crop are never seen whole, and validation and prediction run at {val_width}x{val_height}; to show "
            f"the network whole scenes, set data.val_size={fit} and data.scale_range=[{scales[0]:.2f}, "
            f"{scales[1]:.2f}] (or a larger data.crop, where small details matter)"
        )
    stretch = (val_width / val_height) / (val_frame[0] / val_frame[1])
    if not 1 / 1.15 <= stretch <= 1.15:
        notes.append(
            f"aspect: val_size {val_width}x{val_height} stretches the {val_frame[0]}x{val_frame[1]} frames by "
            f"{stretch:.2f} (training does not); pick a val_size of their shape, or null for their own size"
        )
    return notes


class Trainer:
    """One training run, as `seglite train` runs it (checkpoints, metrics.jsonl and tensorboard/ in `out_dir`):

    ```python
    config = seglite.load_config("camvid_espnetv2_s1.0_finetune", ["data.root=data/CamVid", "schedule.iters=2000"])
    summary = seglite.Trainer(config, "runs/camvid").run()  # {"iteration": 2000, "best_miou": ..., ...}
    ```
    """

    def __init__(
        self,
        config: TrainConfig,
        out_dir: str | Path,
        resume: bool = False,
        show_progress: bool = True,
        exist_ok: bool = False,
    ):
        """`exist_ok`: train afresh in a folder that holds a run, replacing it; otherwise such a folder is refused
        (a finished run's best.pt is hours of work) unless `resume` continues it."""
        config = anchored(config)
        self.config, self.out_dir, self.resume, self.show_progress = config, Path(out_dir), resume, show_progress
        self.exist_ok = exist_ok
        self.dataset = load_dataset(config.data.dataset, config.data.root)
        self.dataset.root()
        self.dataset_record = self.dataset.to_record()  # _check_data adds the frames' size
        self.num_classes = config.num_classes or self.dataset.num_classes
        if self.num_classes < self.dataset.num_classes:
            raise SegliteError(
                f"num_classes {self.num_classes}: the data set {self.dataset.name!r} has "
                f"{self.dataset.num_classes} classes; leave num_classes out to use its count"
            )
        self.messages: list[str] = [f"data: {self.dataset.read_as}"] if self.dataset.read_as else []
        self.train_pixels: np.ndarray | None = None  # per class, then ignored: set by _check_data
        self.fused = False  # whether run() trains with seglite.models.fused on
        device = resolve_device(config.device)
        self.dist: DistInfo = init_distributed(device.type)
        if not resume and not exist_ok and self.dist.is_main and (held := describe_run(self.out_dir)):
            raise InputError(
                f"{self.out_dir}: holds {held}; pass --resume to continue it, another --out for a new run, "
                "or --exist-ok to train over it"
            )
        if self.dist.enabled and device.type == "cuda":
            device = torch.device("cuda", self.dist.local_rank)
        self.device = device
        if device.type == "cpu":  # activations and their gradients are re-allocated every step: ~8 % of a step
            reuse_freed_memory()
            if config.device == "cpu" and torch.cuda.is_available():  # the CPU recipes say cpu, for small machines
                self.messages.append(
                    "device: cpu, as the recipe says; a CUDA GPU is here: --set device=auto trains on it"
                )
        self.preprocess = ESPNET_V1.with_size(None) if config.preprocess == "espnet" else IMAGENET
        self.model_kwargs = dict(config.model_kwargs)
        self.init_weights: LoadedWeights | None = None
        if config.init:
            # The init weights' input convention is what their features expect: train (and save) with it.
            self.init_weights = _load_config_weights("init", config.init)
            if self.init_weights.model_name != config.model:
                raise SegliteError(
                    f"init {config.init}: holds a {self.init_weights.model_name} network, the config trains "
                    f"{config.model}; use weights of the same architecture"
                )
            self.preprocess = self.init_weights.preprocess.with_size(None)
            self.model_kwargs = {**self.init_weights.model.finetune_kwargs(), **config.model_kwargs}
            self._check_class_map()
        self.teacher: Teacher | None = None
        self.teacher_cache_seconds = 0.0
        if config.distill.teacher:
            if self.num_classes != self.dataset.num_classes:
                raise SegliteError(
                    f"distill: the student has {self.num_classes} outputs, the data set {self.dataset.num_classes} "
                    "classes; leave num_classes out when distilling"
                )
            self.teacher = Teacher(
                _load_config_weights("distill.teacher", config.distill.teacher),
                self.dataset.names,
                self.dataset.name,
                self.preprocess,
                device,
                config.channels_last,
            )

    # ---- set-up ---------------------------------------------------------------------------------------------
    def _check_data(self) -> None:
        """Training never starts on a broken dataset: pairs, sizes and label values are checked first."""
        splits = (self.config.data.train_split, self.config.data.val_split)
        for split in splits:
            if not self.dataset.has_split(split):
                where = (
                    f"no {self.dataset.root() / 'leftImg8bit' / split}"
                    if self.dataset.layout == "cityscapes"
                    else f"its YAML has no `{split}:` key (a folder of images or a list file, relative to `path`"
                    + (
                        ", or `val: 10%` to hold out a tenth of train)"
                        if split != self.config.data.train_split
                        else ")"
                    )
                )
                raise SegliteError(
                    f"data set {self.dataset.name!r} ({self.dataset.root()}): split {split!r} is missing: {where}"
                )
        reports = check_dataset(self.dataset, splits=splits, read_labels=True, train_split=splits[0])
        for report in reports:
            if report.problems:
                more = f" (+{len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
                raise SegliteError(f"dataset not usable: {report.problems[0]}{more}; run `seglite data check`")
        self.train_pixels = reports[0].pixels  # the class weights come from these: no second pass over the masks
        train, val = reports[0].images, reports[-1].images
        epochs = self.config.schedule.iters * self.config.batch_size / max(train, 1)
        self.messages.append(  # runs are counted in iterations; this says what they come to in epochs
            f"data: {self.dataset.name} ({self.dataset.root()}): {train} {splits[0]} and {val} {splits[1]} images"
            f"{f' (the first {limit} validated)' if (limit := self.config.data.val_limit) else ''}; "
            f"{self.config.schedule.iters} iterations of {self.config.batch_size} images = {epochs:.3g} epochs"
        )
        absent = reports[0].absent_classes(self.dataset.names)
        if absent:
            named = ", ".join(repr(name) for name in absent)
            self.messages.append(
                f"no mask of split {splits[0]!r} has a pixel of {named}: the network cannot learn them"
            )
        # Checkpoints keep the validation frames' usual size: an export or a latency figure of weights validated
        # at each frame's own size defaults to it (LoadedWeights.fixed_size).
        frames = next(r for r in reports if r.split == self.config.data.val_split).common_size
        self.dataset_record = self.dataset.to_record() | ({"image_size": list(frames)} if frames else {})
        if reports[0].common_size and frames:
            self.messages += scale_notes(reports[0].common_size, frames, self.config.data)

    def _check_class_map(self) -> None:
        """Before the data are read: a recipe's class_map written for another data set (the CamVid recipes' on a
        user's own classes) names classes that are not there."""
        try:
            link_classes(self.dataset.names, self.init_weights.classes, load_class_map(self.config.class_map))
        except DataError as exc:
            if "target class" not in str(exc):  # a source class the init weights lack: the message says which
                raise
            raise ConfigError(
                f"{exc}; the recipe's class_map links {self.init_weights.source}'s classes to classes of another "
                f"data set than {self.dataset.name!r}: write one for its classes, or --set class_map={{}} to link "
                "classes of the same name only"
            ) from None

    def _build(self) -> None:
        config = self.config
        torch.manual_seed(config.seed)
        np.random.seed(config.seed)
        random.seed(config.seed)
        model = create_model(config.model, num_classes=self.num_classes, **self.model_kwargs)
        if self.init_weights is not None and not self.resume:
            report = init_from(
                model,
                config.model,
                self.model_kwargs,
                self.dataset.names,
                self.init_weights.model,
                self.init_weights.classes,
                load_class_map(config.class_map),
                self.init_weights.source,
            )
            self.messages += report.lines()
        if self.dist.enabled and config.sync_bn:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        memory_format = torch.channels_last if config.channels_last else torch.preserve_format
        self.model = model.to(self.device, memory_format=memory_format)
        self.net = self.model
        if self.dist.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, find_unused_parameters=config.freeze_encoder_iters > 0
            )
        self.optimizer = _optimizer(_param_groups(self.model, config), config, self.device)
        self.precision = _precision(config, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")
        weights = None
        if config.loss.class_weights == "espnet":
            weights = torch.tensor(espnet_class_weights(frequencies(self.train_pixels[:-1])), dtype=torch.float32)
        self.criterion = SegmentationLoss(
            weights, config.loss.ohem, config.loss.ohem_threshold, config.loss.ohem_min_kept
        ).to(self.device)
        cache = self.teacher is not None and config.distill.cache
        self.train_set = SegmentationDataset(
            self.dataset,
            config.data.train_split,
            self.preprocess,
            train_transform(
                tuple(config.data.crop),
                tuple(config.data.scale_range),
                config.data.flip,
                config.data.color_jitter,
                soft_targets=cache,
            ),
            soft_targets=self._cache_teacher() if cache else None,
        )

    def _cache_teacher(self) -> list[np.ndarray]:
        """The teacher's logits for every training image, at its own size, computed once (distill.cache)."""
        config, teacher = self.config.distill, self.teacher
        plain = SegmentationDataset(self.dataset, self.config.data.train_split, self.preprocess)
        images = (torch.from_numpy(plain.preprocess.to_array(read_image(s.image))) for s in plain.samples)
        first = read_image(plain.samples[0].image).shape[:2]
        need = len(plain) * first[0] * first[1] * self.num_classes * 2
        if need > 0.5 * free_memory_bytes(torch.device("cpu")):
            raise SegliteError(
                f"distill.cache: the teacher's logits for {len(plain)} images of {first[1]}x{first[0]} "
                f"take {need / 2**30:.1f} GiB, over half the memory available; set distill.cache: false"
            )
        start = time.perf_counter()
        show = self.show_progress and self.dist.is_main
        with _task_progress(f"teacher labels {len(plain)} images", len(plain), show) as advance:
            targets = cached_soft_targets(teacher, images, config.scales, config.flip, advance)
        seconds = time.perf_counter() - start
        self.teacher_cache_seconds = seconds
        self.messages.append(
            f"teacher: {len(plain)} training images labelled once in {seconds:.1f} s (scales "
            f"{', '.join(f'{s:g}' for s in config.scales)}{', flip' if config.flip else ''}; "
            f"{need / 2**20:.0f} MiB kept); no per-step teacher cost"
        )
        return targets

    @property
    def workers(self) -> int:
        """data.workers, at most this process's share of the CPUs: the Cityscapes recipes ask for 8 (a GPU machine's
        loaders), which on a small CPU only compete with the training threads (and PyTorch warns)."""
        share = max(1, len(os.sched_getaffinity(0)) // self.dist.local_world_size)
        return min(self.config.data.workers, share)

    def _loader(self, start: int) -> DataLoader:
        sampler = ResumableBatchSampler(
            len(self.train_set), self.config.batch_size, self.config.seed, start, self.dist.rank, self.dist.world_size
        )
        return DataLoader(
            self.train_set,
            batch_sampler=sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )

    # ---- checkpoints --------------------------------------------------------------------------------------
    def _save(self, name: str, iteration: int, best_miou: float | None) -> None:
        if not self.dist.is_main:
            return
        ckpt = checkpoint_dict(
            self.config.model,
            self.model,
            self.dataset.names,
            self.preprocess.with_size(tuple(self.config.data.val_size) if self.config.data.val_size else None),
            config=self.config.to_dict(),
            model_kwargs=self.model_kwargs,
            dataset=self.dataset_record,
            optimizer=self.optimizer.state_dict(),
            scaler=self.scaler.state_dict(),
            precision=self.precision,
            iteration=iteration,
            rng=_rng_state(self.device),
            best_miou=best_miou,
        )
        path = self.out_dir / name
        try:
            atomic_torch_save(ckpt, path)
        except OSError as exc:
            raise write_failure(exc, f"checkpoint {path}", kept=f"the previous {name} is intact") from None

    def _load_resume(self) -> tuple[int, float | None]:
        path = self.out_dir / LAST
        if not path.is_file():
            raise SegliteError(f"--resume: no {path}; start without --resume, or pass the --out of the earlier run")
        ckpt = read_checkpoint_file(path)
        if ckpt.get("model") != self.config.model:
            raise SegliteError(f"{path}: holds {ckpt.get('model')}, the config trains {self.config.model}")
        saved_optim = (ckpt.get("config") or {}).get("optim", {}).get("name", self.config.optim.name)
        if saved_optim != self.config.optim.name:
            raise SegliteError(f"{path}: was trained with optim.name={saved_optim}; resume with the same optimizer")
        self.model.load_state_dict(ckpt["state_dict"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.config.amp == "auto" and ckpt.get("precision") in PRECISIONS:
            self.precision = ckpt["precision"]  # the run goes on in the precision its trial chose
        _restore_rng(ckpt["rng"], self.device)
        return int(ckpt["iteration"]), ckpt.get("best_miou")

    def _choose_precision(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """amp: auto on a bf16-capable CPU: time fp32 and bf16 on the first batch and keep the faster; rank 0
        decides for all ranks, so every process runs the same precision."""
        options = [StepOptions(p, self.config.channels_last) for p in ("fp32", "bf16")]
        seconds = time_precisions(self.net, self.criterion, images, labels, options)
        faster = faster_precision(seconds) == "bf16" if self.dist.is_main else False
        self.precision = "bf16" if broadcast_flag(faster, self.dist, self.device) else "fp32"
        self.messages.append(
            f"amp auto: {self.precision} (trial on the first batch: fp32 {seconds['fp32']:.2f} s, "
            f"bf16 {seconds['bf16']:.2f} s per forward+backward)"
        )

    def _teacher_cost(self, images: int, seconds: float) -> str:
        """The teacher's share of the training time, and the rate the student alone would have had."""
        teacher = self.teacher.seconds
        alone = images / max(seconds - teacher, 1e-9)
        return (
            f"teacher: {teacher:.1f} s of {seconds:.1f} s ({100 * teacher / max(seconds, 1e-9):.0f} %); "
            f"{images / max(seconds, 1e-9):.2f} img/s with it, about {alone:.2f} img/s without"
        )

    # ---- validation ---------------------------------------------------------------------------------------
    def validate(self) -> dict:
        """Every rank evaluates its shard of the validation split (none idles at the next collective) with rank 0's
        network, the one that is saved; the matrices are summed, so every rank gets the single-process figures."""
        from seglite.evaluation.evaluator import EvalOptions, evaluate
        from seglite.inference.segmenter import Segmenter

        size = tuple(self.config.data.val_size) if self.config.data.val_size else None
        loaded = LoadedWeights(
            self.model,
            self.config.model,
            self.dataset.names,
            self.preprocess,
            "training",
            {},
            self.model_kwargs,
            self.dataset_record,
        )
        was_training = self.model.training
        broadcast_buffers(self.model, self.dist)
        self.model.eval()
        try:
            segmenter = Segmenter.from_loaded(loaded, self.device, size)
            result = evaluate(
                segmenter,
                self.dataset,
                EvalOptions(split=self.config.data.val_split, limit=self.config.data.val_limit, progress=False),
                self.dist,
            )
        finally:
            self.model.train(was_training)
        return result.summary

    # ---- the loop -------------------------------------------------------------------------------------------
    def run(self) -> dict:
        with fused.fusing(self.config.fused_norm and self.device.type == "cpu") as self.fused:
            return self._run()

    def _run(self) -> dict:
        config = self.config
        self._check_data()
        self._build()
        if self.dist.is_main:
            prepare_output_folder(self.out_dir)
            if self.exist_ok and not self.resume:  # asked for: the earlier run's files go, none is mixed in
                for name in RUN_FILES:
                    target = self.out_dir / name
                    shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
        start, best = self._load_resume() if self.resume else (0, None)
        if start >= config.schedule.iters:
            return {"iteration": start, "best_miou": best, "message": "already finished"}
        log = _Logger(
            self.out_dir, self.dist.is_main, config.schedule.iters, start, self.show_progress, config.log_every
        )
        base_lrs = [config.optim.lr * group["lr_mult"] for group in self.optimizer.param_groups]
        self.net.train()
        iteration = start
        if self.workers < config.data.workers:
            cpus = len(os.sched_getaffinity(0))
            shared = f" shared by {self.dist.local_world_size} processes" if self.dist.local_world_size > 1 else ""
            self.messages.append(f"data.workers {config.data.workers} -> {self.workers}: {cpus} CPUs here{shared}")
        loader = iter(self._loader(start))
        first = next(loader)
        loader = itertools.chain([first], loader)
        if self.precision is None:
            self._choose_precision(*first[:2])
        criterion = self.criterion
        if self.teacher is not None:
            distill = config.distill
            criterion = DistillationLoss(
                self.criterion, distill.weight, distill.temperature, distill.teach_ignored, distill.soft_stride
            )
            self.messages.append(
                f"distilling from {self.teacher.source} (weight {distill.weight:g}, temperature {distill.temperature:g}"
                f"{', ignored pixels learn from the teacher' if distill.teach_ignored else ''}"
                f"{f', soft term at 1/{distill.soft_stride} resolution' if distill.soft_stride > 1 else ''})"
            )
        step = TrainStep(
            self.net,
            criterion,
            self.optimizer,
            self.scaler,
            self.device,
            StepOptions(self.precision, config.channels_last),
            self.teacher,
        )
        governor = ThreadGovernor()  # fewer threads while other programs keep cores busy, all again after
        images_seen, t0 = 0, time.perf_counter()
        encoder = [
            p for n, p in self.model.named_parameters() if p.requires_grad and n.startswith(self.model.encoder_prefixes)
        ]
        with StopRequest() as stop, log:
            for line in self.messages:
                log.message(line)
            fusion = (
                self.fused and self.precision == "fp32" and any(isinstance(m, nn.PReLU) for m in self.model.modules())
            )
            log.message(
                f"precision {self.precision}{', channels_last' if config.channels_last else ''}"
                f"{', fused BatchNorm+PReLU (compiled on the first step)' if fusion else ''}"
            )
            if config.freeze_encoder_iters and not encoder:
                log.message(f"freeze_encoder_iters: {config.model} names no encoder parameters; nothing frozen")
            while iteration < config.schedule.iters:
                frozen = iteration < config.freeze_encoder_iters
                for param in encoder:
                    param.requires_grad_(not frozen)
                factor = poly_lr_factor(
                    iteration,
                    config.schedule.iters,
                    config.schedule.power,
                    config.schedule.warmup_iters,
                    config.schedule.warmup_ratio,
                )
                for group, base in zip(self.optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
                images, labels, *cached = next(loader)  # cached: the teacher's logits, with distill.cache
                loss = step.loss(images, labels, *cached)
                if not torch.isfinite(loss):
                    raise SegliteError(
                        f"loss is {loss.item()} at iteration {iteration}: training stopped; "
                        f"{self.out_dir / LAST} keeps the last good state (lower optim.lr?)"
                    )
                step.apply(loss)
                if change := governor.poll():
                    log.message(change)
                iteration += 1
                images_seen += images.shape[0] * self.dist.world_size
                log.step(
                    iteration,
                    loss.item(),
                    self.optimizer.param_groups[0]["lr"],
                    images_seen / (time.perf_counter() - t0),
                )
                last_iteration = iteration == config.schedule.iters
                if iteration % config.val_every == 0 or last_iteration:
                    summary = self.validate()
                    log.validation(iteration, summary)
                    if self.teacher is not None and not config.distill.cache:
                        log.message(self._teacher_cost(images_seen, time.perf_counter() - t0))
                    if best is None or summary["miou"] > best:
                        best = summary["miou"]
                        self._save(BEST, iteration, best)
                if iteration % config.ckpt_every == 0 or last_iteration:
                    self._save(LAST, iteration, best)
                if broadcast_flag(stop.requested, self.dist, self.device) and not last_iteration:
                    self._save(LAST, iteration, best)
                    log.message(
                        f"stopped at iteration {iteration}; {self.out_dir / LAST} written. Resume with: "
                        f"seglite train --out {self.out_dir} --resume"
                    )
                    cleanup(self.dist)
                    return {"iteration": iteration, "best_miou": best, "interrupted": True}
        cleanup(self.dist)
        return {
            "iteration": iteration,
            "best_miou": best,
            "images_per_second": images_seen / (time.perf_counter() - t0),
            "teacher_seconds": None if self.teacher is None else self.teacher.seconds + self.teacher_cache_seconds,
        }


@contextlib.contextmanager
def _task_progress(description: str, total: int, show: bool) -> Iterator[Callable[[], None]]:
    """A transient progress bar for set-up work; yields the function that advances it by one."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from seglite.progress import Progress

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True, disable=not show) as progress:
        task = progress.add_task(description, total=total)
        yield lambda: progress.advance(task)


class _Logger:
    """Rich progress bar, a JSONL metrics file and TensorBoard scalars, on rank 0 only. Where the output is not a
    terminal (`nohup ... > train.log`, a cluster job's log) a bar would be drawn once, at the end: a line every
    `log_every` iterations says how far it is instead."""

    def __init__(self, out_dir: Path, active: bool, total: int, start: int, show_progress: bool, log_every: int = 20):
        self.active, self.out_dir, self.total, self.start = active, out_dir, total, start
        self.show_progress, self.log_every = show_progress, log_every
        self.progress = self.writer = self.metrics = None
        self.loss_avg = None
        self.lines = False  # progress as lines, not a bar
        self.started = time.perf_counter()

    def __enter__(self) -> _Logger:
        if not self.active:
            return self
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.metrics = open(self.out_dir / "metrics.jsonl", "a")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out_dir / "tensorboard"))
        except ImportError:  # tensorboard is optional at run time
            self.writer = None
        console = Console()
        self.lines = self.show_progress and not console.is_terminal
        self.progress = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeRemainingColumn(),
            console=console,
            disable=not self.show_progress or self.lines,
        )
        self.started = time.perf_counter()
        self.progress.start()
        self.task = self.progress.add_task("train", total=self.total, completed=self.start, info="")
        return self

    def step(self, iteration: int, loss: float, lr: float, images_per_second: float) -> None:
        if not self.active:
            return
        self.loss_avg = loss if self.loss_avg is None else 0.9 * self.loss_avg + 0.1 * loss
        info = f"loss {self.loss_avg:.3f} lr {lr:.2e} {images_per_second:.1f} img/s"
        self.progress.update(self.task, completed=iteration, info=info)
        if self.lines and (iteration % self.log_every == 0 or iteration == self.total):
            per_iteration = (time.perf_counter() - self.started) / max(1, iteration - self.start)
            left = datetime.timedelta(seconds=round(per_iteration * (self.total - iteration)))
            self.message(f"iteration {iteration}/{self.total}: {info}, {left} left")
        self.metrics.write(
            json.dumps({"iteration": iteration, "loss": loss, "lr": lr, "images_per_second": images_per_second}) + "\n"
        )
        self.metrics.flush()
        if self.writer:
            self.writer.add_scalar("train/loss", loss, iteration)
            self.writer.add_scalar("train/lr", lr, iteration)

    def validation(self, iteration: int, summary: dict) -> None:
        if not self.active:
            return
        self.metrics.write(
            json.dumps(
                {
                    "iteration": iteration,
                    "val_miou": summary["miou"],
                    "val_pixel_acc": summary["pixel_acc"],
                    "val_per_class_iou": summary["per_class_iou"],
                }
            )
            + "\n"
        )
        self.metrics.flush()
        if self.writer:
            self.writer.add_scalar("val/miou", summary["miou"], iteration)
            for name, value in summary["per_class_iou"].items():
                if value is not None and not math.isnan(value):
                    self.writer.add_scalar(f"val_iou/{name}", value, iteration)
        self.message(f"iteration {iteration}: val mIoU {summary['miou']:.2f} %")

    def message(self, text: str) -> None:
        if self.active:
            self.progress.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def __exit__(self, *exc) -> None:
        if not self.active:
            return
        self.progress.stop()
        self.metrics.close()
        if self.writer:
            self.writer.close()
