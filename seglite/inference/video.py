"""Pipelined video segmentation: a decode thread, batched inference, an encode thread, bounded queues.

Decoding, inference and encoding overlap instead of taking turns (OpenCV and PyTorch release the GIL),
and the queues are bounded so memory stays flat however long the video is. With `realtime` (the default for
cameras and streams) the decoder keeps only the newest frame (stale frames are dropped, so what is shown is now,
not seconds ago); otherwise every frame is segmented and written, in order.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import queue
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from seglite.errors import InputError, Interrupted, OutputError
from seglite.inference.outputs import render
from seglite.inference.sources import VIDEO_EXTENSIONS, open_video, url_suffix
from seglite.sharing import ThreadGovernor, in_streams, single_threaded_opencv

if TYPE_CHECKING:  # the Segmenter imports this module lazily (predict_video, stream): no import circle
    from seglite.inference.segmenter import Segmenter
    from seglite.inference.viewer import Viewer

STAGES = ("decode", "preprocess", "model", "postprocess", "encode")


class Turns:
    """On a CPU the model's threads take every core, and a thread that works beside them makes them wait on each
    other at every step (the model ran ~5-10 % slower beside decoding and encoding on 2 cores). So on a CPU the
    pipeline takes turns: decoding and encoding run only between model calls, beside the labels, and a model call
    waits for the pieces of them already started (end to end it measured a few points better than without, within
    this VM's noise). Off where the model runs elsewhere (CUDA) or for live sources (their newest frame is read at
    once)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._changed = threading.Condition()
        self._model_running = False
        self._side_work = 0

    @contextlib.contextmanager
    def model(self) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        with self._changed:
            self._changed.wait_for(lambda: self._side_work == 0)
            self._model_running = True
        try:
            yield
        finally:
            with self._changed:
                self._model_running = False
                self._changed.notify_all()

    @contextlib.contextmanager
    def side(self) -> Iterator[None]:
        """Decoding or encoding one frame: starts when the model is not running."""
        if not self.enabled:
            yield
            return
        with self._changed:
            self._changed.wait_for(lambda: not self._model_running)
            self._side_work += 1
        try:
            yield
        finally:
            with self._changed:
                self._side_work -= 1
                self._changed.notify_all()


VIDEO_FORMATS = ("overlay", "color")
_STAGE_LOCK = threading.Lock()
_END = object()


@dataclass
class VideoResult:
    frames_read: int = 0
    frames_written: int = 0
    frames_dropped: int = 0
    frames_held: int = 0  # video frames that repeat the last segmented one where frames were dropped
    expected_frames: int = 0
    fps: float = 0.0
    size: tuple[int, int] = (0, 0)
    seconds: float = 0.0
    streams: int = 1  # inference streams at once: 1 latency mode, more throughput mode
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    outputs: list[Path] = field(default_factory=list)

    def add(self, stage: str, seconds: float) -> None:
        """Time spent in a stage (summed over the streams in throughput mode). The lock is the module's: a result
        crosses processes under torchrun (pickled), and a lock cannot."""
        with _STAGE_LOCK:
            self.stage_seconds[stage] += seconds

    @property
    def truncated(self) -> bool:
        return self.expected_frames > 0 and self.frames_read < self.expected_frames

    @property
    def throughput(self) -> float:
        return self.frames_written / self.seconds if self.seconds else 0.0


class _Decoder(threading.Thread):
    """Reads and preprocesses frames into a bounded queue (or, for live sources, a one-slot 'latest frame' box)."""

    def __init__(
        self,
        capture: cv2.VideoCapture,
        preprocess,
        result: VideoResult,
        capacity: int,
        realtime: bool,
        turns: Turns | None = None,
    ):
        super().__init__(daemon=True, name="seglite-decode")
        self.capture, self.preprocess, self.result, self.realtime = capture, preprocess, result, realtime
        self.frames: queue.Queue = queue.Queue(maxsize=1 if realtime else capacity)
        self.stop = threading.Event()
        self.turns = turns or Turns(enabled=False)

    def run(self) -> None:
        index = 0
        try:
            while not self.stop.is_set():
                with self.turns.side():
                    start = time.perf_counter()
                    ok, frame = self.capture.read()
                    middle = time.perf_counter()
                    item = (index, frame, self.preprocess(frame)) if ok else None
                self.result.stage_seconds["decode"] += middle - start
                if not ok:
                    break
                self.result.frames_read += 1
                self.result.stage_seconds["preprocess"] += time.perf_counter() - middle
                if self.realtime:
                    try:  # replace a stale frame nobody took yet
                        self.frames.get_nowait()
                        self.result.frames_dropped += 1
                    except queue.Empty:
                        pass
                    self.frames.put(item)
                else:
                    self._put(item)
                index += 1
        finally:
            self.capture.release()
            self._put(_END)

    def _put(self, item) -> None:
        """Queue an item, unless the consumer has stopped taking them (Ctrl-C, a closed window): a full queue then
        never drains, and a plain put would hold this thread, and the join after it, for good."""
        while not self.stop.is_set():
            try:
                self.frames.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


def _decode_threads(segmenter: Segmenter) -> int:
    """One on a CPU: FFmpeg's frame threads would go on decoding during the model's turn (see Turns)."""
    return 1 if segmenter.device.type == "cpu" else 0


def iter_batches(
    segmenter: Segmenter,
    video: str | int,
    batch: int = 1,
    realtime: bool | None = None,
    result: VideoResult | None = None,
    opened: tuple | None = None,
    turns: Turns | None = None,
    streams: int = 1,
) -> Iterator[tuple[list[int], list[np.ndarray], Callable[[], np.ndarray]]]:
    """Decode in a thread and yield (frame indices, frames, labels()) batch by batch; labels() returns the trainId maps.

    On a CPU the labels are made here, between model calls, not in a thread beside the model: they then share the
    model's idle threads instead of taking a core from it (the model's threads wait on each other when one lacks a
    core), and the queue to the encoder holds small label maps, not logits. On CUDA whoever calls labels() makes
    them (the encode thread), so the next batch's model call overlaps them.

    `streams` > 1 (throughput mode, CPU, offline sources; see throughput_streams): that many batches run at once, each
    on its share of the threads, and come out in order."""
    realtime = is_live(video) if realtime is None else realtime
    capture, fps, size, count = opened or open_video(video, _decode_threads(segmenter))
    result = result if result is not None else VideoResult()
    result.fps, result.size, result.expected_frames = fps, size, count
    streams = result.streams = streams if segmenter.device.type == "cpu" and not realtime else 1
    turns = turns or Turns(segmenter.device.type == "cpu" and not realtime and streams == 1)
    decoder = _Decoder(capture, segmenter.prepare, result, 2 * batch * streams + 2, realtime, turns)
    decoder.start()
    # other programs may start meanwhile; with one thread a stream no thread waits on another (see seglite.sharing)
    governor = ThreadGovernor() if segmenter.device.type == "cpu" and streams == 1 else None
    infer = functools.partial(_infer, segmenter, result, turns)
    with single_threaded_opencv(segmenter.device.type == "cpu"):
        try:
            if streams == 1:
                for items in _gather(decoder, batch, realtime):
                    out = infer(items)
                    if governor is not None:
                        governor.poll()
                    yield out
            else:
                yield from in_streams(infer, _gather(decoder, batch, realtime), streams)
        finally:
            decoder.stop.set()
            decoder.join(timeout=5)


def _gather(decoder: _Decoder, batch: int, realtime: bool) -> Iterator[list[tuple]]:
    """The decoder's (index, frame, input) items in lists of up to `batch` (fewer at the end, or when a live source
    has no newer frame yet)."""
    while True:
        item = decoder.frames.get()
        if item is _END:
            return
        items = [item]
        while len(items) < batch:
            try:
                nxt = decoder.frames.get(timeout=0.5 if not realtime else 0.0)
            except queue.Empty:
                break
            if nxt is _END:
                yield items
                return
            items.append(nxt)
        yield items


def _infer(
    segmenter: Segmenter, result: VideoResult, turns: Turns, items: list[tuple]
) -> tuple[list[int], list[np.ndarray], Callable[[], np.ndarray]]:
    indices = [i for i, _, _ in items]
    frames = [f for _, f, _ in items]
    start = time.perf_counter()
    with turns.model():
        logits, left_out = segmenter.forward_for_labels(segmenter.stack([t for _, _, t in items]))
        if segmenter.device.type == "cuda":
            torch.cuda.synchronize()
    result.add("model", time.perf_counter() - start)
    labels = functools.partial(_labels, segmenter, logits, left_out, frames[0].shape[:2], result)
    if segmenter.device.type == "cpu":
        labels = functools.partial(_made, labels())
    return indices, frames, labels


def is_live(video: str | int) -> bool:
    """A camera index or a stream URL: its frames come in real time, so one stream answers each at once. A video
    file's URL has an end: it is read as a file is."""
    return isinstance(video, int) or ("://" in video and url_suffix(video) not in VIDEO_EXTENSIONS)


def throughput_streams(segmenter: Segmenter, live: bool) -> int:
    """How many inference streams an offline source (a video file, images, eval) runs: what `--backend auto` measured
    to pay on this CPU for this network (two 1-thread calls at once against one 2-thread call:
    seglite.inference.autotune), else one; never more than this process's threads (a torchrun rank or a busy machine
    may have one). Live sources, --realtime and CUDA: one (each frame answered at once)."""
    if live or segmenter.device.type != "cpu":
        return 1
    return max(1, min(segmenter.runtime.streams, torch.get_num_threads()))


def offline_streams(segmenter: Segmenter, requested: int | None, batches: int) -> int:
    """Streams for `batches` batches of images (predict, eval): `requested`, or throughput_streams where None, never
    more than there are batches (a lone image keeps every thread); one off the CPU."""
    if segmenter.device.type != "cpu":
        return 1
    chosen = requested if requested is not None else throughput_streams(segmenter, live=False)
    return max(1, min(chosen, batches))


def iter_frames(
    segmenter: Segmenter, video: str | int, batch: int = 1, realtime: bool | None = None
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(frame index, BGR frame, trainId map at the frame's size) for every frame, or the newest ones when realtime
    (None: for a camera or a stream)."""
    for indices, frames, labels in iter_batches(segmenter, video, batch, realtime):
        yield from zip(indices, frames, labels(), strict=True)


def _labels(
    segmenter: Segmenter, logits: torch.Tensor, left_out: list, size: tuple[int, int], result: VideoResult
) -> np.ndarray:
    start = time.perf_counter()
    labels = segmenter.labels_from_logits(logits, size, left_out)
    result.add("postprocess", time.perf_counter() - start)
    return labels


def _made(labels: np.ndarray) -> np.ndarray:
    return labels


def _shown(viewer: Viewer, segmenter: Segmenter, item: tuple, alpha: float) -> tuple:
    """Show the batch's last overlay; its labels are made here, once (on CUDA the encode thread would make them)."""
    indices, frames, labels = item
    made = labels()
    viewer.show(render("overlay", frames[-1], made[-1], alpha, segmenter.palette_lut))
    return indices, frames, functools.partial(_made, made)


class _Encoder(threading.Thread):
    """Renders and writes batches (making their labels first where the main thread left them: CUDA), so inference
    never waits on I/O."""

    def __init__(
        self,
        segmenter: Segmenter,
        writers: dict[str, cv2.VideoWriter],
        mask_dirs: dict[str, Path],
        alpha: float,
        result: VideoResult,
        on_frames: Callable[[int], None] | None,
        turns: Turns,
    ):
        super().__init__(daemon=True, name="seglite-encode")
        self.turns = turns
        self.segmenter, self.writers, self.mask_dirs, self.alpha = segmenter, writers, mask_dirs, alpha
        self.result, self.on_frames = result, on_frames
        self.batches: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.last: tuple[int, dict[str, np.ndarray]] | None = None  # the last frame's index and rendered images

    def run(self) -> None:
        while (item := self.batches.get()) is not _END:
            if self.error is not None:
                continue  # drain so the producer never blocks
            try:
                self._write(*item)
            except BaseException as exc:  # surfaced in the main thread after join
                self.error = exc

    def _write(self, indices: list[int], frames: list[np.ndarray], labels: Callable[[], np.ndarray]) -> None:
        for index, frame, train_ids in zip(indices, frames, labels(), strict=True):
            with self.turns.side():
                start = time.perf_counter()
                rendered = {
                    fmt: render(fmt, frame, train_ids, self.alpha, self.segmenter.palette_lut) for fmt in self.writers
                }
                # Frames dropped since the last one (a live source): it is held for them, so the video keeps time.
                held = index - self.last[0] - 1 if self.last is not None and rendered else 0
                for fmt, writer in self.writers.items():
                    for image in ([self.last[1][fmt]] * held if held else []) + [rendered[fmt]]:
                        writer.write(image)
                self.result.frames_held += held
                self.last = (index, rendered)
                for fmt, folder in self.mask_dirs.items():
                    cv2.imwrite(
                        str(folder / f"{index:06d}.png"),
                        render(fmt, frame, train_ids, self.alpha, self.segmenter.palette_lut),
                    )
                self.result.stage_seconds["encode"] += time.perf_counter() - start
        self.result.frames_written += len(indices)
        if self.on_frames:
            self.on_frames(len(indices))


def segment_video(
    segmenter: Segmenter,
    video: str | int,
    out_dir: Path,
    stem: str,
    formats: tuple[str, ...] = ("overlay",),
    batch: int = 1,
    alpha: float = 0.5,
    realtime: bool | None = None,
    on_start: Callable[[VideoResult], None] | None = None,
    on_frames: Callable[[int], None] | None = None,
    streams: int | None = None,
    viewer: Viewer | None = None,
) -> VideoResult:
    """Segment a video into `<stem>_<format>.mp4` (overlay/color) and `<stem>_<format>/` PNG folders (masks).
    `streams`: inference streams (None: throughput_streams decides; 1 is latency mode). `viewer`: shows each batch's
    last overlay; closing it ends a camera or stream like its end, and stops a video file like Ctrl-C."""
    result = VideoResult()
    realtime = is_live(video) if realtime is None else realtime  # a camera's newest frame, not one seconds old
    if streams is None:
        streams = throughput_streams(segmenter, live=realtime or is_live(video))
    opened = open_video(video, _decode_threads(segmenter))
    _, fps, size, count = opened
    writers: dict[str, cv2.VideoWriter] = {}
    mask_dirs: dict[str, Path] = {}
    partial: dict[str, Path] = {}
    for fmt in formats:
        if fmt in VIDEO_FORMATS:
            path = out_dir / f"{stem}_{fmt}.mp4"
            # Written under a name that says it is incomplete, unique to this process (two runs on one output never
            # share it); renamed only once checked (see _finish_videos).
            partial[fmt] = unique_partial(path)
            writer = cv2.VideoWriter(str(partial[fmt]), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
            if not writer.isOpened():
                opened[0].release()
                raise InputError(f"{path}: cannot write an mp4 there")
            writers[fmt] = writer
            result.outputs.append(path)
        else:
            folder = out_dir / f"{stem}_{fmt}"
            mask_dirs[fmt] = unique_partial(folder)  # renamed to `folder` when every frame is in
            mask_dirs[fmt].mkdir(parents=True, exist_ok=True)
            result.outputs.append(folder)
    turns = Turns(segmenter.device.type == "cpu" and not realtime and streams == 1)
    encoder = _Encoder(segmenter, writers, mask_dirs, alpha, result, on_frames, turns)
    encoder.start()
    start = time.perf_counter()
    interrupted = window_closed = False
    batches = iter_batches(segmenter, video, batch, realtime, result, opened, turns, streams)
    try:
        if on_start:
            result.expected_frames = count
            on_start(result)
        for item in batches:
            if viewer is not None:
                item = _shown(viewer, segmenter, item, alpha)
            encoder.batches.put(item)
            if encoder.error is not None:
                break
            if viewer is not None and viewer.closed:
                window_closed = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        batches.close()  # stops the decoder at once where the loop ended early
        encoder.batches.put(_END)
        encoder.join()
        for writer in writers.values():
            writer.release()
        result.seconds = time.perf_counter() - start
    # A camera or stream has no end of its own: where it is stopped (Ctrl-C, the window), its recording is whole.
    whole = is_live(video) and result.frames_written > 0 and encoder.error is None
    if (interrupted or window_closed) and not whole:
        kept = [_keep_partial(p) for p in [*partial.values(), *mask_dirs.values()]]
        why = "by closing the window " if window_closed else ""
        raise Interrupted(f"{why}after {result.frames_written} frame(s); kept {', '.join(map(str, kept))} (incomplete)")
    if encoder.error is not None:
        _remove(partial.values())
        for folder in mask_dirs.values():
            shutil.rmtree(folder, ignore_errors=True)
        raise encoder.error
    _finish_videos(partial, result.outputs, result.frames_written + result.frames_held)
    for fmt, folder in mask_dirs.items():
        _replace_folder(folder, out_dir / f"{stem}_{fmt}")
    if interrupted:  # still 130: the run was stopped, not finished
        raise Interrupted(
            f"after {result.frames_written} frame(s) of {video}; wrote {', '.join(map(str, result.outputs))} "
            "(a camera or stream ends where it is stopped)"
        )
    return result


def unique_partial(final: Path) -> Path:
    """`clip_overlay.mp4` -> `clip_overlay.partial-<pid>-<random>.mp4`: says it is incomplete, keeps the suffix
    the encoder reads, and is this process's alone."""
    base, ext = (final.name[:-4], ".mp4") if final.name.endswith(".mp4") else (final.name, "")
    return final.with_name(f"{base}.partial-{os.getpid()}-{secrets.token_hex(3)}{ext}")


def _keep_partial(path: Path) -> Path:
    """After Ctrl-C: the incomplete output under the stable name `NAME.partial.mp4` (or folder `NAME.partial`)."""
    stable = path.with_name(re.sub(r"\.partial-\d+-[0-9a-f]+", ".partial", path.name))
    if stable.is_dir():
        shutil.rmtree(stable, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.replace(path, stable)
        return stable
    return path


def _replace_folder(done: Path, final: Path) -> None:
    """Give a complete folder its final name. An earlier one there (the user passed --exist-ok, or another run
    finished first) is moved aside and removed: the later rename wins, and no frame of two runs is mixed."""
    while True:
        try:
            os.replace(done, final)
            return
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST, errno.EISDIR, errno.ENOTDIR):
                raise
            aside = final.with_name(f".{final.name}.old-{os.getpid()}-{secrets.token_hex(3)}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(final, aside)
            shutil.rmtree(aside, ignore_errors=True)


def _remove(paths) -> None:
    for path in paths:
        Path(path).unlink(missing_ok=True)


def _finish_videos(partial: dict[str, Path], outputs: list[Path], frames: int) -> None:
    """Check each written video holds every frame (a full disk or a failing codec leaves a file without its index,
    which OpenCV only warns about), then give it its final name; otherwise remove it and fail."""
    for path in partial.values():
        capture = cv2.VideoCapture(str(path))
        readable = capture.isOpened()
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if readable else 0
        capture.release()
        if not readable or count != frames:
            _remove(partial.values())
            free = shutil.disk_usage(path.parent).free
            raise OutputError(
                f"{next(p for p in outputs if p.suffix == '.mp4' and path.name.startswith(p.stem + '.partial'))}: "
                "the video could not be written completely "
                f"({count} of {frames} frames readable; {free / 1e6:.0f} MB free on that disk); nothing was kept"
            )
    for fmt, path in partial.items():
        final = next(p for p in outputs if p.name.endswith(f"_{fmt}.mp4"))
        os.replace(path, final)
