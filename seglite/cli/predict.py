"""`seglite predict`."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from seglite.cli.common import (
    RunnableWeightsOption,
    _join_run,
    _on_main,
    _segmenter,
    app,
    console,
    err_console,
)
from seglite.errors import InputError


@app.command("predict")
def predict_cmd(
    source: Annotated[
        list[str],
        typer.Argument(
            help="Images, folders, globs, video files, .txt lists of those; or one camera index (0) or stream URL.",
            show_default=False,
        ),
    ],
    model: Annotated[str | None, typer.Option("--model", help="Model name (default: the zoo's ESPNetv2 s2.0).")] = None,
    weights: RunnableWeightsOption = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps (Apple GPU, untested).")] = "auto",
    size: Annotated[str | None, typer.Option(help="Network input WxH (default: the weights' own).")] = None,
    half: Annotated[bool, typer.Option("--half", help="fp16 on CUDA, bf16 on a CPU with bf16 instructions.")] = False,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile the network (slow first frame, faster after).")
    ] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="CPU: the INT8 model accepted by `seglite quantize` for these weights.")
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            help="auto (CPU: fastest of torch, onnx, openvino, torch.compile where it pays; measured once), torch, onnx or openvino."
        ),
    ] = "auto",
    formats: Annotated[str, typer.Option("--format", help="overlay,color,trainid,labelid")] = "overlay",
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Overlay opacity.")] = 0.5,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder (default: outputs/predict, or predict2, ... where it holds outputs of these inputs).",
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Images or frames per forward pass.")] = 1,
    realtime: Annotated[
        bool | None,
        typer.Option(
            "--realtime/--no-realtime",
            help="Drop stale frames: segment the newest (default for cameras and streams; --no-realtime queues them).",
            show_default=False,
        ),
    ] = None,
    show: Annotated[
        bool,
        typer.Option(
            "--show",
            help="Show each overlay in a window as it is made (q, Esc or closing it stops; a camera's recording is then "
            "complete). Needs a display and Python's Tk.",
        ),
    ] = False,
    streams: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Images and video files on a CPU: frames segmented at once, each on its share of the threads "
            "(default: 2 where --backend auto measured that it pays for this network on this CPU, else 1; cameras, "
            "streams and --realtime: 1).",
            show_default=False,
        ),
    ] = None,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", "--overwrite", help="Replace outputs of an earlier run in --out.")
    ] = False,
) -> None:
    """Segment images, folders, videos, cameras or streams; write overlays and masks named after each input.

    Under torchrun the inputs are shared out by rank (each image, or each whole video, on one process)."""
    from seglite.distributed import cleanup, gather_objects, shard
    from seglite.inference.outputs import check_formats, parse_formats
    from seglite.inference.predict import (
        check_distinct_outputs,
        choose_output_folder,
        expand_sources,
        predict_units,
        work_units,
    )
    from seglite.inference.sources import check_stream
    from seglite.inference.viewer import Viewer
    from seglite.models.registry import get_spec

    fmt = parse_formats(formats)
    sources = expand_sources(source)
    dist, device = _join_run(device)
    if show and dist.world_size > 1:
        raise InputError("--show shows one process's frames: drop it under torchrun")
    # Rank 0 alone decides the folder (another rank deciding later could see rank 0's first outputs).
    out = _on_main(dist, lambda: choose_output_folder(sources, out, fmt, exist_ok))
    check_distinct_outputs(sources, out, fmt)
    units = shard(work_units(sources), dist)
    for unit in units:
        check_stream(sources[unit.source])
    if weights is None and model is not None and dist.is_main:  # neither: the Segmenter runs DEFAULT_WEIGHTS
        get_spec(model)  # an unknown name is the error to report, not the random weights
        err_console.print(f"warning: no --weights: {model} is randomly initialised, its predictions mean nothing")
    frames = _expected_frames(sources, units)
    viewer = Viewer(f"seglite predict {' '.join(source)}") if show else None  # no display: said before the model loads
    started = time.perf_counter()
    segmenter = _segmenter(model, weights, device, size, half, backend, int8=int8, compile=compile, frames=frames)
    set_up = time.perf_counter() - started
    check_formats(fmt, segmenter.loaded.classes, segmenter.loaded.dataset_name)
    if dist.is_main:
        err_console.print(
            f"{segmenter.model_name} ({segmenter.loaded.source}) on {segmenter.device}, backend "
            f"{segmenter.backend} ({segmenter.backend_reason}), input {segmenter.preprocess.size or 'native size'}"
            + (f"; set-up took {set_up:.0f} s (not in the FPS below)" if set_up >= 2 else "")
            + (f"; {dist.world_size} processes share the inputs" if dist.world_size > 1 else ""),
        )
    try:
        images = sum(unit.image is not None for unit in units)
        with _predict_progress(dist.is_main, images) as (on_image, on_start, on_frames):
            run = predict_units(
                segmenter,
                sources,
                units,
                out,
                fmt,
                alpha=alpha,
                batch=batch,
                realtime=realtime,
                streams=streams,
                on_image=on_image,
                on_start=on_start,
                on_frames=on_frames,
                viewer=viewer,
            )
        if viewer is not None and run.images and not run.videos and not viewer.closed:
            err_console.print("showing the last image: close its window (or press q) to finish")
            viewer.hold()  # an image would otherwise only flash by
    finally:
        if viewer is not None:
            viewer.close()
    runs = gather_objects(run, dist)
    cleanup(dist)
    failed = any(r.failures for r in runs)
    if dist.is_main:
        _print_predict_summary(runs, out)
    if failed:
        sys.exit(2)


def _expected_frames(sources, units) -> int | None:
    """Frames this process will segment (None if a source does not say): what `--backend auto` weighs a compile
    against."""
    total = 0
    for unit in units:
        if unit.image is not None:
            total += 1
            continue
        count = sources[unit.source].expected_frames()
        if count is None:
            return None
        total += count
    return total


@contextlib.contextmanager
def _predict_progress(show: bool, images: int | None = None):
    """Progress callbacks for images (`images` of them) and video frames (rank 0 only under torchrun)."""
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

    from seglite.progress import Progress

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True, disable=not show) as progress:
        tasks: dict = {}

        def on_image(_) -> None:
            if "images" not in tasks:
                tasks["images"] = progress.add_task("images", total=images or None, rate="")
            progress.advance(tasks["images"])

        def on_start(result) -> None:
            tasks["frames"] = progress.add_task("frames", total=result.expected_frames or None, rate="")
            tasks["t"] = time.perf_counter()

        def on_frames(n: int) -> None:
            progress.advance(tasks["frames"], n)
            done = progress.tasks[tasks["frames"]].completed
            progress.update(tasks["frames"], rate=f"{done / max(1e-9, time.perf_counter() - tasks['t']):.1f} FPS")

        yield on_image, on_start, on_frames


def _print_predict_summary(runs: list, out: Path) -> None:
    """Rank 0: every rank's failures once, the images line, each video (the stage table for a lone video)."""
    for failure in (f for r in runs for f in r.failures):
        err_console.print(f"error: {failure}", highlight=False)
    images = sum(r.images for r in runs)
    videos = [v for r in runs for v in r.videos]
    if images:
        processed = sum(r.processed for r in runs)
        written = sum(len(r.written) for r in runs) - sum(len(v.outputs) for v in videos)
        seconds = max(r.image_seconds for r in runs)
        streams = f", {runs[0].image_streams} streams" if runs[0].image_streams > 1 else ""
        console.print(
            f"{processed} of {images} image(s) segmented; {written} file(s) written to {out} "
            f"({seconds:.1f} s, {processed / max(seconds, 1e-9):.2f} images/s{streams})",
        )
    if len(videos) == 1 and len(runs) == 1 and not images:
        _print_video_summary(videos[0], out)
    else:
        for video in videos:
            for path in video.outputs:
                console.print(f"wrote {path} ({video.frames_written} frames, {video.throughput:.2f} FPS)")
    if len(runs) > 1:
        seconds = max(r.seconds for r in runs)
        frames = images + sum(v.frames_written for v in videos)
        console.print(
            f"{len(runs)} processes: {frames} image(s)/frame(s) in {seconds:.1f} s = {frames / max(seconds, 1e-9):.2f} "
            f"per second ({', '.join(f'rank {i}: {r.images} image(s), {len(r.videos)} video(s)' for i, r in enumerate(runs))})",
        )


def _print_video_summary(result, out: Path) -> None:
    table = Table(
        title=f"{result.frames_written} frames in {result.seconds:.1f} s = {result.throughput:.2f} FPS "
        f"end to end" + (f", {result.frames_dropped} stale frames dropped" if result.frames_dropped else "")
    )
    table.add_column("stage")
    table.add_column("total s", justify="right")
    table.add_column("ms / frame", justify="right")
    for stage, seconds in result.stage_seconds.items():
        table.add_row(stage, f"{seconds:.2f}", f"{1000 * seconds / max(1, result.frames_written):.1f}")
    console.print(table)
    if result.streams > 1:
        console.print(
            f"threads: decode+preprocess | {result.streams} streams of model+postprocess, each on its share of the "
            "threads (model and postprocess: summed over the streams) | encode"
        )
    else:
        console.print(
            "threads: decode+preprocess | model+postprocess (on CUDA: postprocess with encode) | encode; on a CPU "
            "decode and encode run between model calls, so the model stage includes waiting for them"
        )
    for path in result.outputs:
        console.print(f"wrote {path}")
