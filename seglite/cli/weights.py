"""`seglite weights list|download|import`: the model zoo, fetching it ahead of use, converting the authors' files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from seglite.cli.common import (
    console,
    print_json,
    weights_app,
)
from seglite.files import (
    choose_output,
    existing_file,
    write_failure,
)


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
        # The names are what users type: never folded or cut, whatever the terminal width.
        table.add_column(
            column, no_wrap=True, min_width=max(len(e.name) for e in entries) if column == "name" else None
        )
    for e in entries:
        size = "x".join(map(str, e.preprocess.size)) if e.preprocess.size else "any"
        miou = f"{e.reported_miou:.1f}" if e.reported_miou is not None else "-"
        table.add_row(e.name, e.model, size, miou, "yes" if cached_path(e).is_file() else "no")
    console.print(table)


@weights_app.command("download")
def weights_download(
    names: Annotated[list[str] | None, typer.Argument(help="Zoo names (`seglite weights list`).")] = None,
    download_all: Annotated[bool, typer.Option("--all", help="Every entry of the zoo.")] = False,
) -> None:
    """Fetch published checkpoints into the cache now (checked against their sha256), e.g. before going offline;
    otherwise each is fetched on first use."""
    from seglite.errors import SegliteError
    from seglite.zoo.registry import cached_path, closest_names, fetch, find_entry, list_zoo

    if bool(names) == download_all:
        raise SegliteError("name the weights to download (`seglite weights list`), or pass --all for every one")
    entries = list_zoo() if download_all else []
    for name in names or []:
        if (entry := find_entry(name)) is None:
            near = closest_names(name)
            hint = f"did you mean {', '.join(near)}?" if near else "`seglite weights list` shows the names"
            raise SegliteError(f"{name!r}: not a zoo name; {hint}")
        entries.append(entry)
    for entry in dict.fromkeys(entries):
        there = cached_path(entry).is_file()
        path = fetch(entry)
        console.print(f"{entry.name}: {'already in' if there else 'downloaded to'} {path}")


@weights_app.command("import")
def weights_import(
    original: Annotated[Path, typer.Argument(help="An original ESPNet/EdgeNets .pth, or a seglite checkpoint.")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the seglite checkpoint.")],
    model: Annotated[str | None, typer.Option("--model", help="Expected model name (checked).")] = None,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", "--overwrite", help="Replace an existing --out file.")
    ] = False,
) -> None:
    """Convert a checkpoint once into seglite's format (model, classes and preprocessing inside)."""
    from seglite.zoo.checkpoint import load_weights, save_checkpoint

    choose_output(out, out, existing_file, exist_ok)
    loaded = load_weights(original, model_name=model)
    try:
        save_checkpoint(out, loaded)
    except OSError as exc:
        raise write_failure(exc, out) from None
    console.print(f"wrote {out} ({loaded.model_name}, {loaded.model.num_classes} outputs)")
