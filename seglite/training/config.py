"""Training recipes are data: YAML validated against these dataclasses, with one-line errors naming the key."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from seglite.data.datasets import builtin_datasets
from seglite.errors import ConfigError
from seglite.yamlfile import read_mapping

RECIPES = Path(__file__).resolve().parents[2] / "configs"  # the recipes of a checkout (pip install -e .)


@dataclass
class DataConfig:
    dataset: str | dict = "cityscapes"  # built-in name, data set YAML path, or the YAML's mapping inline
    root: str | None = None  # overrides the data set's `path`
    train_split: str = "train"
    val_split: str = "val"
    crop: list[int] = field(default_factory=lambda: [1024, 512])  # W, H
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    flip: bool = True
    color_jitter: float = 0.4  # brightness/contrast/saturation strength; 0 turns it off
    val_size: list[int] | None = None  # network input W, H for validation; None = full resolution
    val_limit: int | None = None  # validate on the first N images only
    workers: int = 2


@dataclass
class OptimConfig:
    name: str = "sgd"  # sgd, adam or adamw
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 4e-5
    lr_multipliers: dict[str, float] = field(default_factory=dict)  # parameter-name prefix -> LR factor


@dataclass
class ScheduleConfig:
    iters: int = 80000
    power: float = 0.9
    warmup_iters: int = 0
    warmup_ratio: float = 0.1  # LR at iteration 0 as a fraction of the base LR


@dataclass
class LossConfig:
    class_weights: str | None = None  # None or "espnet" (w = 1 / ln(1.10 + p), from the training labels)
    ohem: bool = False
    ohem_threshold: float = 0.7
    ohem_min_kept: int = 100000


@dataclass
class DistillConfig:
    teacher: str | None = None  # zoo name or seglite checkpoint trained on the same classes; None = no distillation
    weight: float = 1.0  # the soft term's factor: loss = label loss + weight * T^2 * KL(teacher || student)
    temperature: float = 1.0
    teach_ignored: bool = False  # pixels labelled ignore learn from the teacher alone (otherwise not at all)
    # Label each training image once before training and move the logits with the augmentation, instead of running
    # the teacher on every batch: no per-step teacher cost, and test-time scales/flip for the teacher come free.
    cache: bool = False
    scales: list[float] = field(default_factory=lambda: [1.0])  # the cached teacher's input scales
    flip: bool = False  # the cached teacher also sees each image mirrored
    # The soft term on both logit maps average-pooled by this factor: 2 cuts its cost 4x (on a CPU a quarter of a
    # light student's step at full resolution); the label loss stays at full resolution.
    soft_stride: int = 1


@dataclass
class TrainConfig:
    model: str = "espnetv2_s0.5"
    model_kwargs: dict = field(default_factory=dict)
    num_classes: int | None = None  # network outputs; None = the data set's class count
    init: str | None = None  # zoo name, seglite checkpoint or the authors' file to fine-tune from
    class_map: dict = field(default_factory=dict)  # target class -> init class(es) whose rows it starts from
    freeze_encoder_iters: int = 0  # train only the decoder/head for this many iterations first
    preprocess: str = "imagenet"  # imagenet (RGB, ImageNet mean/std) or espnet (ESPNet v1's BGR convention)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    batch_size: int = 8  # global, split over processes
    # auto: CUDA bf16 where supported, else fp16; CPU bf16 where the CPU has native bf16 and a trial on the first
    # batch shows it faster, else fp32. fp16 (CUDA only), bf16 or none (fp32) force a precision.
    amp: str = "auto"
    channels_last: bool = True  # NHWC activations: faster convolutions on CPU (oneDNN) and on tensor-core GPUs
    # CPU, fp32: BatchNorm(+residual)+PReLU as compiled kernels (seglite.models.fused); needs a C++ compiler
    fused_norm: bool = True
    device: str = "auto"
    seed: int = 0
    sync_bn: bool = False
    log_every: int = 20  # iterations between progress lines where the output is a log file, not a terminal
    val_every: int = 1000
    ckpt_every: int = 500

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check(value, annotation, key: str):
    """Validate (and lightly coerce) one value against a type annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _check(value, option, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {type(value).__name__}")
        return _build(annotation, value, key)
    if origin is list:
        (item,) = typing.get_args(annotation)
        if item is int and isinstance(value, str) and re.fullmatch(r"\d+x\d+", value.strip().lower()):
            value = [int(v) for v in value.strip().lower().split("x")]  # a size as --size writes it: WxH
        if not isinstance(value, list | tuple):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        return [_check(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        if value is None:  # `class_map: null` says "none", as {} does
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"config key {key!r}: expected a mapping, got {value!r}")
        args = typing.get_args(annotation)
        return {k: _check(v, args[1], f"{key}.{k}") for k, v in value.items()} if args else dict(value)
    if annotation is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str):  # YAML 1.1 reads 4e-5 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if annotation in (int, str, bool) and type(value) is annotation:
        return value
    raise ConfigError(f"config key {key!r}: expected {getattr(annotation, '__name__', annotation)}, got {value!r}")


EPOCH_WORDS = ("epoch", "epochs", "max_epochs", "num_epochs")


def _dotted_keys(cls=None, prefix: str = "") -> list[str]:
    """Every key a recipe may set, sections spelled out (`optim.lr`)."""
    keys = []
    for name, hint in typing.get_type_hints(cls or TrainConfig).items():
        keys.append(prefix + name)
        if dataclasses.is_dataclass(hint):
            keys += _dotted_keys(hint, f"{prefix}{name}.")
    return keys


def _unknown_key_hint(key: str, names: set[str], prefix: str) -> str:
    """The key meant: one of this section's by its spelling, else one of that name in another section (`lr` is
    `optim.lr`), else, for epochs, how a run's length is set."""
    if key.lower() in EPOCH_WORDS:
        return "; a run's length is counted in iterations: set schedule.iters (an epoch is images / batch_size)"
    close = [prefix + name for name in difflib.get_close_matches(key, names, n=1, cutoff=0.75)]
    if not close:
        keys = _dotted_keys()
        last = {k: k.rsplit(".", 1)[-1] for k in keys}
        near = difflib.get_close_matches(key, set(last.values()), n=1, cutoff=0.75)
        close = [k for k in keys if near and last[k] == near[0] and k != key]
    return f"; did you mean {close[0]!r}?" if close else ""


def _build(cls, values: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in values:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            hint = _unknown_key_hint(str(key), names, f"{prefix}." if prefix else "")
            raise ConfigError(f"unknown config key {where!r}{hint} (allowed here: {', '.join(sorted(names))})")
    kwargs = {k: _check(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in values.items()}
    return cls(**kwargs)


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """`--set a.b=value` (value parsed as YAML) onto the raw mapping."""
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. schedule.iters=2000")
        node = raw
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
        node[parts[-1]] = yaml.safe_load(text)
    return raw


def _lookup(raw: dict, key: str):
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _same(key: str, old, new) -> bool:
    if key == "data.root" and old is not None and new is not None:
        return Path(str(old)).resolve() == Path(str(new)).resolve()
    if key in ("data.dataset", "init", "distill.teacher"):  # saved absolute (anchored), given from any folder
        builtin = tuple(builtin_datasets())
        return _absolute(old, builtin) == _absolute(new, builtin)
    return old == new


def resume_config(saved: dict, sets: list[str], fixed: list[str], where: str) -> tuple[TrainConfig, list[str]]:
    """The run's effective config, from its last.pt. `fixed` (--data-root, --data, --init) must agree with it: a
    different value is refused, not silently applied; `sets` (--set) may change it on purpose, with a warning."""
    raw = copy.deepcopy(saved)
    for item in fixed:
        key, _, text = item.partition("=")
        old, new = _lookup(raw, key), yaml.safe_load(text)
        if not _same(key, old, new):
            raise ConfigError(
                f"--resume: {where} was trained with {key}={old!r}, this command says {new!r}; leave the option out "
                f"to continue that run (or say it with --set {key}=... to change it on purpose)"
            )
    warnings = []
    for item in sets:
        key, _, text = item.partition("=")
        old, new = _lookup(raw, key), yaml.safe_load(text)
        if not _same(key, old, new):
            warnings.append(f"warning: resuming with {key}={new!r}; the run was started with {old!r}")
    config = _build(TrainConfig, apply_overrides(raw, sets))
    _validate_values(config)
    return config, warnings


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        merged[key] = (
            _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) else value
        )
    return merged


def anchored(config: TrainConfig) -> TrainConfig:
    """Relative paths of a run (data set YAML, data root, init and teacher weights) made absolute: the run saves its
    config, and `--resume` from another folder must read the same files."""

    data = dataclasses.replace(
        config.data,
        dataset=_absolute(config.data.dataset, tuple(builtin_datasets())),
        root=_absolute(config.data.root),
    )
    distill = dataclasses.replace(config.distill, teacher=_absolute(config.distill.teacher))
    return dataclasses.replace(config, data=data, distill=distill, init=_absolute(config.init))


def _absolute(value: object, builtin: tuple[str, ...] = ()) -> object:
    """An existing relative path made absolute; names (a built-in data set, a zoo name) and the rest as they are."""
    if not isinstance(value, str) or not value or value in builtin or Path(value).is_absolute():
        return value
    return str(Path(value).resolve()) if Path(value).exists() else value


def find_recipe(text: str | Path) -> Path:
    """A recipe file, or the name of one of seglite's recipes (`camvid_espnetv2_s1.0_finetune`, from any folder);
    a typo answers with the closest names."""
    path = Path(text)
    if path.is_file():
        return path
    names = sorted(p.stem for p in RECIPES.glob("*.yaml")) if RECIPES.is_dir() else []
    if not path.is_absolute() and path.parent in (Path("."), Path("configs")):
        stem = path.name[: -len(path.suffix)] if path.suffix in (".yaml", ".yml") else path.name
        if stem in names:
            return RECIPES / f"{stem}.yaml"
        close = difflib.get_close_matches(stem, names, n=3, cutoff=0.6)
        if close:
            raise ConfigError(f"{text}: no such recipe; did you mean {', '.join(close)}?")
    where = f"seglite's are in {RECIPES}" if names else "seglite's are in the configs/ folder of its repository"
    raise ConfigError(f"{text}: no such config file ({where})")


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """A recipe (a YAML file or a shipped recipe's name) with `--set`-style "key=value" overrides, validated."""
    raw: dict = {}
    if path is not None:
        path = find_recipe(path)
        raw = read_mapping(path, ConfigError, "a mapping of config keys")
        if "base" in raw:  # a recipe may extend another one in the same folder
            base_path = path.parent / str(raw.pop("base"))
            base = load_config(base_path).to_dict()
            raw = _merge(base, raw)
    raw = apply_overrides(raw, overrides or [])
    config = _build(TrainConfig, raw)
    _validate_values(config)
    return config


def _validate_values(config: TrainConfig) -> None:
    from seglite.models.registry import get_spec

    try:
        get_spec(config.model)
    except Exception as exc:
        raise ConfigError(f"config key 'model': {exc}") from None
    checks = [
        (config.optim.name in ("sgd", "adam", "adamw"), "optim.name", "sgd, adam or adamw"),
        (config.amp in ("auto", "fp16", "bf16", "none"), "amp", "auto, fp16, bf16 or none"),
        (config.preprocess in ("imagenet", "espnet"), "preprocess", "imagenet or espnet"),
        (config.loss.class_weights in (None, "espnet"), "loss.class_weights", "null or espnet"),
        (len(config.data.crop) == 2 and min(config.data.crop) >= 32, "data.crop", "[width, height], each >= 32"),
        (
            len(config.data.scale_range) == 2 and 0 < config.data.scale_range[0] <= config.data.scale_range[1],
            "data.scale_range",
            "[min, max] with 0 < min <= max",
        ),
        (config.data.val_size is None or len(config.data.val_size) == 2, "data.val_size", "[width, height] or null"),
        (config.schedule.iters > 0, "schedule.iters", "a positive number"),
        (config.batch_size > 0, "batch_size", "a positive number"),
        (config.val_every > 0, "val_every", "a positive number of iterations (the last one always validates)"),
        (config.ckpt_every > 0, "ckpt_every", "a positive number of iterations (the last one always saves)"),
        (config.log_every > 0, "log_every", "a positive number of iterations"),
        (config.optim.lr > 0, "optim.lr", "a positive number"),
        (config.num_classes is None or config.num_classes >= 2, "num_classes", "null or at least 2"),
        (config.freeze_encoder_iters >= 0, "freeze_encoder_iters", "0 or more"),
        (config.distill.weight >= 0, "distill.weight", "0 or more"),
        (config.distill.temperature > 0, "distill.temperature", "a positive number"),
        (config.distill.soft_stride >= 1, "distill.soft_stride", "1 (full resolution) or more, e.g. 2"),
        (
            bool(config.distill.scales) and all(s > 0 for s in config.distill.scales),
            "distill.scales",
            "a list of positive scales, e.g. [0.75, 1.0, 1.25]",
        ),
        (
            config.distill.cache or (config.distill.scales == [1.0] and not config.distill.flip),
            "distill.scales/flip",
            "distill.cache: true (test-time scales and flip apply to a cached teacher only)",
        ),
    ]
    for ok, key, expected in checks:
        if not ok:
            raise ConfigError(f"config key {key!r}: expected {expected}")
