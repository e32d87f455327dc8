"""The `seglite` command: one small function per verb over the Python API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.console import Console
from rich.table import Table

from seglite.errors import SegliteError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fast, lightweight street-scene segmentation.",
)
weights_app = typer.Typer(no_args_is_help=True, help="Published checkpoints: list the zoo, convert files.")
app.add_typer(weights_app, name="weights")
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


@app.command("models")
def models_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
    size: Annotated[str, typer.Option(help="Input size WxH for the GFLOPs column.")] = "1024x512",
) -> None:
    """List the registered networks with parameters and GFLOPs (19 classes)."""
    from seglite.bench.complexity import model_complexity_table
    from seglite.bench.sizes import parse_size

    rows = model_complexity_table(parse_size(size))
    if as_json:
        print_json(rows)
        return
    table = Table(title=f"seglite models: 19 classes, GFLOPs at {size} (GFLOPs = 2 x GMACs)")
    for column in ("name", "params", "gflops"):
        table.add_column(column, justify="left" if column == "name" else "right")
    for row in rows:
        table.add_row(row["name"], f"{row['params']:,}", f"{row['gflops']:.2f}")
    console.print(table)


@weights_app.command("list")
def weights_list(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show the model zoo: published Cityscapes checkpoints seglite can download and run."""
    from seglite.zoo.registry import cached_path, list_zoo

    entries = list_zoo()
    if as_json:
        print_json(
            [
                {
                    "name": e.name,
                    "model": e.model,
                    "url": e.url,
                    "sha256": e.sha256,
                    "license": e.license,
                    "reported_miou": e.reported_miou,
                    "preprocess": e.preprocess.to_dict(),
                    "cached": cached_path(e).is_file(),
                }
                for e in entries
            ]
        )
        return
    table = Table(title="seglite model zoo (Cityscapes)")
    for column in ("name", "model", "input", "reported mIoU", "cached"):
        table.add_column(column)
    for e in entries:
        size = "x".join(map(str, e.preprocess.size)) if e.preprocess.size else "any"
        miou = f"{e.reported_miou:.1f}" if e.reported_miou is not None else "-"
        table.add_row(e.name, e.model, size, miou, "yes" if cached_path(e).is_file() else "no")
    console.print(table)


@weights_app.command("import")
def weights_import(
    original: Annotated[Path, typer.Argument(help="An original ESPNet/EdgeNets .pth, or a seglite checkpoint.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the seglite checkpoint.")],
    model: Annotated[str | None, typer.Option("--model", help="Expected model name (checked).")] = None,
) -> None:
    """Convert a checkpoint once into seglite's format (model, classes and preprocessing inside)."""
    from seglite.zoo.checkpoint import load_weights, save_checkpoint

    loaded = load_weights(original, model_name=model)
    try:
        save_checkpoint(out, loaded)
    except OSError as exc:
        raise SegliteError(f"{out}: cannot write checkpoint ({exc.strerror or exc})") from None
    console.print(f"wrote {out} ({loaded.model_name}, {loaded.model.num_classes} outputs)")


def main() -> None:
    """Entry point: user mistakes end in one line on stderr and a non-zero exit, never a traceback."""
    try:
        app(standalone_mode=False)
    except SegliteError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        sys.exit(130)
