"""`seglite data get|synth|check|stats`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import DownloadColumn
from rich.table import Table

from seglite.cli.common import (
    DataOption,
    DataRootOption,
    _dataset,
    console,
    data_app,
    err_console,
    print_rows,
)
from seglite.errors import SegliteError


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Argument(help="Folder to write the Cityscapes-layout data set into.")],
    train: Annotated[int, typer.Option(min=0)] = 40,
    val: Annotated[int, typer.Option(min=0)] = 10,
    size: Annotated[str, typer.Option(help="Image WxH.")] = "512x256",
    seed: Annotated[int, typer.Option()] = 0,
    video: Annotated[Path | None, typer.Option(help="Also write an mp4 of a drive through the city.")] = None,
    frames: Annotated[int, typer.Option(min=1, help="Frames of the video.")] = 60,
) -> None:
    """Generate a street-scene data set in the exact Cityscapes layout (labelIds, instanceIds, colour)."""
    from seglite.data.synth import write_dataset, write_video
    from seglite.sizes import parse_size

    wh = parse_size(size)
    try:
        write_dataset(out, train=train, val=val, size=wh, seed=seed)
        if video:
            write_video(video, frames=frames, size=wh, seed=seed)
    except OSError as exc:
        raise SegliteError(f"{exc.filename or out}: cannot write ({exc.strerror or exc})") from None
    console.print(f"wrote {train} train + {val} val images ({size}) to {out}" + (f", video {video}" if video else ""))


@data_app.command("get")
def data_get(
    root: Annotated[
        Path | None, typer.Argument(help="Where the data set goes (default: its YAML's path, else data/NAME).")
    ] = None,
    data: DataOption = None,
    data_root: DataRootOption = None,
    zips: Annotated[
        Path | None,
        typer.Option(
            "--zips", help="Folder holding zips you downloaded already (e.g. ~/Downloads): not fetched again."
        ),
    ] = None,
) -> None:
    """Download and unpack a data set (camvid; cityscapes with your account or the zips you downloaded); an
    interrupted download resumes."""
    from seglite.data.download import get_dataset
    from seglite.progress import Progress

    spec = _dataset(data, data_root, root)
    target = spec.path or Path("data") / spec.name
    with Progress(*Progress.get_default_columns(), DownloadColumn(), console=err_console, transient=True) as progress:

        def start(description: str, total: int | None):
            task = progress.add_task(description, total=total)
            return lambda done: progress.advance(task, done)

        report = get_dataset(spec, target, zips, start)
    if report.already:
        console.print(f"{spec.name} is already in {target}: nothing to do")
    else:
        kept = f"; your zips stay in {', '.join(sorted({str(k.parent) for k in report.kept}))}" if report.kept else ""
        console.print(f"{spec.name} unpacked into {target} ({', '.join(report.unpacked) or 'nothing new'}){kept}")
    console.print(f"next: seglite data check --data {spec.own_file or spec.name} --data-root {target}", highlight=False)


@data_app.command("check")
def data_check(
    root: Annotated[Path | None, typer.Argument(help="Data root (overrides the data set's path).")] = None,
    data: DataOption = None,
    data_root: DataRootOption = None,
) -> None:
    """Counts per split, missing pairs, size mismatches and mask values that are no class; non-zero exit when broken."""
    from seglite.data.check import FULL_COUNTS, check_dataset
    from seglite.progress import Progress

    spec = _dataset(data, data_root, root)
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("checking", total=None)
        reports = check_dataset(spec, progress=lambda: progress.advance(task))
    full = FULL_COUNTS.get(spec.name, {})
    labels = {
        "color": ", colour masks",
        "yolo": ", YOLO polygon labels; class 0 is what no polygon covers",
        "coco": ", COCO annotations; class 0 is what no annotation covers",
    }
    table = Table(title=f"{spec.name}: {spec.root()} ({spec.num_classes} classes{labels.get(spec.mask_format, '')})")
    # The published split sizes, where known, show a partial download; a user's own data set has none to show.
    columns = ("split", "images", "labelled", *([f"full {spec.name}"] if full else []), "size", "ignored", "problems")
    for column in columns:
        table.add_column(column)
    for r in reports:
        known = [str(full.get(r.split, "-"))] if full else []
        ignored = "-" if r.ignored_share is None else f"{100 * r.ignored_share:.1f} %"
        table.add_row(r.split, str(r.images), str(r.labelled), *known, _sizes(r), ignored, str(len(r.problems)))
    console.print(table)
    for r in reports:
        absent = r.absent_classes(spec.names)
        if absent:
            effect = (
                "the network cannot learn them"
                if r.split == "train"
                else "each counts as IoU 0 where it is predicted, else is left out of the mIoU"
            )
            named = ", ".join(repr(name) for name in absent)
            console.print(f"{r.split}: no pixel of {named} in any mask ({effect})")
        if r.unmapped:
            values = ", ".join(f"{v} ({n} px)" for v, n in sorted(r.unmapped.items())[:10])
            console.print(f"{r.split}: values outside label_mapping, read as ignore: {values}")
    problems = [p for r in reports for p in r.problems]
    for problem in problems[:20]:
        err_console.print(f"  {problem}")
    if problems:
        raise SegliteError(f"{spec.root()}: {len(problems)} problem(s) found (first: {problems[0]})")
    console.print("dataset OK")


def _sizes(report) -> str:
    """The images' usual WxH (what training records and exports default to), and how many differ from it."""
    if report.common_size is None:
        return "-"
    (width, height), others = report.common_size, report.images - report.sizes[report.common_size]
    return f"{width}x{height}" + (f" (+{others} other)" if others else "")


@data_app.command("stats")
def data_stats(
    root: Annotated[Path | None, typer.Argument(help="Data root (overrides the data set's path).")] = None,
    data: DataOption = None,
    data_root: DataRootOption = None,
    split: Annotated[str, typer.Option()] = "train",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Class pixel frequencies of a split and ESPNet's class weights w = 1 / ln(1.10 + p)."""
    from seglite.data.check import class_frequencies, espnet_class_weights

    spec = _dataset(data, data_root, root)
    freq = class_frequencies(spec, split)
    weights = espnet_class_weights(freq)
    rows = [
        {"class": n, "frequency": float(f), "espnet_weight": float(w)}
        for n, f, w in zip(spec.names, freq, weights, strict=True)
    ]
    print_rows(
        rows,
        as_json,
        f"{spec.name} ({spec.root()}) [{split}] class frequencies",
        ("class", "frequency %", "ESPNet weight"),
        lambda r: (r["class"], f"{100 * r['frequency']:.3f}", f"{r['espnet_weight']:.3f}"),
    )
