"""`seglite export`: one model to one deployment format, checked against PyTorch with the format's own runtime."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seglite.cli.common import (
    SIZE_DEFAULT,
    DataOption,
    DataRootOption,
    WeightsOption,
    _dataset_of,
    app,
    console,
    err_console,
    or_default_weights,
    print_json,
)


@app.command("export")
def export_cmd(
    model: Annotated[str | None, typer.Option("--model")] = None,
    weights: WeightsOption = None,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="onnx, torchscript, openvino, tflite, ncnn, executorch, coreml or engine (TensorRT, on its GPU).",
        ),
    ] = "onnx",
    precision: Annotated[
        str, typer.Option(help="fp32, fp16 or int8 (openvino: NNCF, calibrated on --data train frames).")
    ] = "fp32",
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", help="Artifact folder (default outputs/export/NAME_FORMAT_model); for onnx a .onnx file too."
        ),
    ] = None,
    size: Annotated[str | None, typer.Option(help=f"Input WxH (default: {SIZE_DEFAULT}).")] = None,
    data: DataOption = None,
    data_root: DataRootOption = None,
    image: Annotated[
        Path | None, typer.Option(help="Frame for the parity check (default: --data val frames, else generated).")
    ] = None,
    half: Annotated[bool, typer.Option("--half", help="Same as --precision fp16.")] = False,
    dynamic: Annotated[bool, typer.Option("--dynamic", help="ONNX: dynamic batch axis (static by default).")] = False,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", "--overwrite", help="Replace an existing --out.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Export for a deployment runtime, run the artifact with that runtime on real frames against PyTorch (argmax
    agreement; fp32 below 99.5 % writes nothing) and write seglite.yaml beside it: predict, eval and bench take the
    artifact as --weights."""
    from seglite.export.exporter import export_model
    from seglite.sizes import parse_size

    spec = _dataset_of(weights, data, data_root, optional=True)
    report = export_model(
        model,
        or_default_weights(model, weights, "exporting"),
        fmt,
        out,
        precision="fp16" if half else precision,
        size=parse_size(size),
        data=spec,
        image=image,
        exist_ok=exist_ok,
        dynamic=dynamic,
        on_start=None if as_json else _say_started,
    )
    if as_json:
        print_json(report.to_dict())
        return
    check = (
        report.note
        if report.agreement is None
        else f"{report.format} runtime vs PyTorch on {report.frames}: argmax agreement {100 * report.agreement:.3f} %, "
        f"max |diff| {report.max_abs_diff:.2e}"
    )
    calibrated = f"; INT8 calibrated on {report.calibration}" if report.calibration else ""
    console.print(
        f"wrote {report.path} ({report.model}, {report.format} {report.precision}, {report.size}, "
        f"{report.file_mb:.1f} MB, {report.export_s:.1f} s){calibrated}\n  {check}",
        highlight=False,
    )


def _say_started(what: str) -> None:
    err_console.print(
        f"{what}, then running it against PyTorch (tflite, executorch and coreml take 30 s to 3 min)",
        style="dim",
        highlight=False,
    )
