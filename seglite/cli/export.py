"""`seglite export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seglite.cli.common import (
    app,
    console,
)
from seglite.errors import SegliteError
from seglite.files import (
    choose_output,
    existing_file,
)


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option("--out", help="Where to write the .onnx file.")],
    model: Annotated[str | None, typer.Option("--model")] = None,
    weights: Annotated[str | None, typer.Option("--weights")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Only onnx for now.")] = "onnx",
    size: Annotated[str | None, typer.Option(help="Input WxH (default: the weights' own, else 1024x512).")] = None,
    half: Annotated[bool, typer.Option("--half", help="Export in fp16.")] = False,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="Dynamic batch axis (static by default).")] = False,
    image: Annotated[
        Path | None, typer.Option(help="Frame for the ONNX Runtime check (default: a generated street).")
    ] = None,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", "--overwrite", help="Replace an existing --out file.")
    ] = False,
) -> None:
    """Export to ONNX (opset 17, static shape), then check ONNX Runtime against PyTorch on a real frame."""
    from seglite.bench.sizes import parse_size
    from seglite.inference.onnx_export import verify_export

    if fmt != "onnx":
        raise SegliteError(f"--format {fmt!r}: only onnx is supported")
    choose_output(out, out, existing_file, exist_ok)
    report = verify_export(model, weights, out, parse_size(size), half=half, dynamic=dynamic, image=image)
    console.print(
        f"wrote {out} ({report['model']}, {report['size']}, opset {report['opset']}); ONNX Runtime vs "
        f"PyTorch on {report['image']}: argmax agreement {100 * report['agreement']:.3f} %, "
        f"max |diff| {report['max_abs_diff']:.2e}",
        markup=False,
    )
