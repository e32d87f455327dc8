"""`seglite benchmark`: export one model to every deployment format that works here and measure each artifact in
its own runtime, in one run: file size, export time, argmax agreement with PyTorch, mIoU and latency (Ultralytics'
benchmark mode, for segmentation)."""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from seglite.bench.latency import benchmark, benchmark_artifact, describe_machine, machine_fingerprint
from seglite.bench.report import save_figure, write_json_and_csv
from seglite.errors import Interrupted, SegliteError
from seglite.evaluation.evaluator import EvalOptions, evaluate
from seglite.export.base import runtime_threads
from seglite.files import atomic_write_bytes, prepare_output_folder, write_failure

BENCHMARK_FILES = ("benchmark.md", "benchmark.csv", "benchmark.json", "benchmark.png")


@dataclass
class FormatRow:
    format: str
    precision: str
    status: str  # ok, exported (not run here), skipped, failed
    file_mb: float | None = None
    export_s: float | None = None
    agreement: float | None = None  # argmax agreement with eager PyTorch on the parity frames, %
    miou: float | None = None
    median_ms: float | None = None
    fps: float | None = None
    path: str | None = None
    note: str = ""


def _miou(segmenter, data, scoring: EvalOptions) -> float:
    return round(evaluate(segmenter, data, scoring).miou, 2)


def _pytorch_row(loaded, weights, size, data, scoring, warmup, iters, threads) -> FormatRow:
    """The reference: the checkpoint in eager PyTorch (fp32, BatchNorm folded), measured like the artifacts."""
    from seglite.inference.segmenter import Segmenter

    latency = benchmark(loaded.model, loaded.model_name, size, threads=threads, warmup=warmup, iters=iters)
    miou = None if data is None else _miou(Segmenter.from_loaded(loaded, "cpu", size), data, scoring)
    return FormatRow("pytorch", "fp32", "ok", None, None, 100.0, miou, latency.median_ms, latency.fps, weights, "")


def benchmark_formats(
    model: str | None,
    weights: str | None,
    formats: list[str],
    precisions: list[str],
    out: Path,
    size: tuple[int, int] | None = None,
    data=None,
    limit: int | None = None,
    class_map: str | Path | dict | None = None,
    warmup: int = 5,
    iters: int = 30,
    threads: int | None = None,
    progress: Callable[[FormatRow], None] | None = None,
) -> tuple[list[FormatRow], dict]:
    """Rows for eager PyTorch and every format x precision; a format that cannot run here is a row that says why.
    The artifacts stay in `out` (one folder each), beside the tables and the plot. `data`: the mIoU column's data set
    (its first `limit` val images; `class_map` for weights of other classes, as `eval --class-map`)."""
    from seglite.export import get_format
    from seglite.zoo.checkpoint import load_model

    loaded = load_model(model, weights)
    size = tuple(size or loaded.fixed_size())
    prepare_output_folder(out)
    scoring = EvalOptions(split="val", progress=progress is not None, limit=limit, class_map=class_map)
    rows: list[FormatRow] = []
    machine = machine_fingerprint(torch.device("cpu"), runtime_threads(threads))
    machine |= {"size": f"{size[0]}x{size[1]}", "model": loaded.model_name, "weights": loaded.source}
    try:
        rows.append(_pytorch_row(loaded, weights, size, data, scoring, warmup, iters, threads))
        if progress:
            progress(rows[0])
        for name in formats:
            fmt = get_format(name)
            for precision in precisions:
                row = FormatRow(fmt.name, precision, "skipped")
                if precision not in fmt.precisions:
                    continue
                if (why := fmt.missing()) is not None:
                    row.note = why
                else:
                    _measure(row, fmt, loaded, weights, size, data, scoring, out, warmup, iters, threads)
                rows.append(row)
                if progress:
                    progress(row)
    except KeyboardInterrupt:  # an hour of exports: the rows measured so far are kept
        if not rows:
            raise
        _write(rows, machine, out, f"interrupted after {len(rows)} row(s); the formats after them are missing")
        raise Interrupted(
            f"after {len(rows)} row(s) ({', '.join(f'{r.format} {r.precision}' for r in rows)}); they are in "
            f"{out}/benchmark.md (.csv, .json, .png)"
        ) from None
    _write(rows, machine, out)
    return rows, machine


def _write(rows: list[FormatRow], machine: dict, out: Path, incomplete: str | None = None) -> None:
    try:
        write_tables(rows, machine, out, incomplete)
    except OSError as exc:
        raise write_failure(exc, f"benchmark tables in {out}", kept="the artifacts are complete") from None


def _measure(row, fmt, loaded, weights, size, data, scoring, out, warmup, iters, threads) -> None:
    from seglite.export.artifact import open_artifact
    from seglite.export.exporter import export_model
    from seglite.inference.segmenter import Segmenter

    target = out / f"{fmt.name}_{row.precision}"
    try:
        report = export_model(
            None,
            weights,
            fmt.name,
            target,
            row.precision,
            size,
            data=data,
            exist_ok=True,
            threads=threads,
            loaded=loaded,
        )
    except SegliteError as exc:
        row.status, row.note = "failed", str(exc)
        return
    except Exception as exc:  # a converter's own failure: one row says it, the other formats still run
        row.status, row.note = (
            "failed",
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            if str(exc)
            else (traceback.format_exc(limit=1).splitlines()[-1]),
        )
        return
    row.file_mb, row.export_s, row.path = report.file_mb, report.export_s, report.path
    if report.agreement is None:
        row.status, row.note = "exported", report.note
        return
    row.agreement = round(100 * report.agreement, 3)
    try:
        latency = benchmark_artifact(open_artifact(report.path, threads=threads), warmup, iters, threads)
        row.median_ms, row.fps = latency.median_ms, latency.fps
        if data is not None:
            row.miou = _miou(Segmenter(weights=report.path, device="cpu"), data, scoring)
        row.status = "ok"
    except SegliteError as exc:
        row.status, row.note = "failed", str(exc)


def write_tables(rows: list[FormatRow], machine: dict, out: Path, incomplete: str | None = None) -> None:
    """`incomplete`: why rows are missing (an interrupted run), said at the top and in the JSON."""
    write_json_and_csv([asdict(r) for r in rows], machine, out / "benchmark", incomplete)
    lines = [
        f"# seglite benchmark: {machine['model']} at {machine['size']}",
        "",
        *([f"**Incomplete: {incomplete}.**", ""] if incomplete else []),
        f"Weights: {machine['weights']}. Machine: {describe_machine(machine)}.",
        "",
        "| format | precision | status | size MB | export s | agreement % | mIoU % | median ms | FPS | note |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [markdown_row(r) for r in rows]
    lines += ["", "![mIoU (or agreement) against latency](benchmark.png)", ""]
    atomic_write_bytes("\n".join(lines).encode(), out / "benchmark.md")
    plot(rows, machine, out / "benchmark.png", incomplete)


def cells(row: FormatRow) -> list[str]:
    def number(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    return [
        row.format,
        row.precision,
        row.status,
        number(row.file_mb, 1),
        number(row.export_s, 1),
        number(row.agreement, 2),
        number(row.miou, 2),
        number(row.median_ms, 1),
        number(row.fps, 1),
        row.note,
    ]


def markdown_row(row: FormatRow) -> str:
    return "| " + " | ".join(c.replace("|", "/") for c in cells(row)) + " |"


def plot(rows: list[FormatRow], machine: dict, path: Path, incomplete: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [r for r in rows if r.median_ms is not None]
    have_miou = any(r.miou is not None for r in measured)
    key, label = ("miou", "mIoU (%)") if have_miou else ("agreement", "argmax agreement with PyTorch (%)")
    points = [r for r in measured if getattr(r, key) is not None]
    fig, ax = plt.subplots(figsize=(9, 6))
    ax.scatter([r.median_ms for r in points], [getattr(r, key) for r in points], color="tab:blue", zorder=3)
    for r in points:
        ax.annotate(
            f"{r.format} {r.precision}",
            (r.median_ms, getattr(r, key)),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    ax.set_xlabel(f"median latency (ms), batch 1, {machine['threads']} threads")
    ax.set_ylabel(label)
    ax.set_title(f"{machine['model']} {machine['size']} on {machine['cpu']} ({machine['cores']} cores)", fontsize=10)
    ax.grid(alpha=0.3)
    save_figure(fig, path, incomplete)
