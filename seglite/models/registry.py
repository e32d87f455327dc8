"""One place that maps model names to builders, so every stage constructs models the same way."""

from __future__ import annotations

import difflib
import inspect
import operator
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from seglite.errors import SegliteError, UnknownModelError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    builder: Callable[..., nn.Module]
    defaults: dict
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, builder: Callable[..., nn.Module], description: str = "", **defaults) -> None:
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} registered twice")
    _REGISTRY[name] = ModelSpec(name, builder, defaults, description)


def list_models() -> list[str]:
    _ensure_loaded()
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(name, _REGISTRY, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(f"unknown model {name!r}.{hint} Run `seglite models` for the list.") from None


def create_model(name: str, num_classes: int = 19, **kwargs) -> nn.Module:
    """Build a registered model with random weights; kwargs override the registered defaults (the builder's own
    arguments, e.g. `output_stride` for DeepLabV3+). Published or trained weights: `seglite.load_weights`."""
    spec = get_spec(name)
    try:
        count = 0 if isinstance(num_classes, bool) else operator.index(num_classes)  # int, numpy ints
    except TypeError:
        count = 0
    if count < 1:
        raise SegliteError(f"create_model({name!r}): num_classes={num_classes!r}; expected a whole number >= 1")
    if {"pretrained", "weights", "checkpoint_path"} & set(kwargs):
        raise SegliteError(
            f"create_model({name!r}) builds random weights; for published or trained ones use "
            "seglite.load_weights(ZOO_NAME_OR_FILE) (`seglite weights list` names them), or start a training run "
            "from them with `seglite train ... --init ZOO_NAME_OR_FILE`"
        )
    parameters = inspect.signature(spec.builder).parameters
    accepted = {n for n, p in parameters.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)} - {"num_classes"}
    takes_any = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
    if not takes_any and (unknown := sorted(set(kwargs) - accepted)):
        raise SegliteError(
            f"create_model({name!r}): no option {', '.join(unknown)}; it takes {', '.join(sorted(accepted)) or 'none'}"
        )
    options = {**spec.defaults, **kwargs}
    model = spec.builder(num_classes=count, **options)
    model.model_name = name
    return model


def _ensure_loaded() -> None:
    # Importing the family modules registers their names; done lazily to keep `import seglite` light.
    from seglite.models import deeplab, espnet, espnetv2  # noqa: F401
