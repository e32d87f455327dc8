"""mIoU against latency on this machine, for many models, in one table and one plot."""

from __future__ import annotations

import contextlib
import csv
import difflib
import gc
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

from seglite.bench.latency import benchmark_artifact, benchmark_backends, describe_machine
from seglite.data.datasets import load_dataset
from seglite.devices import resolve_device
from seglite.distributed import DistInfo, barrier
from seglite.errors import InputError, Interrupted
from seglite.files import atomic_write_bytes, prepare_output_folder, write_failure
from seglite.zoo.registry import BEST, LAST


@dataclass
class ReportOptions:
    sizes: tuple[tuple[int, int], ...] | None = None  # None: each model at LoadedWeights.fixed_size()
    data_root: Path | None = None
    data: str | None = None  # data set name or YAML (None: Cityscapes at data_root)
    split: str = "val"
    class_map: str | Path | dict | None = None  # for the models that predict other classes than the data set's
    device: str = "cpu"
    threads: int | None = None
    backend: str = "auto"
    warmup: int = 5
    iters: int = 20
    eval_limit: int | None = None


@dataclass(frozen=True)
class ReportEntry:
    """One model in a report: a registered network and/or its weights (a checkpoint, a zoo name or a model exported
    by `seglite export`, timed in its own runtime); `label` names its rows (default: the network's name)."""

    model: str | None = None
    weights: str | None = None
    label: str | None = None


def parse_entries(text: str) -> list[ReportEntry]:
    """`--models`, comma-separated: MODEL (random init), WEIGHTS, or NAME=WEIGHTS where NAME is a registered
    network (for weights that do not say which) or a label of your own (two checkpoints of one network)."""
    from seglite.models.registry import list_models

    known = set(list_models())
    entries = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, equals, weights = (part.strip() for part in item.partition("="))
        if equals and not (name and weights):
            raise InputError(f"--models {item}: expected NAME=WEIGHTS, with a name and weights on either side")
        if not equals:
            entries.append(ReportEntry(model=name) if name in known else ReportEntry(weights=_weights(name, known)))
        else:
            entries.append(ReportEntry(name, weights) if name in known else ReportEntry(weights=weights, label=name))
    if not entries:
        raise InputError("--models: pass MODEL, WEIGHTS or NAME=WEIGHTS, comma-separated")
    return entries


def _weights(item: str, known: set[str]) -> str:
    """A bare --models item that is not a network must name weights: a file, a folder or a zoo name."""
    from seglite.zoo.registry import closest_names, find_entry

    if Path(item).exists() or find_entry(item) is not None:
        return item
    near = difflib.get_close_matches(item, sorted(known), n=2) + closest_names(item)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    raise InputError(
        f"--models {item}: not a network, a file or a zoo name; {hint}(`seglite models` and `seglite weights list` "
        "show them)"
    )


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower latency x is better, higher quality y is better)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def build_report(
    entries: list[ReportEntry],
    options: ReportOptions,
    out: Path,
    progress=None,
    dist: DistInfo | None = None,
) -> list[dict]:
    """Writes report.{md,csv,json} and pareto.png into `out`. An exported model is evaluated and timed in its own
    runtime at the size it was exported for (--size is for the PyTorch models).

    Under torchrun (`dist`) every rank evaluates its shard of the split (the mIoU is the single-process one); the
    latency is timed by rank 0 alone, with every core of its machine, while the other ranks wait; rank 0 writes."""

    dist = dist or DistInfo()
    if dist.is_main:
        prepare_output_folder(out)
    rows: list[dict] = []
    machine: dict = {}
    try:
        _measure_entries(entries, options, rows, machine, progress, dist)
    except KeyboardInterrupt:  # the models measured so far are kept
        if not rows or not dist.is_main:
            raise
        _write_report(rows, machine, out, f"interrupted after {len(rows)} row(s); the models after them are missing")
        raise Interrupted(
            f"after {len(rows)} row(s) ({', '.join(row['name'] for row in rows)}); they are in "
            f"{out}/report.md (.csv, .json) and {out}/pareto.png"
        ) from None
    if dist.is_main:
        _write_report(rows, machine, out)
    return rows


def _write_report(rows: list[dict], machine: dict, out: Path, incomplete: str | None = None) -> None:
    _name_apart(rows)
    try:
        _write_tables(rows, machine, out, incomplete)
        _plot(rows, machine, out / "pareto.png", incomplete)
    except OSError as exc:
        raise write_failure(exc, f"report in {out}", kept="files already renamed into place are complete") from None


def _measure_entries(
    entries: list[ReportEntry], options: ReportOptions, rows: list[dict], machine: dict, progress, dist: DistInfo
) -> None:
    """Each entry's rows appended to `rows` as it is measured (and `machine` described), so that an interrupted
    report keeps them."""
    import torch

    from seglite.evaluation.evaluator import EvalOptions, evaluate
    from seglite.inference.segmenter import Segmenter

    for entry in entries:
        base = Segmenter(model=entry.model, weights=entry.weights, device=options.device)
        exported = base.loaded.config.get("artifact")
        sizes = (base.loaded.fixed_size(),) if exported or not options.sizes else options.sizes
        del base  # an exported model's runtime may hold a process-wide resource (ExecuTorch's thread pool)
        for size in sizes:
            segmenter = Segmenter(model=entry.model, weights=entry.weights, device=options.device, size=size)
            miou, evaluated = None, {"dataset": None, "data_root": None, "split": None, "eval_images": 0}
            if (options.data_root is not None or options.data) and entry.weights is not None:  # at the timed size
                dataset = load_dataset(options.data, options.data_root)
                same = sorted(map(str.lower, segmenter.loaded.classes)) == sorted(map(str.lower, dataset.names))
                class_map = None if same else options.class_map  # models of the data set's own classes need none
                result = evaluate(
                    segmenter,
                    dataset,
                    EvalOptions(
                        split=options.split,
                        limit=options.eval_limit,
                        progress=progress is not None,
                        class_map=class_map,
                    ),
                    dist,
                )
                miou = round(result.summary["miou"], 2)
                # What stands behind the figure: 2 frames do not read like a Cityscapes val score.
                evaluated = {
                    "dataset": result.extra["dataset"],
                    "data_root": result.extra["data_root"],
                    "split": result.extra["split"],
                    "eval_images": result.num_images,
                }
            if not dist.is_main:
                barrier(dist)  # idle while rank 0 times the model on the cores
                continue
            all_cores = len(os.sched_getaffinity(0)) if dist.world_size > 1 and options.device == "cpu" else None
            threads, threads_before = options.threads or all_cores, torch.get_num_threads()
            name, source = segmenter.model_name, segmenter.loaded.source
            if exported:  # its runtime, opened again on the timing's threads
                del segmenter
                gc.collect()
                latency = _time_exported(source, options, threads)
                backend = f"{exported} {latency.precision}"
            else:
                latency = _time_pytorch(segmenter, size, options, threads)
                backend = latency.backend
            torch.set_num_threads(threads_before)  # the eval of the next model shares the cores again
            barrier(dist)
            machine.update(latency.machine)
            rows.append(
                {
                    "name": entry.label or (f"{name} ({backend})" if exported else name),
                    "model": name,
                    "weights": source if entry.weights else None,
                    "size": f"{size[0]}x{size[1]}",
                    "miou": miou,
                    **evaluated,
                    "median_ms": latency.median_ms,
                    "p90_ms": latency.p90_ms,
                    "fps": latency.fps,
                    "params": latency.params,
                    "gflops": latency.gflops,
                    "backend": backend,
                    "device": latency.device,
                    "threads": latency.threads,
                }
            )
            if progress:
                progress(rows[-1])


def _name_apart(rows: list[dict]) -> None:
    """Rows that would share a name but hold different weights (the published s0.5 and one fine-tuned from it) are
    named by their weights too: the table and the plot must tell them apart."""
    weights_of: dict[str, set] = {}
    for row in rows:
        weights_of.setdefault(row["name"], set()).add(row["weights"])
    for row in rows:
        if len(weights_of[row["name"]]) > 1 and row["weights"] is not None and row["weights"] != row["name"]:
            row["name"] = f"{row['name']} ({_short_weights(row['weights'])})"


def _short_weights(weights: str) -> str:
    """A zoo name as it is; a checkpoint by its path from here (a run's best.pt/last.pt by its run folder)."""
    path = Path(weights)
    if not path.exists():
        return weights
    with contextlib.suppress(ValueError):
        path = path.resolve().relative_to(Path.cwd())
    return (path.parent if path.name in (BEST, LAST) else path).as_posix()


def _time_pytorch(segmenter, size: tuple[int, int], options: ReportOptions, threads: int | None):
    latency, _ = benchmark_backends(
        segmenter.loaded.model,  # unfolded: benchmark folds it, and params must be the model's own
        segmenter.model_name,
        size,
        backend=options.backend,
        device=resolve_device(options.device),
        threads=threads,
        warmup=options.warmup,
        iters=options.iters,
    )
    return latency


def _time_exported(source: str, options: ReportOptions, threads: int | None):
    from seglite.export.artifact import open_artifact

    return benchmark_artifact(open_artifact(source, threads=threads), options.warmup, options.iters, threads)


REPORT_FILES = ("report.md", "report.csv", "report.json", "pareto.png")


def write_json_and_csv(rows: list[dict], machine: dict, stem: Path, incomplete: str | None = None) -> None:
    """STEM.json ({machine, rows}, and `incomplete`: why rows are missing) and STEM.csv (one line per row), each
    written atomically."""
    table = {"machine": machine, "rows": rows} | ({"incomplete": incomplete} if incomplete else {})
    atomic_write_bytes(json.dumps(table, indent=2).encode(), stem.with_suffix(".json"))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(text.getvalue().encode(), stem.with_suffix(".csv"))


def _write_tables(rows: list[dict], machine: dict, out: Path, incomplete: str | None = None) -> None:
    write_json_and_csv(rows, machine, out / "report", incomplete)
    lines = [
        "# seglite report",
        "",
        *([f"**Incomplete: {incomplete}.**", ""] if incomplete else []),
        f"Machine: {describe_machine(machine)}.",
        "",
        "| name | model | weights | size | mIoU % | evaluated on | median ms | p90 ms | FPS | params | GFLOPs | backend |",
        "|---|---|---|---|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        miou = "-" if r["miou"] is None else f"{r['miou']:.2f}"
        where = (
            "-" if r["miou"] is None else f"{r['dataset']} {r['split']}, {r['eval_images']} images ({r['data_root']})"
        )
        lines.append(
            f"| {r['name']} | {r['model']} | {r['weights'] or 'random init'} | {r['size']} | {miou} | {where} | "
            f"{r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['fps']:.1f} | {r['params']:,} | {r['gflops']:.2f} | "
            f"{r['backend']} |"
        )
    lines += ["", "![mIoU or complexity against latency](pareto.png)", ""]
    atomic_write_bytes("\n".join(lines).encode(), out / "report.md")


def _plot(rows: list[dict], machine: dict, path: Path, incomplete: str | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    have_miou = any(r["miou"] is not None for r in rows)
    plotted = [r for r in rows if r["miou"] is not None] if have_miou else rows
    y_key, y_label = ("miou", "mIoU (%)") if have_miou else ("gflops", "GFLOPs (lower is lighter)")
    fig, ax = plt.subplots(figsize=(9, 6))
    xs = [r["median_ms"] for r in plotted]
    ys = [r[y_key] for r in plotted]
    ax.scatter(xs, ys, color="tab:blue", zorder=3)
    for r, x, y in zip(plotted, xs, ys, strict=True):
        ax.annotate(f"{r['name']} {r['size']}", (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
    if have_miou:
        front = pareto_front(list(zip(xs, ys, strict=True)))
        # Circled as well as joined: a frontier of one model (it beats every other) is a point, not a line.
        ax.plot(
            [xs[i] for i in front], [ys[i] for i in front], "--o", color="tab:red", mfc="none", ms=11,
            label="Pareto frontier",
        )  # fmt: skip
        ax.legend()
    else:
        ax2 = ax.twinx()
        ax2.scatter(xs, [r["params"] / 1e6 for r in plotted], marker="x", color="tab:green")
        ax2.set_ylabel("parameters (M, crosses)")
    ax.set_xlabel(
        f"median latency (ms), batch 1, {plotted[0]['device']}, {plotted[0]['threads']} threads, "
        f"{'/'.join(sorted({r['backend'] for r in plotted}))}"
    )
    ax.set_ylabel(y_label)
    ax.set_title(
        f"seglite on {machine.get('gpu') or machine.get('cpu', '?')} ({machine.get('cores')} cores)", fontsize=10
    )
    ax.grid(alpha=0.3)
    save_figure(fig, path, incomplete)


def save_figure(fig, path: Path, incomplete: str | None = None) -> None:
    """A matplotlib figure as PNG, written atomically; the figure is closed. `incomplete`: why points are missing
    (an interrupted run), said above the plot as the tables say it."""
    import matplotlib.pyplot as plt

    if incomplete:
        fig.suptitle(f"Incomplete: {incomplete}", color="tab:red", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=120, format="png")
    plt.close(fig)
    atomic_write_bytes(buffer.getvalue(), path)
