"""`seglite data get`: a data set's zips, fetched (or found where the user downloaded them) and unpacked into its
root. A download is resumed after an interruption; an unpacked folder appears under its final name only when whole.

Hand-written because no library here does it: urllib fetches and zipfile unpacks, but neither resumes into a
`.part` file, refuses members that climb out of the root, or moves a finished folder into place atomically.
Cityscapes' login and package download are cityscapesscripts' own."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from seglite.data.datasets import CITYSCAPES_SITE, DatasetSpec, Download, load_dataset
from seglite.errors import DataError, OutputError, SegliteError

CHUNK = 1 << 20
TIMEOUT_S = 60.0
STAGING = ".download"  # inside the root: fetched zips (and `.part` files while they come)

# start(description, total bytes or None) -> advance(bytes): the caller's progress bar
ProgressStart = Callable[[str, int | None], Callable[[int], None]]


@dataclass
class GetReport:
    root: Path
    already: bool = False  # the data set was there: nothing fetched or unpacked
    fetched: list[str] = field(default_factory=list)
    unpacked: list[str] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)  # the user's own zips, left where they were


def _quiet(_description: str, _total: int | None) -> Callable[[int], None]:
    return lambda _done: None


def is_present(spec: DatasetSpec) -> bool:
    """Whether the train and val splits are there with every mask (what an unpacked download gives)."""
    try:
        if spec.own_file is not None:  # read again: a YAML's labels are found YOLO's only once they are there
            spec = load_dataset(spec.own_file, spec.path)
        return all(
            spec.samples(split) for split in ("train", "val") if split in spec.splits or spec.layout != "generic"
        )
    except SegliteError:
        return False


def get_dataset(
    spec: DatasetSpec, root: Path, zips_dir: Path | None = None, progress: ProgressStart = _quiet
) -> GetReport:
    """Make `root` hold `spec`: each zip from `zips_dir`, the root or an earlier run's staging folder where it is
    there, else fetched; then unpacked. The zips fetched here are deleted once unpacked; the user's are kept."""
    download = spec.download
    report = GetReport(root)
    if is_present(spec.with_root(root)):
        report.already = True
        return report
    if download is None:
        raise DataError(
            f"data set {spec.name!r} says nowhere to get it from: add `download: {{zips: [NAME.zip], from: URL}}` "
            "to its YAML, or put its files in place by hand"
        )
    if zips_dir is not None and not zips_dir.is_dir():
        raise DataError(f"--zips {zips_dir}: no such folder (the one the zips were downloaded to)")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{root}: cannot create this folder ({exc.strerror or exc}); pass another ROOT") from None
    staging = root / STAGING
    try:
        archives = []
        for name in download.zips:
            places = (zips_dir, root, staging, _local_folder(download, name))
            found = next((d / name for d in places if d is not None and (d / name).is_file()), None)
            if found is None:
                found = _fetch(download, name, staging, progress)
                report.fetched.append(name)
            elif found.parent != staging:
                report.kept.append(found)
            archives.append(found)
        for archive in archives:
            if _unpack(archive, root, download.folder or _wrapping_folder(archive, spec), progress):
                report.unpacked.append(archive.name)
        if not is_present(spec.with_root(root)):
            held = ", ".join(sorted(p.name for p in root.iterdir() if not p.name.startswith("."))) or "nothing"
            raise DataError(
                f"{root}: unpacked, but the data set's train and val splits are not there (it holds {held}); set "
                "`download: folder:` to the zips' folder that holds them, or `path`/`train`/`val` to where they are"
            )
        for archive in archives:
            if archive.parent == staging:
                archive.unlink()
    finally:  # a partial download stays for the next run to resume; empty folders do not
        for folder in (staging / "cityscapes", staging):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    return report


def _local_folder(download: Download, name: str) -> Path | None:
    """The folder of a zip that `from:` names on this machine (unpacked from there, not copied)."""
    if not download.source.startswith("file://"):
        return None
    path = Path(urllib.request.url2pathname(urllib.parse.urlsplit(download.source).path))
    return path if download.source.endswith("/") else (path.parent if path.name == name else None)


def _fetch(download: Download, name: str, staging: Path, progress: ProgressStart) -> Path:
    staging.mkdir(parents=True, exist_ok=True)
    if download.source == CITYSCAPES_SITE:
        return _fetch_cityscapes(name, staging)
    url = download.source + name if download.source.endswith("/") else download.source
    target = staging / name
    part = staging / f"{name}.part"
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            resumed = have > 0 and getattr(response, "status", None) == 206
            length = response.headers.get("Content-Length")
            total = int(length) + (have if resumed else 0) if length and length.isdigit() else None
            free = shutil.disk_usage(staging).free
            if length and length.isdigit() and int(length) > free:
                raise OutputError(f"{staging}: {int(length) / 1e9:.1f} GB to download {name}, {free / 1e9:.1f} GB free")
            advance = progress(f"download {name}", total)
            advance(have if resumed else 0)
            with open(part, "ab" if resumed else "wb") as out:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    advance(len(chunk))
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not have:
            raise _not_downloaded(name, url, exc.reason, part) from None
        # "Range not satisfiable": the part already holds the whole file (stopped before its rename); unpacking
        # checks it
    except (urllib.error.URLError, TimeoutError, ConnectionError, ValueError) as exc:
        raise _not_downloaded(name, url, getattr(exc, "reason", None) or exc, part) from None
    except OSError as exc:
        raise OutputError(f"{part}: could not be written ({exc.strerror or exc})") from None
    os.replace(part, target)
    return target


def _not_downloaded(name: str, url: str, reason: object, part: Path) -> DataError:
    kept = f" ({part.stat().st_size} bytes kept: running again resumes)" if part.is_file() else ""
    return DataError(
        f"cannot download {name} from {url} ({reason}){kept}; or download it another way and pass --zips DIR"
    )


def _fetch_cityscapes(name: str, staging: Path) -> Path:
    """cityscapesscripts' downloader: it asks for the account (or reads the credentials it stored) and checks each
    package's MD5; it writes under the package's name, so it works in a folder of its own and is moved when done."""
    try:
        from cityscapesscripts.download import downloader
    except ImportError as exc:  # its requests/appdirs/tqdm are optional there
        raise DataError(
            f"the Cityscapes downloader needs {exc.name}: pip install {exc.name} (or download {name} in a browser "
            "from https://www.cityscapes-dataset.com/downloads/ and pass --zips DIR)"
        ) from None
    import appdirs  # cityscapesscripts' own dependency: where its login keeps the credentials

    stored = Path(appdirs.user_data_dir("cityscapesscripts", "cityscapes")) / "credentials.json"
    if not stored.is_file() and not sys.stdin.isatty():
        raise DataError(
            f"{name} comes from cityscapes-dataset.com with an account, and there is no terminal here to ask for it: "
            "run this once in a terminal (answer y to store the login), or download the zips in a browser from "
            "https://www.cityscapes-dataset.com/downloads/ and pass --zips DIR"
        )
    incoming = staging / "cityscapes"
    incoming.mkdir(parents=True, exist_ok=True)
    partial = incoming / name
    try:
        session = downloader.login()
        downloader.download_packages(
            session=session, package_names=[name], destination_path=str(incoming), resume=partial.is_file()
        )
    except (KeyboardInterrupt, OSError):
        raise
    except Exception as exc:  # the library raises bare Exceptions (bad credentials, no access, MD5 mismatch)
        raise DataError(
            f"Cityscapes download of {name} failed: {exc}; an account from https://www.cityscapes-dataset.com/register/"
            " is needed, or download the zips in a browser and pass --zips DIR"
        ) from None
    target = staging / name
    os.replace(partial, target)
    return target


def _wrapping_folder(archive: Path, spec: DatasetSpec) -> str:
    """The one folder a zip wraps its data set in (Ultralytics' `coco8-seg.zip` holds `coco8-seg/images/...`, which
    its YAML's paths leave out): its contents are the root. "" where the zip has several tops or the paths name it."""
    try:
        with zipfile.ZipFile(archive) as opened:
            names = [name for name in opened.namelist() if name.strip("/")]
    except (zipfile.BadZipFile, OSError):
        return ""  # _unpack says what is wrong with it
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) != 1 or not all("/" in name for name in names):
        return ""
    top = tops.pop()
    return "" if any(PurePosixPath(value).parts[:1] == (top,) for value in spec.splits.values()) else top


def _unpack(archive: Path, root: Path, folder: str, progress: ProgressStart) -> bool:
    """Unpack the members under `folder` into `root`; False where everything it holds is there already. Each
    top-level entry is moved into place once the whole zip is out; an existing folder is never merged into."""
    try:
        with zipfile.ZipFile(archive) as opened:
            prefix = f"{folder}/" if folder else ""
            members = [m for m in opened.infolist() if m.filename.startswith(prefix) and m.filename != prefix]
            if not members:
                raise DataError(f"{archive}: holds nothing under {folder}/; is it the right zip?")
            relative = [(m, PurePosixPath(m.filename[len(prefix) :])) for m in members]
            unsafe = next((str(r) for _, r in relative if r.is_absolute() or ".." in r.parts), None)
            if unsafe is not None:
                raise DataError(f"{archive}: member {unsafe!r} would be written outside {root}; not unpacked")
            tops = sorted({r.parts[0] for _, r in relative})
            waiting = [t for t in tops if not (root / t).exists()]
            if not waiting:
                return False
            blocking = [t for t in tops if (root / t).is_dir()]
            if blocking:
                raise DataError(
                    f"{root / blocking[0]}: already there, but the data set is not complete; move it away and run "
                    "again (seglite never merges into a folder it did not unpack)"
                )
            size = sum(m.file_size for m, r in relative if r.parts[0] in waiting)
            free = shutil.disk_usage(root).free
            if size > free:
                raise OutputError(f"{root}: {size / 1e9:.1f} GB to unpack {archive.name}, {free / 1e9:.1f} GB free")
            unpacking = root / f".unpack-{os.getpid()}-{secrets.token_hex(3)}"
            try:
                advance = progress(f"unpack {archive.name}", size)
                for member, rel in relative:
                    if rel.parts[0] not in waiting:
                        continue
                    destination = unpacking.joinpath(*rel.parts)
                    if member.is_dir():
                        destination.mkdir(parents=True, exist_ok=True)
                        continue
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    with opened.open(member) as source, open(destination, "wb") as out:
                        shutil.copyfileobj(source, out, CHUNK)
                    advance(member.file_size)
                for top in waiting:
                    os.replace(unpacking / top, root / top)
            finally:
                shutil.rmtree(unpacking, ignore_errors=True)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
        raise DataError(
            f"{archive}: not a whole zip ({exc}); an interrupted download? delete it and run again"
        ) from None
    except OSError as exc:
        raise OutputError(f"{root}: unpacking {archive.name} failed ({exc.strerror or exc})") from None
    return True
