"""seglite's checkpoint format: one dict that says which model, which classes and which preprocessing.

Every load goes through `torch.load(..., weights_only=True)`, so no code in a file is ever executed.
Writes are atomic (temp file + rename) so an interruption never leaves a half-written checkpoint.
"""

from __future__ import annotations

import io
import os
import pickle
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from seglite.data.labels import CLASS_NAMES
from seglite.errors import CheckpointError, SegliteError
from seglite.files import atomic_write
from seglite.models.base import flush_subnormals
from seglite.models.registry import create_model, get_spec
from seglite.zoo import preprocess as pp
from seglite.zoo.convert import detect_original, rename_keys
from seglite.zoo.registry import resolve_weights_file

FORMAT_TAG = "seglite-checkpoint-v1"


@dataclass
class LoadedWeights:
    model: nn.Module
    model_name: str
    classes: tuple[str, ...]
    preprocess: pp.Preprocess
    source: str
    config: dict = field(default_factory=dict)
    model_kwargs: dict = field(default_factory=dict)
    dataset: dict | None = None  # the training data set's record: name, names, palette, ignore_index, label_mapping

    @property
    def num_outputs(self) -> int:
        return self.model.num_classes

    @property
    def dataset_name(self) -> str:
        return (self.dataset or {}).get("name", "cityscapes")

    @property
    def palette(self) -> list[list[int]] | None:
        """RGB per class, from the training data set (None: Cityscapes' colours)."""
        return (self.dataset or {}).get("palette")

    def fixed_size(self) -> tuple[int, int]:
        """The input size for an export or a latency figure when none is asked for: the weights' own; else, for
        weights validated at each frame's own size, the size of the frames they were trained on (to the network's
        stride, as exports need); else Cityscapes' 1024x512. A model timed or exported at 1024x512 after training on
        480x360 frames would see its objects twice the size it learnt and report a latency nobody ships."""
        if self.preprocess.size:
            return tuple(self.preprocess.size)
        frames = (self.dataset or {}).get("image_size")
        if not frames:
            return (1024, 512)
        stride = int(getattr(self.model, "stride", 1))
        return tuple(max(stride, round(side / stride) * stride) for side in frames)


def atomic_torch_save(obj: object, path: str | os.PathLike) -> None:
    """Serialise in memory, write to a unique temporary file, fsync, then rename over the target. In memory first:
    torch.save straight to a file turns a full disk into a RuntimeError ("unexpected pos"), not an OSError."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write(path, lambda tmp: tmp.write_bytes(buffer.getbuffer()), fsync=True)


def checkpoint_dict(
    model_name: str,
    model: nn.Module,
    classes: tuple[str, ...],
    preprocess: pp.Preprocess,
    config: dict | None = None,
    model_kwargs: dict | None = None,
    dataset: dict | None = None,
    **training_state,
) -> dict:
    return {
        "format": FORMAT_TAG,
        "model": model_name,
        "model_kwargs": dict(model_kwargs or {}),
        "num_classes": int(model.num_classes),
        "classes": list(classes),
        "preprocess": preprocess.to_dict(),
        "config": dict(config or {}),
        "dataset": dataset,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **training_state,
    }


def save_checkpoint(path: str | os.PathLike, weights: LoadedWeights) -> None:
    atomic_torch_save(
        checkpoint_dict(
            weights.model_name,
            weights.model,
            weights.classes,
            weights.preprocess,
            weights.config,
            weights.model_kwargs,
            weights.dataset,
        ),
        path,
    )


def read_checkpoint_file(path: str | os.PathLike) -> dict:
    """torch.load with weights_only=True, turning every failure into a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such weights file")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses anyway
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "unsupported content"
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            reason = "it holds Python objects beyond tensors (refused: loading it could execute code)"
        raise CheckpointError(f"{path}: not a loadable checkpoint: {reason}") from None
    except Exception as exc:  # the unpickler raises arbitrary types (KeyError, EOFError, ...) on damaged bytes
        raise CheckpointError(
            f"{path}: not a PyTorch checkpoint or truncated ({type(exc).__name__}); expected a seglite "
            "checkpoint or an original ESPNet/EdgeNets .pth file"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return obj


def load_weights(weights: str | os.PathLike, model_name: str | None = None) -> LoadedWeights:
    """Build the model that weights belong to and load them strictly; `model_name`, if given, must agree.

    `weights`: a file (a seglite checkpoint or the authors' original .pth), a training run's folder (its best.pt,
    else last.pt) or a zoo name (`seglite weights list`; fetched into the cache), as every command's --weights."""
    path, entry = resolve_weights_file(str(weights))
    loaded = _load_file(path, model_name)
    if entry is not None:
        loaded.preprocess = entry.preprocess
        loaded.source = entry.name
    return loaded


def _load_file(path: str | os.PathLike, model_name: str | None) -> LoadedWeights:
    raw = read_checkpoint_file(path)
    if raw.get("format") == FORMAT_TAG:
        return _load_seglite(raw, path, model_name)
    fmt = detect_original(raw)
    if fmt is None:
        raise CheckpointError(
            f"{path}: not a seglite checkpoint and not an original ESPNet/EdgeNets Cityscapes checkpoint"
        )
    if model_name is not None and model_name != fmt.model_name:
        raise CheckpointError(
            f"{path}: holds a {fmt.model_name} network, not {model_name}; pass --model {fmt.model_name}"
        )
    model = create_model(fmt.model_name, num_classes=fmt.num_classes, **fmt.model_kwargs)
    _load_strict(model, rename_keys(raw, fmt.family), path)
    preprocess = pp.ESPNET_V1 if fmt.family.startswith("espnetv1") else pp.IMAGENET
    if fmt.family == "espnetv2":
        preprocess = preprocess.with_size(_espnetv2_size_from_name(Path(path).name))
    return LoadedWeights(
        model.eval(),
        fmt.model_name,
        CLASS_NAMES,
        preprocess,
        str(path),
        {"converted_from": Path(path).name},
        fmt.model_kwargs,
    )


def _espnetv2_size_from_name(filename: str) -> tuple[int, int]:
    # EdgeNets names files by training resolution (..._city_512x256.pth); the weights are identical in shape.
    return (512, 256) if "512x256" in filename else (1024, 512)


def _load_seglite(raw: dict, path: str | os.PathLike, model_name: str | None) -> LoadedWeights:
    try:
        name = raw["model"]
        num_classes = int(raw["num_classes"])
        state = raw["state_dict"]
        kwargs = dict(raw.get("model_kwargs") or {})
        classes = tuple(raw.get("classes") or CLASS_NAMES)
        preprocess = pp.Preprocess.from_dict(raw.get("preprocess") or {})
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: damaged seglite checkpoint (missing {exc})") from None
    if model_name is not None and model_name != name:
        raise CheckpointError(f"{path}: holds a {name} network, not {model_name}; pass --model {name}")
    try:
        get_spec(name)
    except SegliteError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    model = create_model(name, num_classes=num_classes, **kwargs)
    _load_strict(model, state, path)
    dataset = raw.get("dataset") if isinstance(raw.get("dataset"), dict) else None
    return LoadedWeights(
        model.eval(), name, classes, preprocess, str(path), dict(raw.get("config") or {}), kwargs, dataset
    )


def _load_strict(model: nn.Module, state: dict, path: str | os.PathLike) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise CheckpointError(
            f"{path}: does not fit {getattr(model, 'model_name', type(model).__name__)} "
            f"({first[:200]}); is it for another architecture or width?"
        ) from None
    flush_subnormals(model)  # every runtime this net reaches (PyTorch, exports, fine-tuning) computes at full speed


def load_model(model: str | None = None, weights: str | None = None, num_classes: int = 19) -> LoadedWeights:
    """--model/--weights as every command takes them: a path (seglite or original file, or a training run's
    folder), or a zoo name."""
    if weights is None:
        if model is None:
            raise SegliteError("pass --model NAME and/or --weights PATH_OR_ZOO_NAME")
        net = create_model(model, num_classes=num_classes).eval()
        return LoadedWeights(net, model, CLASS_NAMES, pp.IMAGENET, "random init")
    return load_weights(weights, model_name=model)
