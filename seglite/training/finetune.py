"""Start training from weights trained on other classes: every tensor whose name and shape fit is loaded; tensors
that depend on the class count get the source rows of linked classes and keep a fresh initialisation elsewhere.

Written by hand: timm's and smp's loaders only drop a mismatched classifier; seglite's decoders (ESPNet's light
decoder is `classes` channels wide throughout) need per-class rows carried through every class-sized dimension.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from seglite.data.classmap import describe_links, link_classes
from seglite.models.registry import create_model

# Two class counts no seglite network uses for anything else: a dimension that equals them in two probe builds
# is a class dimension.
_PROBES = (37, 41)


@dataclass
class InitReport:
    source: str
    loaded: list[str] = field(default_factory=list)
    class_rows: list[str] = field(default_factory=list)  # class-sized tensors: linked rows copied, others fresh
    reinitialised: list[tuple[str, str]] = field(default_factory=list)  # (tensor, why)
    unused: list[str] = field(default_factory=list)  # in the source, not in the target
    links: str = ""
    unlinked: list[str] = field(default_factory=list)  # target classes no source class feeds: they start fresh

    def lines(self) -> list[str]:
        rows = "with the linked classes' rows copied" if self.links != "none" else "started fresh (no class linked)"
        out = [
            f"init from {self.source}: {len(self.loaded)} tensors loaded as they are, {len(self.class_rows)} "
            f"class-sized tensors {rows}, {len(self.reinitialised)} re-initialised, "
            f"{len(self.unused)} unused",
            f"  linked classes: {self.links}",
        ]
        if self.unlinked:
            out.append(
                f"  new classes (fresh rows; `class_map: {{target: source}}` links one): {', '.join(self.unlinked)}"
            )
        for name, why in self.reinitialised[:12]:
            out.append(f"  re-initialised {name}: {why}")
        if len(self.reinitialised) > 12:
            out.append(f"  ... and {len(self.reinitialised) - 12} more re-initialised tensors")
        if self.unused:
            out.append(
                f"  unused from the source: {', '.join(self.unused[:6])}{' ...' if len(self.unused) > 6 else ''}"
            )
        return out


def class_dimensions(model_name: str, model_kwargs: dict) -> dict[str, tuple[int, ...]]:
    """Which dimensions of each tensor are class-sized, found by building the network at two class counts."""
    first, second = (create_model(model_name, num_classes=n, **model_kwargs).state_dict() for n in _PROBES)
    dims = {}
    for name, tensor in first.items():
        other = second[name]
        found = tuple(
            d
            for d, (a, b) in enumerate(zip(tensor.shape, other.shape, strict=True))
            if (a, b) == _PROBES and tensor.ndim == other.ndim
        )
        if found:
            dims[name] = found
    return dims


def _remap(source: torch.Tensor, fresh: torch.Tensor, dims: tuple[int, ...], links: dict[int, list[int]]):
    """Along every class dimension, target row t = mean of the source rows linked to t; unlinked rows stay fresh."""
    out = source.float()
    keep = torch.ones(fresh.shape, dtype=torch.bool)
    targets = fresh.shape[dims[0]]
    for d in dims:
        rows = []
        for t in range(targets):
            if t in links:
                rows.append(out.index_select(d, torch.tensor(links[t])).mean(d, keepdim=True))
            else:
                rows.append(torch.zeros_like(out.narrow(d, 0, 1)))
                keep.narrow(d, t, 1).fill_(False)
        out = torch.cat(rows, d)
    return torch.where(keep, out.to(fresh.dtype), fresh)


def init_from(
    model: nn.Module,
    model_name: str,
    model_kwargs: dict,
    target_names: tuple[str, ...],
    source_model: nn.Module,
    source_names: tuple[str, ...],
    class_map: dict[str, list[str]] | None,
    source: str,
) -> InitReport:
    """Load `source_model`'s tensors into `model` (in place) and say what happened to each."""
    report = InitReport(source)
    links = link_classes(target_names, source_names, class_map)
    report.links = describe_links(links, target_names, source_names)
    report.unlinked = [name for index, name in enumerate(target_names) if index not in links]
    source_state = source_model.state_dict()
    source_classes = int(source_model.num_classes)
    dims = class_dimensions(model_name, model_kwargs)
    new_state = {}
    for name, fresh in model.state_dict().items():
        if name not in source_state:
            report.reinitialised.append((name, "not in the init weights"))
            continue
        tensor = source_state[name]
        class_dims = dims.get(name, ())
        if class_dims:
            expected = [source_classes if d in class_dims else s for d, s in enumerate(fresh.shape)]
            if list(tensor.shape) == expected:
                new_state[name] = _remap(tensor, fresh, class_dims, links)
                report.class_rows.append(name)
                continue
        elif tensor.shape == fresh.shape:
            new_state[name] = tensor.to(fresh.dtype)
            report.loaded.append(name)
            continue
        report.reinitialised.append(
            (name, f"shape {tuple(tensor.shape)} in the init weights, {tuple(fresh.shape)} here")
        )
    report.unused = [name for name in source_state if name not in model.state_dict()]
    model.load_state_dict(new_state, strict=False)
    return report
