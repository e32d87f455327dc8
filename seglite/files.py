"""Writing results without losing any: unique temporary names, atomic renames, fresh run folders, and one rule
for which write failures are the machine's (exit 1) and which the user's (exit 2).

Hand-written because no library covers it: `tempfile` gives unique names but neither the rename nor the
Ultralytics-style `runs/train2` numbering nor the errno -> exit code rule."""

from __future__ import annotations

import errno
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path

from seglite.errors import InputError, OutputError, SegliteError

# The machine failed (full disk or quota, broken or read-only medium, permissions that changed under us).
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EACCES, errno.EPERM})


def temporary_name(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """A hidden sibling of `path` that no other process picks: pid + random suffix, same folder (same disk, so
    the final rename is atomic). `path.name` stays inside it so a reader of the folder sees what it becomes."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(3)}.{tag}")


def write_failure(exc: OSError, what: str | os.PathLike, *, kept: str = "nothing partial was left") -> SegliteError:
    """The one error for a failed write: 1 (the machine's) for a full disk, an I/O error, a read-only medium or
    permissions; 2 (the user's) for anything else, e.g. a name that is too long or a file where a folder should be."""
    message = f"{what}: could not be written ({exc.strerror or exc}); {kept}"
    return OutputError(message) if exc.errno in MACHINE_ERRNOS else InputError(message)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None], *, fsync: bool = False) -> Path:
    """`write(tmp)` fills a unique temporary file next to `path`, which is then renamed over `path`: a reader
    never sees half a file, and two processes writing the same name never share a temporary file (the later
    rename wins, both succeed). On any failure the temporary file is removed and the error raised."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path)
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def prepare_output_folder(folder: str | os.PathLike, option: str = "--out") -> Path:
    """Create the user's output folder and prove a file can be written there. A folder that cannot be created at
    all is the user's choice of path (exit 2); one that exists but cannot take a file is the machine's (exit 1)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{folder}: cannot create this folder ({exc.strerror or exc}); pass {option} DIR") from None
    if not folder.is_dir():
        raise InputError(f"{folder}: is a file, not a folder; pass {option} DIR")
    probe = temporary_name(folder / ".seglite-write-test")
    try:
        probe.write_bytes(b"")
    except OSError as exc:
        raise write_failure(exc, folder, kept=f"nothing was written; free space or pass {option} DIR") from None
    finally:
        probe.unlink(missing_ok=True)
    return folder


def next_free_name(path: str | os.PathLike, taken: Callable[[Path], bool] | None = None) -> Path:
    """`runs/train`, else `runs/train2`, `runs/train3`, ... (Ultralytics' rule): the first that is not taken
    (default: does not exist). Numbers follow the highest in use, so a deleted `train2` is not refilled."""
    path = Path(path)
    taken = taken or (lambda p: p.exists())
    if not taken(path):
        return path
    stem, suffix = (path.stem, path.suffix) if path.suffix and not path.is_dir() else (path.name, "")
    pattern = re.compile(rf"{re.escape(stem)}(\d+){re.escape(suffix)}$")
    used = [int(m.group(1)) for p in path.parent.glob(f"{stem}*{suffix}") if (m := pattern.match(p.name))]
    number = max([1, *used]) + 1
    while taken(candidate := path.with_name(f"{stem}{number}{suffix}")):
        number += 1
    return candidate


def choose_output(
    out: Path | None,
    default: Path,
    existing: Callable[[Path], list[Path]],
    exist_ok: bool,
    option: str = "--out",
) -> Path:
    """The one rule for every command that writes results: an `out` the user named that already holds results
    (`existing(out)` non-empty) is refused in one line unless `exist_ok`; without `out`, the default or the next
    free `default2`, `default3`, ... so an earlier result is never replaced without being asked."""
    if out is None:
        return default if exist_ok else next_free_name(default, taken=lambda p: bool(existing(p)))
    found = existing(out)
    if found and not exist_ok:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise InputError(
            f"{found[0]}: already exists{more}; pass another {option}, or --exist-ok to replace earlier results"
        )
    return out


def existing_files(*names: str) -> Callable[[Path], list[Path]]:
    """For `choose_output`: which of these names a folder already holds."""
    return lambda folder: [folder / name for name in names if (folder / name).exists()]


def existing_file(path: Path) -> list[Path]:
    """For `choose_output` of a single-file output: the file itself, if it exists."""
    return [path] if path.exists() else []
