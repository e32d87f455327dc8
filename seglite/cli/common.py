"""What every verb shares: the typer app, the consoles, option types and the helpers that build a Segmenter."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from seglite.errors import SegliteError
from seglite.inference.segmenter import Segmenter
from seglite.sharing import share_cpu

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fast, lightweight street-scene segmentation.",
)
weights_app = typer.Typer(
    no_args_is_help=True, help="Published checkpoints: list the zoo, download it ahead of use, convert files."
)
app.add_typer(weights_app, name="weights")
data_app = typer.Typer(
    no_args_is_help=True, help="Data sets: get (download and unpack), check, statistics, generate the synthetic city."
)
app.add_typer(data_app, name="data")
PIPED_WIDTH = 240  # columns when stdout/stderr is no terminal
NUMBER = re.compile(r"[-+]?[\d,.]+(e[-+]?\d+)? ?%?|-")  # a table cell print_table right-aligns


def _console(stderr: bool) -> Console:
    """Output to a file, a pipe or a CI log keeps whole table cells: rich fits tables to 80 columns when it cannot
    ask a terminal (COLUMNS, if set, still wins). No markup: messages carry recipes' and users' text ("[min, max]",
    a folder named "[raw]"), which rich would take for style tags and drop."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if "COLUMNS" in os.environ or stream.isatty() else PIPED_WIDTH
    return Console(stderr=stderr, soft_wrap=True, width=width, markup=False)


ERROR_LABEL = Text("error:", style="bold red")


console = _console(stderr=False)
err_console = _console(stderr=True)
_state: dict = {"debug": False, "shared_cpu": None}


def _print_version(value: bool) -> None:
    if value:
        from seglite import __version__

        console.print(f"seglite {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug
    _state["shared_cpu"] = share_cpu()  # one thread per free core when other programs keep cores busy


def _note_shared_cpu(threads: int | None = None) -> None:
    """Say so when the CPU was found shared at start: timings then reflect the other programs' load. Silent when
    --threads chose the count (it overrides the choice)."""
    if _state["shared_cpu"] and threads is None:
        err_console.print(_state["shared_cpu"], highlight=False, style="dim")


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A rich table: columns of numbers right-aligned, text left-aligned."""
    table = Table(title=title)
    for index, column in enumerate(columns):
        numbers = rows and all(NUMBER.fullmatch(row[index].strip()) for row in rows)
        table.add_column(column, justify="right" if index and numbers else "left")
    for row in rows:
        table.add_row(*row)
    console.print(table)


def print_rows(rows: list[dict], as_json: bool, title: str, columns: tuple[str, ...], cells) -> None:
    """`rows` as JSON (`--json`), or as a table of `cells(row)` per row."""
    if as_json:
        print_json(rows)
    else:
        print_table(title, columns, [cells(row) for row in rows])


# What an export or a latency figure runs at when no --size is given (LoadedWeights.fixed_size).
SIZE_DEFAULT = "the weights' own; else the size of the frames they were trained on; else 1024x512"

WeightsOption = Annotated[
    str | None,
    typer.Option("--weights", help="Checkpoint, training run folder (its best.pt) or zoo name."),
]
RunnableWeightsOption = Annotated[  # what runs: a checkpoint, or a model exported for another runtime
    str | None,
    typer.Option(
        "--weights", help="Checkpoint, training run folder (its best.pt), zoo name or model written by `export`."
    ),
]
DataOption = Annotated[
    str | None,
    typer.Option(
        "--data", help="Data set: a built-in name (cityscapes, camvid) or a data set YAML (default cityscapes)."
    ),
]


ClassMapOption = Annotated[
    str | None,
    typer.Option(
        "--class-map",
        help="YAML {data set class: predicted class(es)}, or a shipped map's name (cityscapes_to_camvid), for "
        "weights of other classes.",
    ),
]
DataRootOption = Annotated[Path | None, typer.Option("--data-root", help="Data root (overrides the data set's path).")]


def _dataset(data: str | None, data_root: Path | None, given_root: Path | None = None):
    """`given_root`: the same root given as an argument (`seglite data check ROOT`), which --data-root may also give."""
    from seglite.data.datasets import load_dataset

    if given_root is not None and data_root is not None and given_root != data_root:
        raise SegliteError(f"{given_root} and --data-root {data_root}: two data roots; give one")
    return _said(load_dataset(data, given_root or data_root))


def _said(spec):
    """The data set, having said in a line what an export folder given as --data was read as."""
    if spec.read_as:
        err_console.print(f"data: {spec.read_as}", highlight=False)
    return spec


def _dataset_of(weights: str | None, data: str | None, data_root: Path | None, optional: bool = False):
    """`--data` and `--data-root` as given, else the data set the weights were trained on (trained_dataset), said
    in a line. `optional`: None where neither names one that is here (export then checks on generated frames)."""
    from seglite.data.datasets import trained_dataset

    trained = trained_dataset(_recorded_dataset(weights), data, data_root)
    if trained is None:
        return None if optional and data_root is None else _dataset(data, data_root)
    if data is None:
        if optional and data_root is None and not _val_here(trained.spec):
            return None
        err_console.print(f"data: {trained.given_as} (what {weights} was trained on; --data for another)")
    else:
        _said(trained.spec)
    if trained.moved_to:
        err_console.print(f"data root: {trained.moved_to} (where it was trained; --data-root for another)")
    return trained.spec


def _shared_trained_dataset(weights: list[str | None]):
    """For `report` without --data: the data set all the weights were trained on (TrainedData), where they record
    the same one and its val split is here (a report over several data sets would compare nothing); else None."""
    from seglite.data.datasets import trained_dataset

    found = {}
    for record in (_recorded_dataset(item) for item in weights if item is not None):
        trained = trained_dataset(record)
        if trained is None or not _val_here(trained.spec):
            return None
        found[(trained.given_as, str(trained.spec.path))] = trained
    if len(found) != 1:
        return None
    trained = next(iter(found.values()))
    err_console.print(
        f"data: {trained.given_as} at {trained.spec.path} (what the weights were trained on; --data for another)"
    )
    return trained


def _recorded_dataset(weights: str | None) -> dict:
    """The data set record of a seglite checkpoint, run folder or export ({} for anything else)."""
    from seglite.export.base import find_artifact, read_record
    from seglite.zoo.checkpoint import read_checkpoint_file
    from seglite.zoo.registry import run_checkpoint

    try:
        if (artifact := find_artifact(weights)) is not None:
            return read_record(artifact).get("dataset") or {}
        if weights is not None:
            path = run_checkpoint(Path(weights)) if Path(weights).is_dir() else Path(weights)
            if path is not None and path.is_file() and path.suffix == ".pt":
                return read_checkpoint_file(path).get("dataset") or {}
    except SegliteError:
        pass  # the model loader names the problem with the file
    return {}


def _val_here(spec) -> bool:
    try:
        return spec.split_on_disk("val")
    except SegliteError:
        return False


def or_default_weights(model: str | None, weights: str | None, doing: str) -> str | None:
    """Neither --model nor --weights: the published model predict runs (Ultralytics' CLI has a default model too),
    said on stderr."""
    from seglite.zoo.registry import DEFAULT_WEIGHTS

    if model is None and weights is None:
        err_console.print(f"no --model or --weights: {doing} {DEFAULT_WEIGHTS}")
        return DEFAULT_WEIGHTS
    return weights


SLOW_LOAD_SECONDS = 5.0  # a cached choice loads in 2-3 s on 2 cores; timing the backends takes 10 s or more


def _segmenter(
    model: str | None, weights: str | None, device: str, size: str | None, half: bool, backend: str, **options
) -> Segmenter:
    """The options every inference command shares; a spinner while `--backend auto` may be timing the backends
    (once per model, weights and size)."""
    from seglite.export.base import find_artifact
    from seglite.sizes import parse_size

    status = "loading the model; a first run at this size times its backends (torch, onnx, openvino; torch.compile where it can pay)"
    timed = backend == "auto" and find_artifact(weights) is None  # an exported model runs in its own runtime
    # A log file gets no spinner: a line instead, where the wait is long enough to need explaining.
    said = threading.Timer(SLOW_LOAD_SECONDS, err_console.print, (status + "...",))
    if timed and not err_console.is_terminal:
        said.start()
    try:
        with err_console.status(status) if timed and err_console.is_terminal else contextlib.nullcontext():
            return Segmenter(
                model=model,
                weights=weights,
                device=device,
                size=parse_size(size),
                half=half,
                backend=backend,
                **options,
            )
    finally:
        said.cancel()


def _eval_frames(spec, split: str, limit: int | None, flip: bool, window: str | None) -> int:
    """Passes at one shape an eval makes (what torch.compile would serve); sliding-window crops vary. 0 for a bad
    data root: the model's own errors come first, evaluate() then names the data problem."""
    try:
        images = 0 if window else len(spec.samples(split))
    except SegliteError:
        return 0
    return min(images, limit or images) * (2 if flip else 1)


def _parse_scales(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise SegliteError(f"--scales {text!r}: expected comma-separated numbers such as 0.75,1.0,1.25") from None
    if not values or any(v <= 0 for v in values):
        raise SegliteError(f"--scales {text!r}: scales must be positive")
    return values


def _join_run(device: str):
    """Under torchrun: join the process group and take this rank's GPU (`cuda:LOCAL_RANK`); otherwise nothing.
    Returns (DistInfo, the device to use)."""
    from seglite.devices import resolve_device
    from seglite.distributed import init_distributed

    kind = resolve_device(device).type
    dist = init_distributed(kind)
    return dist, (f"cuda:{dist.local_rank}" if dist.enabled and kind == "cuda" else device)


def _on_main(dist, decide):
    """`decide()` on rank 0 only, its result (or its one-line error) on every rank."""
    from seglite.distributed import gather_objects

    if not dist.enabled:
        return decide()
    try:
        outcome = ("ok", decide()) if dist.is_main else None
    except SegliteError as exc:
        outcome = ("error", exc)
    outcome = gather_objects(outcome, dist)[0]
    if outcome[0] == "error":
        raise outcome[1]
    return outcome[1]
