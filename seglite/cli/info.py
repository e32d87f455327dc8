"""`seglite doctor` and `seglite models`: what this machine and seglite have."""

from __future__ import annotations

from typing import Annotated

import typer

from seglite.cli.common import (
    _state,
    app,
    console,
    print_json,
    print_rows,
)


@app.command("doctor")
def doctor_cmd(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Versions, backends, CPU features and cache paths: paste this into a bug report."""
    from seglite.doctor import report

    facts = report(_state["shared_cpu"])
    if as_json:
        print_json(facts)
        return
    for key, value in facts.items():
        if isinstance(value, dict):
            console.print(f"{key}:")
            for inner, item in value.items():
                console.print(f"  {inner}: {item}", highlight=False)
        else:
            console.print(f"{key}: {value}", highlight=False)


@app.command("models")
def models_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list instead of a table.")] = False,
    size: Annotated[str, typer.Option(help="Input size WxH for the GFLOPs column.")] = "1024x512",
) -> None:
    """List the registered networks with parameters and GFLOPs (19 classes)."""
    from seglite.bench.complexity import model_complexity_table
    from seglite.models.registry import get_spec
    from seglite.sizes import parse_size
    from seglite.zoo.registry import list_zoo

    zoo = list_zoo()
    rows = [
        {
            **row,
            "description": get_spec(row["name"]).description,
            "published_weights": [entry.name for entry in zoo if entry.model == row["name"]],
        }
        for row in model_complexity_table(parse_size(size))
    ]
    print_rows(
        rows,
        as_json,
        f"seglite models: 19 classes, GFLOPs at {size} (GFLOPs = 2 x GMACs); weights: `seglite weights list`",
        ("name", "params", "gflops", "published weights", "what"),
        lambda r: (
            r["name"],
            f"{r['params']:,}",
            f"{r['gflops']:.2f}",
            f"{len(r['published_weights'])} (Cityscapes)" if r["published_weights"] else "none: train it",
            r["description"],
        ),
    )
