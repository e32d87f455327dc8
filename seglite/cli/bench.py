"""`seglite bench`, `report` and `quantize`: latency, the mIoU-vs-latency report, INT8."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seglite.cli.common import (
    SIZE_DEFAULT,
    ClassMapOption,
    DataOption,
    DataRootOption,
    RunnableWeightsOption,
    WeightsOption,
    _dataset_of,
    _join_run,
    _note_shared_cpu,
    _on_main,
    _shared_trained_dataset,
    app,
    console,
    or_default_weights,
    print_json,
    print_table,
)
from seglite.errors import SegliteError
from seglite.files import (
    choose_output,
    existing_files,
)


@app.command("bench")
def bench_cmd(
    model: Annotated[str | None, typer.Option("--model", help="Model name.")] = None,
    weights: RunnableWeightsOption = None,
    size: Annotated[
        str | None,
        typer.Option(help=f"Input WxH (default: {SIZE_DEFAULT}; an exported model: the size it was exported for)."),
    ] = None,
    batch: Annotated[int, typer.Option(min=1)] = 1,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N, mps (Apple GPU, untested) or auto.")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: torch's).")] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="auto (CPU fp32: times torch, onnx, openvino and torch.compile, reports the fastest), torch, onnx or openvino."
        ),
    ] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or bf16.")] = "fp32",
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile (Inductor) the network first; same predictions.")
    ] = False,
    warmup: Annotated[int, typer.Option(min=0)] = 10,
    iters: Annotated[int, typer.Option(min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Latency of the model alone (median, p90, mean, min), FPS, memory, params and GFLOPs."""
    from seglite.bench.latency import benchmark_artifact, benchmark_backends
    from seglite.devices import resolve_device
    from seglite.export.artifact import open_artifact
    from seglite.export.base import find_artifact
    from seglite.sizes import parse_size
    from seglite.zoo.checkpoint import load_model

    _note_shared_cpu(threads)
    weights = or_default_weights(model, weights, "benchmarking")
    if find_artifact(weights) is not None:  # an exported model: its own runtime at its own size
        result = benchmark_artifact(open_artifact(weights, model, threads), warmup, iters, threads)
        size, results = "x".join(map(str, result.size)), [result]
    else:
        loaded = load_model(model, weights)
        wh = parse_size(size) if size else loaded.fixed_size()
        size = f"{wh[0]}x{wh[1]}"
        result, results = benchmark_backends(
            loaded.model,
            loaded.model_name,
            wh,
            backend=backend,
            device=resolve_device(device),
            precision=precision,
            compile=compile,
            batch=batch,
            threads=threads,
            warmup=warmup,
            iters=iters,
        )
    compared = ", ".join(f"{r.backend} {r.median_ms:.1f} ms" for r in results)
    if as_json:
        print_json({**result.to_dict(), "backends_compared": {r.backend: r.median_ms for r in results}})
        return
    if len(results) > 1:
        console.print(f"backend auto: {compared} -> {result.backend}", highlight=False)
    console.print(
        f"{result.model} [{result.backend}, {result.device}, {result.precision}, {size}, batch {batch}, "
        f"{result.threads} threads]\n  median {result.median_ms:.1f} ms  p90 {result.p90_ms:.1f}  "
        f"mean {result.mean_ms:.1f}  min {result.min_ms:.1f}  ->  {result.fps:.1f} FPS\n"
        f"  params {result.params:,}  GFLOPs {result.gflops:.2f}  peak memory {result.peak_memory_mb:.0f} MB\n"
        f"  machine: {result.machine}",
        highlight=False,
    )


@app.command("report")
def report_cmd(
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated MODEL (random init), WEIGHTS (checkpoint, zoo name or exported model) or "
            "NAME=WEIGHTS (NAME: the network, or a label of your own).",
        ),
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Every registered model (random init).")] = False,
    data: DataOption = None,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Data root for mIoU.")] = None,
    split: Annotated[str, typer.Option()] = "val",
    class_map: ClassMapOption = None,
    size: Annotated[
        list[str] | None,
        typer.Option(
            "--size",
            help=f"WxH; repeat for several (default: {SIZE_DEFAULT}; an exported model: the size it was exported for).",
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder (default: outputs/report, or report2, ... if it holds one).")
    ] = None,
    device: Annotated[str, typer.Option()] = "cpu",
    threads: Annotated[int | None, typer.Option()] = None,
    backend: Annotated[
        str,
        typer.Option(
            help="auto (CPU: fastest of torch, onnx, openvino, torch.compile per model), torch, onnx or openvino."
        ),
    ] = "auto",
    iters: Annotated[int, typer.Option(min=1)] = 20,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", "--overwrite", help="Replace the report in --out.")] = False,
) -> None:
    """Evaluate (on --data, else on what all the checkpoints were trained on) and benchmark several models; write
    report.{md,csv,json} and pareto.png."""
    from seglite.bench.report import REPORT_FILES, ReportEntry, ReportOptions, build_report, parse_entries
    from seglite.distributed import cleanup
    from seglite.models.registry import list_models
    from seglite.sizes import parse_size

    if all_models:
        entries = [ReportEntry(model=name) for name in list_models()]
    elif models:
        entries = parse_entries(models)
    else:
        raise SegliteError("pass --models a,b=WEIGHTS,... or --all")
    if data is None and data_root is None and (trained := _shared_trained_dataset([e.weights for e in entries])):
        data, data_root = trained.given_as, trained.spec.path
    dist, device = _join_run(device)  # under torchrun: the evaluations are sharded
    out = _on_main(dist, lambda: choose_output(out, Path("outputs/report"), existing_files(*REPORT_FILES), exist_ok))
    options = ReportOptions(
        sizes=tuple(parse_size(s) for s in size) if size else None,
        data_root=data_root,
        data=data,
        split=split,
        class_map=class_map,
        device=device,
        threads=threads,
        backend=backend,
        iters=iters,
    )

    def show(row: dict) -> None:
        miou = "" if row["miou"] is None else f"  mIoU {row['miou']:.2f}"
        console.print(f"{row['name']} {row['size']}: {row['median_ms']:.1f} ms{miou}")

    build_report(entries, options, out, progress=show if dist.is_main else None, dist=dist)
    cleanup(dist)
    if dist.is_main:
        console.print(f"report written to {out}/report.md (.csv, .json) and {out}/pareto.png")


@app.command("quantize")
def quantize_cmd(
    data: DataOption = None,
    data_root: Annotated[
        Path | None, typer.Option("--data-root", help="Data root: calibration frames and labelled frames.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    weights: WeightsOption = None,
    size: Annotated[str | None, typer.Option(help=f"Input WxH (default: {SIZE_DEFAULT}).")] = None,
    calibration_split: Annotated[str, typer.Option(help="Split whose images calibrate the ranges.")] = "train",
    eval_split: Annotated[str, typer.Option(help="Labelled split for the mIoU change.")] = "val",
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime threads for the timing.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """INT8 for CPU: calibrate on real frames, measure latency and mIoU against fp32, keep it only if it pays.

    An accepted model (mIoU drop under 1 point, and faster) is cached; `predict --int8` then runs it.
    """
    from seglite.bench.quantize import MAX_MIOU_DROP, quantize_and_validate
    from seglite.sizes import parse_size

    if weights is None:
        raise SegliteError("pass --weights (trained weights: the mIoU change of random weights means nothing)")
    report = quantize_and_validate(
        model,
        weights,
        _dataset_of(weights, data, data_root),
        parse_size(size),
        calibration_split,
        eval_split,
        threads=threads,
    )
    if as_json:
        print_json(report.to_dict())
    else:
        console.print(
            f"{report.model} {report.size}: fp32 {report.fp32_ms:.1f} ms, mIoU {report.fp32_miou:.2f} | "
            f"int8 {report.int8_ms:.1f} ms, mIoU {report.int8_miou:.2f} ({report.miou_change:+.2f} points, "
            f"argmax agreement {100 * report.argmax_agreement:.2f} %) on {report.eval_frames} {eval_split} frames, "
            f"calibrated on {report.calibration_frames} {calibration_split} frames",
            highlight=False,
        )
    if not report.accepted:
        why = "it is slower than fp32" if report.int8_ms >= report.fp32_ms else ""
        if report.fp32_miou - report.int8_miou >= MAX_MIOU_DROP:
            why = f"mIoU drops by {-report.miou_change:.2f} points (>= {MAX_MIOU_DROP})" + (
                f" and {why}" if why else ""
            )
        raise SegliteError(f"INT8 not offered for {report.model}: {why}; keep fp32 (nothing cached)")
    console.print(f"accepted; cached at {report.path} (use `seglite predict --int8`)")


@app.command("benchmark")
def benchmark_cmd(
    model: Annotated[str | None, typer.Option("--model")] = None,
    weights: WeightsOption = None,
    data: DataOption = None,
    data_root: DataRootOption = None,
    class_map: ClassMapOption = None,
    formats: Annotated[
        str, typer.Option("--formats", help="all, or a comma-separated list (onnx,openvino,tflite,...).")
    ] = "all",
    size: Annotated[str | None, typer.Option(help=f"Input WxH (default: {SIZE_DEFAULT}).")] = None,
    int8: Annotated[
        bool, typer.Option("--int8", help="Also INT8 where a format has it (calibrated on --data).")
    ] = False,
    half: Annotated[bool, typer.Option("--half", help="Also fp16 where a format has it.")] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate on the first N val frames only.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder (default outputs/benchmark, or benchmark2, ...).")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="Threads per runtime (default: every core).")] = None,
    warmup: Annotated[int, typer.Option(min=0)] = 5,
    iters: Annotated[int, typer.Option(min=1)] = 30,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", "--overwrite", help="Replace a benchmark in --out.")] = False,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Export to every deployment format that works here and measure each in its own runtime, in one run: size,
    export time, agreement with PyTorch, mIoU on the val split (of --data, else of the data set the weights were
    trained on, where it is here) and latency; one table, CSV, JSON and a plot. Artifacts stay in --out, ready to
    ship."""
    from seglite.bench.formats import BENCHMARK_FILES, benchmark_formats, cells
    from seglite.export import FORMATS, get_format
    from seglite.sizes import parse_size

    names = list(FORMATS) if formats == "all" else [get_format(f).name for f in formats.split(",") if f.strip()]
    precisions = ["fp32"] + (["fp16"] if half else []) + (["int8"] if int8 else [])
    spec = _dataset_of(weights, data, data_root, optional=True)
    out = choose_output(out, Path("outputs/benchmark"), existing_files(*BENCHMARK_FILES), exist_ok)
    _note_shared_cpu(threads)
    columns = ("format", "precision", "status", "MB", "export s", "agree %", "mIoU %", "ms", "FPS", "note")

    def show(row) -> None:
        if not as_json:
            console.print(
                "  ".join(f"{c}={v}" for c, v in zip(columns, cells(row), strict=True) if v not in ("-", "")),
                highlight=False,
            )

    rows, machine = benchmark_formats(
        model, weights, names, precisions, out, parse_size(size), spec, limit, class_map, warmup, iters, threads, show
    )
    if as_json:
        from dataclasses import asdict

        print_json({"machine": machine, "rows": [asdict(r) for r in rows]})
        return
    print_table(
        f"{machine['model']} {machine['size']} on {machine['cpu']} ({machine['threads']} threads)",
        columns[:-1],
        [tuple(cells(r)[:-1]) for r in rows],
    )
    for row in rows:
        if row.note:
            console.print(f"{row.format} {row.precision}: {row.note}", highlight=False)
    console.print(f"written to {out}/benchmark.md (.csv, .json, .png) with one artifact folder per format")
