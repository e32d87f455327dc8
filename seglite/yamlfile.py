"""Reading the YAML files users write (recipes, data sets, class maps): one mapping or a one-line error."""

from __future__ import annotations

from pathlib import Path

import yaml

from seglite.errors import SegliteError


def read_mapping(path: Path, error: type[SegliteError], expected: str) -> dict:
    """The file's top-level mapping; `error` with the file name for bad YAML or anything but a mapping."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise error(f"{path}: expected {expected}")
    return raw
