"""One place that maps model names to builders, so every stage constructs models the same way."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from seglite.errors import UnknownModelError


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
    """Build a registered model; kwargs override the registered defaults."""
    spec = get_spec(name)
    options = {**spec.defaults, **kwargs}
    model = spec.builder(num_classes=num_classes, **options)
    model.model_name = name
    return model


def _ensure_loaded() -> None:
    # Importing the family modules registers their names; done lazily to keep `import seglite` light.
    from seglite.models import deeplab, espnet, espnetv2  # noqa: F401
