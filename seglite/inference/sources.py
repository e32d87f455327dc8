"""What `seglite predict SOURCE` can read: images, folders, globs, video files, cameras and streams."""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from seglite.errors import InputError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".avif"}
HEIC_EXTENSIONS = {".heic", ".heif"}  # iPhone photos: OpenCV decodes no HEVC image
MIN_IMAGE_SIDE = 8  # smaller images carry no scene for these networks (and OpenCV's overlay treats 1x1 as a scalar)
# Cameras' files too: dash-cams' .ts, camcorders' .mts/.m2ts, phones' .3gp.
VIDEO_EXTENSIONS = set(".mp4 .avi .mov .mkv .webm .m4v .mpg .mpeg .wmv .ts .mts .m2ts .3gp .flv".split())
MEDIA_EXTENSIONS = IMAGE_EXTENSIONS | VIDEO_EXTENSIONS  # what a folder or a glob gives predict
URL_TIMEOUT_S = 30.0  # an image URL that sends nothing for this long is named, not waited on


@dataclass(frozen=True)
class Source:
    kind: str  # "images", "video" or "stream"
    images: tuple[Path, ...] = ()
    video: str | int | None = None  # a path, a camera index or a URL
    base: Path | None = None  # the folder the images' relative paths (and so their output names) start from

    def output_stem(self, image: Path) -> str:
        """The output name of an image: its path below `base` without the suffix, so a/x.png and b/x.png in a
        folder run write a/x_overlay.png and b/x_overlay.png instead of overwriting one another."""
        if self.base is None:
            return image.stem
        return image.relative_to(self.base).with_suffix("").as_posix()

    def video_stem(self) -> str:
        """The output name of a video (its file name; its path below `base` for a video found in a folder), a
        camera (`camera0`) or a stream (`stream`)."""
        if isinstance(self.video, int):
            return f"camera{self.video}"
        if isinstance(self.video, str) and url_suffix(self.video) in VIDEO_EXTENSIONS:
            return url_file(self.video).stem
        if not isinstance(self.video, str) or "://" in self.video:
            return "stream"
        return self.output_stem(Path(self.video))

    @property
    def name(self) -> str:
        return str(self.video) if self.video is not None else f"{len(self.images)} image(s)"

    def expected_frames(self) -> int | None:
        """How many images or frames it holds: None for cameras, streams and videos that do not say."""
        if self.kind == "images":
            return len(self.images)
        if self.kind == "video":
            capture, _, _, count = open_video(self.video)
            capture.release()
            return count or None
        return None


def resolve_sources(spec: str) -> list[Source]:
    """Classify SOURCE: a folder or a glob gives its images (one source) and each of its videos; a one-line
    InputError when it names nothing usable."""
    if spec.isdigit():
        return [Source("stream", video=int(spec))]
    if "://" in spec:
        return [_url_source(spec)]
    path = Path(spec).expanduser()
    if path.is_file():
        return [_file_source(path)]
    if path.is_dir():
        found = sorted(p for p in path.rglob("*") if p.suffix.lower() in MEDIA_EXTENSIONS and p.is_file())
        base = path
    elif glob.has_magic(spec):
        found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).suffix.lower() in MEDIA_EXTENSIONS)
        base = Path(os.path.commonpath([p.parent for p in found])) if found else None
    else:
        raise InputError(
            f"{spec}: no such file or folder (expected an image, a folder, a glob, a video, a camera index or a URL)"
        )
    images = tuple(p for p in found if p.suffix.lower() in IMAGE_EXTENSIONS)
    videos = [p for p in found if p.suffix.lower() in VIDEO_EXTENSIONS]
    if not found:
        what = "folder holds" if path.is_dir() else "pattern matches"
        heic = sum(1 for p in path.rglob("*") if p.suffix.lower() in HEIC_EXTENSIONS) if path.is_dir() else 0
        hint = f"; its {heic} HEIC photo(s) OpenCV cannot read: convert them to JPEG first" if heic else ""
        raise InputError(f"{spec}: {what} no images or videos ({', '.join(sorted(MEDIA_EXTENSIONS))}){hint}")
    return ([Source("images", images=images, base=base)] if images else []) + [
        Source("video", video=str(video), base=base) for video in videos
    ]


def url_file(url: str) -> PurePosixPath:
    """The file a URL names (its path, %-escapes undone): what predict names its outputs after."""
    return PurePosixPath(urllib.parse.unquote(urllib.parse.urlsplit(url).path))


def url_suffix(url: str) -> str:
    """The suffix of the file an http(s) URL names ('' for a camera's or a server's stream address)."""
    return url_file(url).suffix.lower() if urllib.parse.urlsplit(url).scheme in ("http", "https") else ""


def _url_source(url: str) -> Source:
    """An image URL is fetched (into a folder removed at exit) and read as that image; a video file's URL is read as
    a video (it has an end); any other URL is a stream (RTSP, a camera's HTTP feed, HLS)."""
    suffix = url_suffix(url)
    if suffix in VIDEO_EXTENSIONS:
        return Source("video", video=url)
    if suffix not in IMAGE_EXTENSIONS | HEIC_EXTENSIONS:
        return Source("stream", video=url)
    return _file_source(download_image(url))


def fetch_url(url: str) -> bytes:
    """What an image URL serves, or an InputError naming the URL."""
    try:
        with urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise InputError(
            f"{url}: cannot download ({reason}); check the address, or save the image and pass its path"
        ) from None


def download_image(url: str) -> Path:
    """An image URL's file, in a folder removed at exit and named as the URL names it (predict's outputs are)."""
    data = fetch_url(url)
    folder = Path(tempfile.mkdtemp(prefix="seglite-url-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = folder / url_file(url).name
    path.write_bytes(data)
    return path


def _file_source(path: Path) -> Source:
    """One file named on the command line: known by its suffix, else by its content, before any model is loaded
    (a PDF or a HEIC photo is named at once, not after minutes of backend trials)."""
    suffix = path.suffix.lower()
    if suffix in VIDEO_EXTENSIONS:
        return Source("video", video=str(path))
    if suffix in IMAGE_EXTENSIONS:
        return Source("images", images=(path,))
    if suffix in HEIC_EXTENSIONS:
        raise InputError(f"{path}: a HEIC photo, which OpenCV cannot read: convert it to JPEG first")
    if cv2.haveImageReader(str(path)):  # an image under another suffix
        return Source("images", images=(path,))
    capture = cv2.VideoCapture(str(path))
    try:
        if capture.isOpened() and capture.grab():  # a video FFmpeg reads under another suffix
            return Source("video", video=str(path))
    finally:
        capture.release()
    raise InputError(f"{path}: not an image or a video seglite reads ({', '.join(sorted(MEDIA_EXTENSIONS))})")


@contextlib.contextmanager
def quiet_stderr():
    """Silence native libraries that print to fd 2 (libpng decoding a damaged file, the ONNX exporter's graph dump)."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with open(os.devnull, "wb") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def as_bgr_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Accept gray, BGR, BGRA, 16-bit and float images (0-1 as skimage and torchvision give them, or 0-255); return
    HxWx3 uint8 BGR."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        shape = f"an array of shape {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise InputError(f"{name}: {shape}; expected an HxW or HxWxC image array (OpenCV's BGR), a path or a PIL image")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype.kind == "f":
        # A 0-1 float image cast as it is would be black (0 and 1 of 255): scale it.
        scale = 255.0 if np.nanmax(image) <= 1.0 else 1.0
        image = np.clip(np.nan_to_num(image) * scale + (0.5 if scale > 1 else 0.0), 0, 255).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = np.ascontiguousarray(image[:, :, :3])
    elif image.shape[2] != 3:
        raise InputError(f"{name}: {image.shape[2]} channels; expected 1, 3 or 4")
    return image


def to_image_bgr(image: object) -> np.ndarray:
    """What Python users hold as an image: an OpenCV BGR array, a file path or URL, or a PIL image (RGB) -> HxWx3
    uint8 BGR."""
    if isinstance(image, np.ndarray):
        return as_bgr_uint8(image)
    if isinstance(image, str) and "://" in image:
        return decode_image(np.frombuffer(fetch_url(image), np.uint8), image)
    if isinstance(image, str | Path):
        return read_image(Path(image))
    if type(image).__module__.startswith("PIL.") and hasattr(image, "convert"):
        if image.mode.startswith("I") or image.mode == "F":  # 16/32-bit grey, float: convert("RGB") clips at 255
            grey = np.asarray(image)
            if grey.dtype.kind in "iu" and grey.dtype != np.uint16 and grey.max(initial=0) > 255:
                grey = np.clip(grey, 0, 65535).astype(np.uint16)  # a 16-bit PNG as older Pillow opens it ("I")
            return as_bgr_uint8(grey)
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    if type(image).__module__.startswith("torch"):
        raise InputError(
            "image: a torch tensor; pass an HxWx3 BGR numpy array (tensor.permute(1, 2, 0).numpy() for a 3xHxW "
            "image, channels in BGR order), or a preprocessed batch to Segmenter.forward"
        )
    return as_bgr_uint8(image)


def read_image(path: Path) -> np.ndarray:
    """Any 8/16-bit grey, BGR or BGRA image as HxWx3 uint8 BGR, or an InputError naming the file."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return decode_image(data, path)


def decode_image(data: np.ndarray, path: str | Path) -> np.ndarray:
    """An image file's bytes as read_image reads them; `path` names it in errors."""
    with quiet_stderr():
        # Any depth and channel count, turned upright by its EXIF orientation as every viewer shows it (a phone's
        # portrait photo is stored sideways) and as training reads it; IMREAD_UNCHANGED would ignore the tag.
        image = cv2.imdecode(data, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR) if data.size else None
    if image is None:
        raise InputError(f"{path}: not a readable image (empty, truncated or not an image format)")
    if min(image.shape[:2]) < MIN_IMAGE_SIDE:
        raise InputError(
            f"{path}: {image.shape[1]}x{image.shape[0]} is too small to segment (at least "
            f"{MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels)"
        )
    return as_bgr_uint8(image, str(path))


def check_stream(source: Source) -> None:
    """Open a camera or stream once and let it go, so that a missing camera is named before the model's set-up (on
    a first run at a size, `--backend auto` may spend minutes timing and compiling backends for an endless source)."""
    if source.kind == "stream":
        capture, *_ = open_video(source.video)
        capture.release()


def open_video(video: str | int, decode_threads: int = 0) -> tuple[cv2.VideoCapture, float, tuple[int, int], int]:
    """(capture, fps, (W, H), frame count or 0 when unknown) or an InputError naming the video.

    `decode_threads` > 0 caps FFmpeg's decoding threads for a file (0: its default, one per core); its frame threads
    keep decoding in the background after each read."""
    if isinstance(video, str) and decode_threads > 0:
        capture = cv2.VideoCapture(video, cv2.CAP_ANY, [cv2.CAP_PROP_N_THREADS, decode_threads])
    else:
        capture = cv2.VideoCapture(video)
    if not capture.isOpened():
        if isinstance(video, int):
            raise InputError(f"camera {video}: cannot be opened (no such camera here, or another program uses it)")
        if "://" in video:
            raise InputError(
                f"{video}: cannot open the stream (check the address, and that the camera or server is on and "
                "reachable from here)"
            )
        raise InputError(f"{video}: cannot open as a video (empty, damaged, or no codec for it)")
    fps = capture.get(cv2.CAP_PROP_FPS) or 25.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if isinstance(video, str) else 0
    if size[0] <= 0 or size[1] <= 0:
        capture.release()
        raise InputError(f"{video}: video reports no frame size; is it damaged?")
    return capture, (fps if 0 < fps < 1000 else 25.0), size, max(count, 0)
