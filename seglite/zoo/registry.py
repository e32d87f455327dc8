"""The model zoo: published checkpoints by name, downloaded once into a verified cache."""

from __future__ import annotations

import difflib
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from seglite.errors import CheckpointError, SegliteError
from seglite.zoo.preprocess import Preprocess

MANIFEST = Path(__file__).with_name("zoo.yaml")  # a link to the repository's weights/zoo.yaml
LAST, BEST = "last.pt", "best.pt"  # a training run's checkpoints (seglite.training.trainer writes them)
# What predict and Segmenter() run when given no weights: the most accurate published model.
DEFAULT_WEIGHTS = "espnetv2_s2.0_cityscapes_1024x512"


@dataclass(frozen=True)
class ZooEntry:
    name: str
    model: str
    file: str
    url: str
    sha256: str
    license: str
    reported_miou: float | None
    notes: str
    preprocess: Preprocess


def seglite_home() -> Path:
    return Path(os.environ.get("SEGLITE_HOME") or Path.home() / ".cache" / "seglite")


def list_zoo(manifest: Path | None = None) -> list[ZooEntry]:
    data = yaml.safe_load(Path(manifest or MANIFEST).read_text())
    entries = []
    for item in data["entries"]:
        item = dict(item)
        item["preprocess"] = Preprocess.from_dict(item["preprocess"])
        entries.append(ZooEntry(**item))
    return entries


def _aliases(manifest: Path | None = None) -> dict[str, ZooEntry]:
    """What --weights may call an entry: its zoo name, or its file's name as it sits in the cache (names first)."""
    entries = list_zoo(manifest)
    aliases = {entry.name: entry for entry in entries}
    for entry in entries:
        aliases.setdefault(Path(entry.file).stem, entry)
    return aliases


def find_entry(name: str, manifest: Path | None = None) -> ZooEntry | None:
    """An entry by its zoo name, or by its file's name (with or without .pth)."""
    return _aliases(manifest).get(name.removesuffix(".pth"))


def closest_names(spec: str, manifest: Path | None = None) -> list[str]:
    """Zoo names a mistyped --weights meant: a model name's published weights, else the nearest name or file name."""
    aliases = _aliases(manifest)
    typed = spec.removesuffix(".pth")
    near = [alias for alias in aliases if alias.startswith(typed)]
    near = near or difflib.get_close_matches(typed, list(aliases), n=1, cutoff=0.6)
    return list(dict.fromkeys(aliases[alias].name for alias in near))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def cached_path(entry: ZooEntry) -> Path:
    return seglite_home() / "weights" / entry.file


def fetch(entry: ZooEntry, timeout: float = 30.0) -> Path:
    """Return the verified local file of a zoo entry, downloading it on first use."""
    target = cached_path(entry)
    if target.is_file():
        if sha256_of(target) == entry.sha256:
            return target
        raise CheckpointError(
            f"{target}: sha256 does not match zoo entry {entry.name} (expected {entry.sha256[:12]}...); "
            "delete the file to download it again"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.file}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(entry.url, timeout=timeout) as response:
            while chunk := response.read(1 << 20):
                out.write(chunk)
        actual = sha256_of(tmp)
        if actual != entry.sha256:
            raise CheckpointError(
                f"download of {entry.name} from {entry.url} has sha256 {actual[:12]}..., expected "
                f"{entry.sha256[:12]}...; the file was rejected and not used"
            )
        os.replace(tmp, target)
        return target
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise SegliteError(
            f"cannot download {entry.name} from {entry.url} ({reason}); place the file at {target} "
            "or pass --weights PATH"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def run_checkpoint(folder: Path) -> Path | None:
    """The checkpoint a training run's folder stands for: its best.pt, else its last.pt."""
    return next((folder / name for name in (BEST, LAST) if (folder / name).is_file()), None)


def resolve_weights_file(spec: str) -> tuple[Path, ZooEntry | None]:
    """A --weights value: an existing path (a training run's folder: its best.pt), or a zoo name (fetched into the
    cache)."""
    path = Path(spec).expanduser()
    if path.is_dir() and (checkpoint := run_checkpoint(path)) is not None:
        return checkpoint, None
    if path.exists():
        return path, None
    entry = find_entry(spec)
    if entry is None:
        near = closest_names(spec)
        hint = f"did you mean {', '.join(near)}?" if near else f"zoo names look like {list_zoo()[0].name}"
        raise SegliteError(
            f"--weights {spec!r}: no such file, and not a zoo name; {hint} (`seglite weights list` shows them all)"
        )
    return fetch(entry), entry
