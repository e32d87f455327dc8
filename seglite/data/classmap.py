"""Links between two class sets ({target: source} or {target: [sources]}), for fine-tuning from weights trained on
other classes and for evaluating such weights on another data set."""

from __future__ import annotations

import difflib
from pathlib import Path

from seglite.errors import DataError
from seglite.yamlfile import read_mapping

CLASS_MAPS = Path(__file__).resolve().parents[2] / "configs" / "class_maps"  # a checkout's (pip install -e .)


def shipped_class_maps() -> list[str]:
    return sorted(p.stem for p in CLASS_MAPS.glob("*.yaml")) if CLASS_MAPS.is_dir() else []


def load_class_map(value: str | Path | dict | None) -> dict[str, list[str]]:
    """A class map from a YAML file or a mapping; each target lists its source classes."""
    if value is None:
        return {}
    where = "class_map"
    if not isinstance(value, dict):
        path = Path(value)
        shipped = CLASS_MAPS / f"{path.name.removesuffix('.yaml')}.yaml"
        if not path.is_file() and path.parent == Path(".") and shipped.is_file():
            path = shipped  # a shipped map by name, from any folder
        if not path.is_file():
            raise DataError(
                f"class map {path}: no such file; seglite's own: {', '.join(shipped_class_maps()) or 'none'}"
            )
        value = read_mapping(path, DataError, "a mapping {target class: source class or [source classes]}")
        where = str(path)
    out = {}
    for target, sources in value.items():
        sources = sources if isinstance(sources, list) else [sources]
        if not sources or not all(isinstance(s, str | int) for s in sources):
            raise DataError(f"{where}: {target!r}: expected a source class name or a list of them")
        out[str(target)] = [str(s) for s in sources]
    return out


def _index(name: str, names: tuple[str, ...], role: str) -> int:
    lowered = [n.lower() for n in names]
    if name.lower() in lowered:
        return lowered.index(name.lower())
    close = difflib.get_close_matches(name.lower(), lowered, n=1)
    hint = f"; did you mean {names[lowered.index(close[0])]!r}?" if close else ""
    raise DataError(f"class map: {role} class {name!r} does not exist{hint} ({role} classes: {', '.join(names)})")


def link_classes(
    target_names: tuple[str, ...], source_names: tuple[str, ...], class_map: dict[str, list[str]] | None = None
) -> dict[int, list[int]]:
    """target index -> source indices. Targets the map leaves out link to the source class of the same name
    (case-insensitive), if there is one."""
    class_map = class_map or {}
    links: dict[int, list[int]] = {}
    for target, sources in class_map.items():
        links[_index(target, target_names, "target")] = [_index(s, source_names, "source") for s in sources]
    lowered = [n.lower() for n in source_names]
    for index, name in enumerate(target_names):
        if index not in links and name.lower() in lowered:
            links[index] = [lowered.index(name.lower())]
    return links


def describe_links(links: dict[int, list[int]], target_names, source_names) -> str:
    return (
        ", ".join(f"{target_names[t]} <- {'+'.join(source_names[s] for s in links[t])}" for t in sorted(links))
        or "none"
    )
