"""`seglite predict` as a Python function: route a SOURCE to the image or the video path."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from seglite.errors import InputError, Interrupted, OutputError, SegliteError
from seglite.files import choose_output, prepare_output_folder
from seglite.inference.outputs import output_name, render, write_outputs
from seglite.inference.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, Source, read_image, resolve_sources
from seglite.inference.video import (
    VIDEO_FORMATS,
    VideoResult,
    offline_streams,
    segment_video,
)
from seglite.sharing import in_streams, single_threaded_opencv

if TYPE_CHECKING:  # for annotations only: inference modules import the Segmenter, never the reverse
    from seglite.inference.segmenter import Segmenter
    from seglite.inference.viewer import Viewer

DEFAULT_OUT = "outputs/predict"


@dataclass
class ImageRun:
    written: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one line per input that could not be processed
    processed: int = 0
    streams: int = 1  # inference streams it ran in
    view: tuple[np.ndarray, np.ndarray] | None = None  # the last (image, trainIds), for a viewer

    def add(self, other: ImageRun) -> None:
        self.written += other.written
        self.failures += other.failures
        self.processed += other.processed


def predict_images(
    segmenter: Segmenter,
    images: tuple[Path, ...],
    out_dir: Path,
    formats: tuple[str, ...],
    alpha: float = 0.5,
    batch: int = 1,
    on_image: Callable[[Path], None] | None = None,
    source: Source | None = None,
    streams: int | None = 1,
    viewer: Viewer | None = None,
) -> ImageRun:
    """Segment images in batches; a bad file is reported and skipped, the rest still run. Outputs keep each
    image's folder below the source folder (`source.output_stem`), so equal file names never overwrite.
    `streams` > 1 (CPU): that many batches at once, each on its share of the threads, so one image's reading and
    encoding overlap another's model instead of following it (None: as many as a video file gets; see
    offline_streams). `viewer`: shows each overlay as it is written; closing it stops the run like Ctrl-C."""
    run = ImageRun()
    prepare_output_folder(out_dir)

    def tick(path: Path) -> None:
        if on_image:
            on_image(path)

    def segment(items: list[tuple[Path, np.ndarray]]) -> ImageRun:
        """One batch's outputs and failures (a batch that fails runs again image by image, to find the bad one)."""
        part = ImageRun()
        try:
            labels = segmenter.predict_batch([image for _, image in items])
        except (SegliteError, RuntimeError, cv2.error) as exc:
            if len(items) > 1:
                for item in items:
                    part.add(segment([item]))
            else:
                part.failures.append(f"{items[0][0]}: {str(exc).splitlines()[0][:200]}")
            return part
        for (path, image), train_ids in zip(items, labels, strict=True):
            stem = source.output_stem(path) if source is not None else path.stem
            try:
                (out_dir / stem).parent.mkdir(parents=True, exist_ok=True)
                part.written += write_outputs(
                    out_dir, stem, image, train_ids, formats, alpha, segmenter.palette_lut, path.suffix
                )
                part.processed += 1
                part.view = (image, train_ids) if viewer is not None else None
            except OutputError:
                raise
            except (SegliteError, cv2.error) as exc:
                part.failures.append(f"{path}: {str(exc).splitlines()[0][:200]}")
        return part

    def batches() -> Iterator[list[tuple[Path, np.ndarray]]]:
        pending: list[tuple[Path, np.ndarray]] = []
        for path in images:
            try:
                image = read_image(path)
            except InputError as exc:
                run.failures.append(str(exc))
                tick(path)
                continue
            if pending and image.shape != pending[0][1].shape:
                yield pending
                pending = []
            pending.append((path, image))
            if len(pending) >= batch:
                yield pending
                pending = []
        if pending:
            yield pending

    def paths_and_outcome(items: list[tuple[Path, np.ndarray]]) -> tuple[list[Path], ImageRun]:
        return [path for path, _ in items], segment(items)

    streams = run.streams = offline_streams(segmenter, streams, -(-len(images) // batch))
    outcomes = map(paths_and_outcome, batches()) if streams == 1 else in_streams(paths_and_outcome, batches(), streams)
    with single_threaded_opencv(streams > 1):  # as in the video pipeline: the streams are the parallelism
        for paths, part in outcomes:
            run.add(part)
            for path in paths:
                tick(path)
            if viewer is not None and part.view is not None:
                viewer.show(render("overlay", *part.view, alpha, segmenter.palette_lut))
                if viewer.closed:
                    raise Interrupted(
                        f"by closing the window after {run.processed} of {len(images)} image(s); their outputs are in {out_dir}"
                    )
    return run


def predict_video(
    segmenter: Segmenter,
    source: Source,
    out_dir: Path,
    formats: tuple[str, ...],
    alpha: float = 0.5,
    batch: int = 1,
    realtime: bool | None = None,
    on_start=None,
    on_frames=None,
    streams: int | None = None,
    viewer: Viewer | None = None,
) -> VideoResult:
    stem = source.video_stem()
    prepare_output_folder((out_dir / stem).parent)  # a video in a folder's sub-folder keeps it under out_dir
    video = source.video
    result = segment_video(
        segmenter,
        video,
        out_dir,
        stem,
        formats=formats,
        batch=batch,
        alpha=alpha,
        realtime=realtime,
        on_start=on_start,
        on_frames=on_frames,
        streams=streams,
        viewer=viewer,
    )
    if result.frames_read == 0:
        raise SegliteError(f"{video}: no frame could be decoded (empty or damaged video)")
    return result


def planned_outputs(source: Source, out_dir: Path, formats: tuple[str, ...]) -> list[Path]:
    """Every file or folder `predict` will write for `source`: checked before the model loads, so an earlier
    result is never replaced unless the user asks (`--exist-ok`)."""
    if source.kind == "images":
        return [
            out_dir / output_name(source.output_stem(path), fmt, path.suffix)
            for path in source.images
            for fmt in formats
        ]
    stem = source.video_stem()
    return [out_dir / (f"{stem}_{fmt}.mp4" if fmt in VIDEO_FORMATS else f"{stem}_{fmt}") for fmt in formats]


def choose_output_folder(
    sources: Sequence[Source], out_dir: Path | None, formats: tuple[str, ...], exist_ok: bool
) -> Path:
    """`--out` given: refuse (one line) if any output already exists, unless `exist_ok`. Not given: the default
    folder, or `outputs/predict2`, `3`, ... where the default holds outputs of these inputs (Ultralytics' rule)."""
    if out_dir is not None and out_dir.suffix.lower() in IMAGE_EXTENSIONS | VIDEO_EXTENSIONS and not out_dir.is_dir():
        raise InputError(
            f"--out {out_dir}: names a folder, not a file; each input's outputs go into it named after the input "
            f"(<name>_overlay.png, <name>_overlay.mp4, ...): pass a folder, e.g. --out {out_dir.with_suffix('')}"
        )
    return choose_output(
        out_dir,
        Path(DEFAULT_OUT),
        lambda folder: [p for p in sources_outputs(sources, folder, formats) if p.exists()],
        exist_ok,
    )


LIST_SUFFIXES = {".txt", ".lst"}  # a file that lists SOURCES, one per line


def expand_sources(specs: Sequence[str]) -> list[Source]:
    """SOURCES of `seglite predict`: images, folders, globs, videos, URLs and list files of those (one per line,
    paths relative to the list's folder; `#` comments). A camera or stream is live and endless: it must be the only
    source."""
    sources: list[Source] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            lines = [line.strip() for line in path.read_text().splitlines()]
            entries = [line for line in lines if line and not line.startswith("#")]
            if not entries:
                raise InputError(f"{path}: the list names no images or videos")
            named = [entry if "://" in entry else str(path.parent / entry) for entry in entries]  # URLs as they are
            sources += [source for entry in named for source in resolve_sources(entry)]
        else:
            sources += resolve_sources(spec)
    if len(sources) > 1 and any(source.kind == "stream" for source in sources):
        raise InputError("a camera or stream is segmented on its own: pass it as the only SOURCE")
    return sources


@dataclass(frozen=True)
class WorkUnit:
    """One image, or one whole video (never split: its frames are one output file)."""

    source: int  # index into the sources
    image: Path | None = None


def work_units(sources: Sequence[Source]) -> list[WorkUnit]:
    return [
        unit
        for index, source in enumerate(sources)
        for unit in (
            [WorkUnit(index, image) for image in source.images] if source.kind == "images" else [WorkUnit(index)]
        )
    ]


def unit_outputs(sources: Sequence[Source], unit: WorkUnit, out_dir: Path, formats: tuple[str, ...]) -> list[Path]:
    source = sources[unit.source]
    if unit.image is not None:
        source = Source("images", images=(unit.image,), base=source.base)
    return planned_outputs(source, out_dir, formats)


def check_distinct_outputs(sources: Sequence[Source], out_dir: Path, formats: tuple[str, ...]) -> None:
    """Two inputs that would write one output name (x.png in two SOURCES) are refused before any work."""
    owner: dict[Path, WorkUnit] = {}
    for unit in work_units(sources):
        for path in unit_outputs(sources, unit, out_dir, formats):
            if path in owner:
                first = owner[path].image or sources[owner[path].source].video
                second = unit.image or sources[unit.source].video
                raise InputError(
                    f"{first} and {second} would both write {path.name}: pass their common folder as one SOURCE "
                    "(outputs then keep the sub-folders) or run them with different --out"
                )
            owner[path] = unit


def sources_outputs(sources: Sequence[Source], out_dir: Path, formats: tuple[str, ...]) -> list[Path]:
    return [p for u in work_units(sources) for p in unit_outputs(sources, u, out_dir, formats)]


@dataclass
class PredictRun:
    """What one process did; gathered from every rank under torchrun (so it is plain, picklable data)."""

    images: int = 0  # images given to this process
    processed: int = 0
    written: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)  # one line per input that could not be processed
    videos: list[VideoResult] = field(default_factory=list)
    seconds: float = 0.0
    image_seconds: float = 0.0  # the images' share of `seconds`
    image_streams: int = 1


def predict_units(
    segmenter: Segmenter,
    sources: Sequence[Source],
    units: Sequence[WorkUnit],
    out_dir: Path,
    formats: tuple[str, ...],
    alpha: float = 0.5,
    batch: int = 1,
    realtime: bool | None = None,
    on_image: Callable[[Path], None] | None = None,
    on_start=None,
    on_frames=None,
    streams: int | None = None,
    viewer: Viewer | None = None,
) -> PredictRun:
    """Segment these units (this rank's shard): images batched per source, each video whole. A bad input is a
    line in `failures` and the others still run; a failure of the machine (OutputError), Ctrl-C or closing the
    `viewer` (the window of `--show`) ends the run."""
    run, start = PredictRun(), time.perf_counter()
    images: dict[int, list[Path]] = {}
    for unit in units:
        if unit.image is not None:
            images.setdefault(unit.source, []).append(unit.image)
    for index, paths in images.items():
        part = predict_images(
            segmenter,
            tuple(paths),
            out_dir,
            formats,
            alpha,
            batch,
            on_image=on_image,
            source=sources[index],
            streams=streams,  # None: as many as a video file gets
            viewer=viewer,
        )
        run.images += len(paths)
        run.image_seconds = time.perf_counter() - start
        run.image_streams = max(run.image_streams, part.streams)
        run.processed += part.processed
        run.written += part.written
        run.failures += part.failures
    for unit in units:
        if unit.image is not None:
            continue
        source = sources[unit.source]
        try:
            result = predict_video(
                segmenter,
                source,
                out_dir,
                formats,
                alpha,
                batch,
                realtime,
                on_start=on_start,
                on_frames=on_frames,
                streams=streams,
                viewer=viewer,
            )
        except SegliteError as exc:
            if exc.exit_code != 2:  # the machine's failure (1) or Ctrl-C (130) ends the run
                raise
            run.failures.append(str(exc))
            continue
        run.videos.append(result)
        run.written += result.outputs
        if result.truncated:
            run.failures.append(
                f"{source.video}: video ends after {result.frames_read} of {result.expected_frames} frames "
                f"(damaged?); the {result.frames_written} decoded frames were written to {out_dir}"
            )
    run.seconds = time.perf_counter() - start
    return run
