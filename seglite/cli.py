"""The `seglite` command: one small function per verb over the Python API."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from seglite.errors import SegliteError
from seglite.files import (
    choose_output,
    existing_file,
    existing_files,
    prepare_output_folder,
    write_failure,
)
from seglite.inference.segmenter import Segmenter
from seglite.sharing import share_cpu

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fast, lightweight street-scene segmentation.",
)
weights_app = typer.Typer(no_args_is_help=True, help="Published checkpoints: list the zoo, convert files.")
app.add_typer(weights_app, name="weights")
data_app = typer.Typer(no_args_is_help=True, help="Data sets: check, statistics, generate the synthetic city.")
app.add_typer(data_app, name="data")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
_state: dict = {"debug": False, "shared_cpu": None}


def _print_version(value: bool) -> None:
    if value:
        from seglite import __version__

        console.print(f"seglite {__version__}", markup=False)
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
            console.print(f"{key}:", markup=False)
            for inner, item in value.items():
                console.print(f"  {inner}: {item}", markup=False, highlight=False)
        else:
            console.print(f"{key}: {value}", markup=False, highlight=False)


def _note_shared_cpu(threads: int | None = None) -> None:
    """Say so when the CPU was found shared at start: timings then reflect the other programs' load. Silent when
    --threads chose the count (it overrides the choice)."""
    if _state["shared_cpu"] and threads is None:
        err_console.print(_state["shared_cpu"], markup=False, highlight=False, style="dim")


def print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


def print_table(title: str, columns: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A rich table whose first column is left-aligned and the rest (numbers) right-aligned."""
    table = Table(title=title)
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)


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
    print_table(
        f"seglite models: 19 classes, GFLOPs at {size} (GFLOPs = 2 x GMACs)",
        ("name", "params", "gflops"),
        [(r["name"], f"{r['params']:,}", f"{r['gflops']:.2f}") for r in rows],
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
    from seglite.bench.sizes import parse_size
    from seglite.data.synth import write_dataset, write_video

    wh = parse_size(size)
    try:
        write_dataset(out, train=train, val=val, size=wh, seed=seed)
        if video:
            write_video(video, frames=frames, size=wh, seed=seed)
    except OSError as exc:
        raise SegliteError(f"{exc.filename or out}: cannot write ({exc.strerror or exc})") from None
    console.print(f"wrote {train} train + {val} val images ({size}) to {out}" + (f", video {video}" if video else ""))


DataOption = Annotated[
    str | None,
    typer.Option(
        "--data", help="Data set: a built-in name (cityscapes, camvid) or a data set YAML (default cityscapes)."
    ),
]


def _dataset(data: str | None, data_root: Path | None):
    from seglite.data.datasets import load_dataset

    return load_dataset(data, data_root)


@data_app.command("check")
def data_check(
    root: Annotated[Path | None, typer.Argument(help="Data root (overrides the data set's path).")] = None,
    data: DataOption = None,
) -> None:
    """Counts per split, missing pairs, size mismatches and mask values that are no class; non-zero exit when broken."""
    from rich.progress import Progress

    from seglite.data.check import FULL_COUNTS, check_dataset

    spec = _dataset(data, root)
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("checking", total=None)
        reports = check_dataset(spec, progress=lambda: progress.advance(task))
    full = FULL_COUNTS.get(spec.name, {})
    table = Table(title=f"{spec.name}: {spec.root()} ({spec.num_classes} classes)")
    for column in ("split", "images", "labelled", f"full {spec.name}", "problems"):
        table.add_column(column)
    for r in reports:
        table.add_row(r.split, str(r.images), str(r.labelled), str(full.get(r.split, "-")), str(len(r.problems)))
    console.print(table)
    for r in reports:
        if r.unmapped:
            values = ", ".join(f"{v} ({n} px)" for v, n in sorted(r.unmapped.items())[:10])
            console.print(f"{r.split}: values outside label_mapping, read as ignore: {values}", markup=False)
    problems = [p for r in reports for p in r.problems]
    for problem in problems[:20]:
        err_console.print(f"  {problem}", markup=False)
    if problems:
        raise SegliteError(f"{spec.root()}: {len(problems)} problem(s) found (first: {problems[0]})")
    console.print("dataset OK")


@data_app.command("stats")
def data_stats(
    root: Annotated[Path | None, typer.Argument(help="Data root (overrides the data set's path).")] = None,
    data: DataOption = None,
    split: Annotated[str, typer.Option()] = "train",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Class pixel frequencies of a split and ESPNet's class weights w = 1 / ln(1.10 + p)."""
    from seglite.data.check import class_frequencies, espnet_class_weights

    spec = _dataset(data, root)
    freq = class_frequencies(spec, split)
    weights = espnet_class_weights(freq)
    rows = [
        {"class": n, "frequency": float(f), "espnet_weight": float(w)}
        for n, f, w in zip(spec.names, freq, weights, strict=True)
    ]
    if as_json:
        print_json(rows)
        return
    print_table(
        f"{spec.name} ({spec.root()}) [{split}] class frequencies",
        ("class", "frequency %", "ESPNet weight"),
        [(r["class"], f"{100 * r['frequency']:.3f}", f"{r['espnet_weight']:.3f}") for r in rows],
    )


@app.command("train")
def train_cmd(
    config: Annotated[
        Path | None,
        typer.Argument(help="A YAML recipe from configs/ (with --resume: optional, the run's own is used)."),
    ] = None,
    data: DataOption = None,
    data_root: Annotated[
        Path | None, typer.Option("--data-root", help="Data root (overrides data.root and the data set's path).")
    ] = None,
    init: Annotated[
        str | None,
        typer.Option("--init", help="Fine-tune from these weights (zoo name, checkpoint or the authors' file)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Run folder: checkpoints, metrics.jsonl, tensorboard/ (default: runs/train, runs/train2, ... "
            "whichever holds no run; with --resume, the newest run under runs/).",
        ),
    ] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="key=value, e.g. schedule.iters=2000.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue exactly from OUT/last.pt, with the run's own settings.")
    ] = False,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", "--overwrite", help="Train afresh in an --out that holds a run, replacing it.")
    ] = False,
) -> None:
    """Train on Cityscapes or your own data set (torchrun for several GPUs or nodes); Ctrl-C saves and stops."""
    from seglite.files import next_free_name
    from seglite.training.config import load_config, resume_config
    from seglite.training.trainer import DEFAULT_RUNS, LAST, Trainer, describe_run, newest_run
    from seglite.zoo.checkpoint import read_checkpoint_file

    if out is None and resume:
        out = newest_run(DEFAULT_RUNS)
        if out is None:
            raise SegliteError(f"--resume: no run with a {LAST} under {DEFAULT_RUNS}/; pass --out RUN")
        err_console.print(f"resuming the newest run, {out}", markup=False, highlight=False)
    elif out is None:
        out = next_free_name(Path(DEFAULT_RUNS) / "train", taken=lambda p: describe_run(p) is not None)
        err_console.print(f"run folder: {out}", markup=False, highlight=False)

    sets = list(overrides or [])
    fixed = []
    if data_root is not None:
        fixed.append(f"data.root={data_root}")
    if data is not None:
        fixed.append(f"data.dataset={data}")
        if data_root is None and not resume:  # the data set file says where it is, not the recipe's data.root
            fixed.append("data.root=null")
    if init is not None:
        fixed.append(f"init={init}")
    if resume and (out / LAST).is_file():
        saved = read_checkpoint_file(out / LAST).get("config") or {}
        cfg, warnings = resume_config(saved, sets, fixed, str(out / LAST))
        for line in warnings:
            err_console.print(line, markup=False, highlight=False)
    elif config is None:
        raise SegliteError(
            "pass a recipe (e.g. configs/synth_espnetv2_s0.5.yaml)"
            + (f"; --resume found no {out / LAST}" if resume else "")
        )
    else:
        cfg = load_config(config, [*fixed, *sets])
    _note_shared_cpu()
    result = Trainer(cfg, out, resume=resume, exist_ok=exist_ok).run()
    if result.get("interrupted"):
        raise typer.Exit(130)
    best = result.get("best_miou")
    console.print(
        f"finished at iteration {result['iteration']}; best val mIoU "
        f"{'-' if best is None else f'{best:.2f} %'}; checkpoints in {out}",
        markup=False,
    )


@app.command("eval")
def eval_cmd(
    model: Annotated[str | None, typer.Option("--model", help="Model name (see `seglite models`).")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Checkpoint path or zoo name.")] = None,
    data: DataOption = None,
    data_root: Annotated[
        Path | None, typer.Option("--data-root", help="Data root (overrides the data set's path).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "val",
    class_map: Annotated[
        Path | None,
        typer.Option("--class-map", help="YAML {data set class: predicted class(es)} for weights of other classes."),
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="Network input WxH; default: the weights' own, else full resolution.")
    ] = None,
    flip: Annotated[bool, typer.Option("--flip", help="Average with the horizontally flipped image.")] = False,
    scales: Annotated[str, typer.Option(help="Comma-separated test scales, e.g. 0.75,1.0,1.25.")] = "1.0",
    sliding_window: Annotated[
        str | None, typer.Option("--sliding-window", help="Crop WxH slid over the full-resolution image (overlap 1/3).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    half: Annotated[
        bool, typer.Option("--half", help="fp16 on CUDA, bf16 on CPU: measures what reduced precision costs.")
    ] = False,
    backend: Annotated[
        str,
        typer.Option(help="auto (CPU at --size: fastest of torch, onnx, torch.compile; measured once), torch or onnx."),
    ] = "auto",
    save_predictions: Annotated[
        Path | None, typer.Option("--save-predictions", help="Write labelId PNGs here.")
    ] = None,
    limit: Annotated[int | None, typer.Option(help="Evaluate only the first N images.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    exist_ok: Annotated[
        bool,
        typer.Option(
            "--exist-ok", "--overwrite", help="Write --save-predictions into a folder that holds earlier ones."
        ),
    ] = False,
) -> None:
    """mIoU, per-class IoU and pixel accuracy on a split, as the official Cityscapes evaluator computes them."""
    from seglite.bench.sizes import parse_size
    from seglite.devices import resolve_device
    from seglite.distributed import cleanup, init_distributed
    from seglite.evaluation.evaluator import EvalOptions, evaluate
    from seglite.inference.predict import DEFAULT_WEIGHTS

    scale_list = _parse_scales(scales)
    spec = _dataset(data or _trained_on(weights), data_root)
    if model is None and weights is None:
        if spec.layout != "cityscapes":
            raise SegliteError(f"pass --weights: the default weights ({DEFAULT_WEIGHTS}) predict Cityscapes classes")
        weights = DEFAULT_WEIGHTS
        err_console.print(f"no --weights: evaluating {DEFAULT_WEIGHTS}", markup=False)
    dist = init_distributed(resolve_device(device).type)  # under torchrun: each rank evaluates a shard
    if dist.enabled and resolve_device(device).type == "cuda":
        device = f"cuda:{dist.local_rank}"
    frames = _eval_frames(spec, split, limit, flip, sliding_window) // dist.world_size
    if save_predictions is not None:
        _on_main(dist, lambda: _prediction_folder(save_predictions, exist_ok))
    segmenter = _segmenter(model, weights, device, size, half, backend, frames=frames)
    result = evaluate(
        segmenter,
        spec,
        EvalOptions(
            class_map=class_map,
            split=split,
            flip=flip,
            scales=scale_list,
            save_predictions=save_predictions,
            limit=limit,
            progress=not as_json,
            window=parse_size(sliding_window),
        ),
        dist,
    )
    cleanup(dist)
    if not dist.is_main:
        return
    record = {
        **result.summary,
        "num_images": result.num_images,
        **result.extra,
        "size": "x".join(map(str, result.size)) if result.size else "full",
        "model": segmenter.model_name,
        "weights": segmenter.loaded.source,
        "precision": str(segmenter.dtype).removeprefix("torch."),
        "backend": f"{segmenter.backend} ({segmenter.backend_reason})",
        "flip": flip,
        "scales": list(scale_list),
        "sliding_window": sliding_window,
        "model_ms_per_image": round(1000 * result.seconds_model / max(1, result.num_images), 2),
        "metric_ms_per_image": round(1000 * result.seconds_metric / max(1, result.num_images), 2),
        "processes": dist.world_size,
    }
    if as_json:
        print_json(record)
        return
    table = Table(
        title=f"{record['model']} on {spec.name} {record['data_root']} [{split}], {record['num_images']} images, "
        f"size {record['size']}"
    )
    table.add_column("class")
    table.add_column("IoU %", justify="right")
    for name, value in record["per_class_iou"].items():
        table.add_row(name, "-" if value is None else f"{value:.2f}")
    console.print(table)
    console.print(
        f"mIoU {record['miou']:.2f} %   pixel accuracy {record['pixel_acc']:.2f} %   "
        f"model {record['model_ms_per_image']} ms/image, metric {record['metric_ms_per_image']} ms/image\n"
        f"backend {record['backend']}, {record['precision']}"
        + (f"\nclass map: {record['class_map']}" if record["class_map"] != "same classes" else ""),
        markup=False,
    )


def _prediction_folder(folder: Path, exist_ok: bool) -> Path:
    """`eval --save-predictions`: a folder with PNGs in it holds an earlier eval's predictions."""
    found = lambda f: sorted(f.rglob("*.png")) if f.is_dir() else []  # noqa: E731
    choose_output(folder, folder, found, exist_ok, "--save-predictions")
    return prepare_output_folder(folder, "--save-predictions")


def _trained_on(weights: str | None) -> str | None:
    """The built-in data set a seglite checkpoint was trained on (the default `--data` for evaluating it)."""
    from seglite.data.datasets import builtin_datasets
    from seglite.zoo.checkpoint import read_checkpoint_file

    if weights is None or not Path(weights).is_file() or Path(weights).suffix != ".pt":
        return None
    try:
        name = (read_checkpoint_file(weights).get("dataset") or {}).get("name")
    except SegliteError:
        return None  # the model loader names the problem with the file
    return name if name in builtin_datasets() else None


def _segmenter(
    model: str | None, weights: str | None, device: str, size: str | None, half: bool, backend: str, **options
) -> Segmenter:
    """The options every inference command shares; a spinner while `--backend auto` may be timing the backends
    (once per model, weights and size)."""
    from seglite.bench.sizes import parse_size

    status = "loading the model; a first run at this size times torch, onnx and torch.compile"
    with err_console.status(status) if backend == "auto" else contextlib.nullcontext():
        return Segmenter(
            model=model, weights=weights, device=device, size=parse_size(size), half=half, backend=backend, **options
        )


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


@app.command("bench")
def bench_cmd(
    model: Annotated[str | None, typer.Option("--model", help="Model name.")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Checkpoint path or zoo name (optional).")] = None,
    size: Annotated[str, typer.Option(help="Input WxH.")] = "1024x512",
    batch: Annotated[int, typer.Option(min=1)] = 1,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    threads: Annotated[int | None, typer.Option(help="CPU threads (default: torch's).")] = None,
    backend: Annotated[
        str,
        typer.Option(help="auto (CPU fp32: times torch, onnx and torch.compile, reports the fastest), torch or onnx."),
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
    from seglite.bench.latency import benchmark_backends
    from seglite.bench.sizes import parse_size
    from seglite.devices import resolve_device
    from seglite.zoo.checkpoint import load_model

    loaded = load_model(model, weights)
    _note_shared_cpu(threads)
    result, results = benchmark_backends(
        loaded.model,
        loaded.model_name,
        parse_size(size),
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
        console.print(f"backend auto: {compared} -> {result.backend}", markup=False, highlight=False)
    console.print(
        f"{result.model} [{result.backend}, {result.device}, {result.precision}, {size}, batch {batch}, "
        f"{result.threads} threads]\n  median {result.median_ms:.1f} ms  p90 {result.p90_ms:.1f}  "
        f"mean {result.mean_ms:.1f}  min {result.min_ms:.1f}  ->  {result.fps:.1f} FPS\n"
        f"  params {result.params:,}  GFLOPs {result.gflops:.2f}  peak memory {result.peak_memory_mb:.0f} MB\n"
        f"  machine: {result.machine}",
        markup=False,
        highlight=False,
    )


@app.command("report")
def report_cmd(
    models: Annotated[str | None, typer.Option("--models", help="Comma-separated MODEL or MODEL=WEIGHTS.")] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Every registered model (random init).")] = False,
    data: DataOption = None,
    data_root: Annotated[Path | None, typer.Option("--data-root", help="Data root for mIoU.")] = None,
    split: Annotated[str, typer.Option()] = "val",
    size: Annotated[
        list[str] | None, typer.Option("--size", help="WxH; repeat for several (default: the weights' own).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder (default: outputs/report, or report2, ... if it holds one).")
    ] = None,
    device: Annotated[str, typer.Option()] = "cpu",
    threads: Annotated[int | None, typer.Option()] = None,
    backend: Annotated[
        str, typer.Option(help="auto (CPU: fastest of torch, onnx, torch.compile per model), torch or onnx.")
    ] = "auto",
    iters: Annotated[int, typer.Option(min=1)] = 20,
    exist_ok: Annotated[bool, typer.Option("--exist-ok", "--overwrite", help="Replace the report in --out.")] = False,
) -> None:
    """Evaluate (when data is given) and benchmark several models; write report.{md,csv,json} and pareto.png."""
    from seglite.bench.report import REPORT_FILES, ReportOptions, build_report
    from seglite.bench.sizes import parse_size
    from seglite.models.registry import get_spec, list_models

    if all_models:
        entries = [(name, None) for name in list_models()]
    elif models:
        entries = []
        for item in models.split(","):
            name, _, weights = item.strip().partition("=")
            entries.append((name or None, weights or None))
    else:
        raise SegliteError("pass --models a,b=WEIGHTS,... or --all")
    for name, _ in entries:
        if name:
            get_spec(name)
    out = choose_output(out, Path("outputs/report"), existing_files(*REPORT_FILES), exist_ok)
    options = ReportOptions(
        sizes=tuple(parse_size(s) for s in size) if size else None,
        data_root=data_root,
        data=data,
        split=split,
        device=device,
        threads=threads,
        backend=backend,
        iters=iters,
    )

    def show(row: dict) -> None:
        miou = "" if row["miou"] is None else f"  mIoU {row['miou']:.2f}"
        console.print(f"{row['model']} {row['size']}: {row['median_ms']:.1f} ms{miou}", markup=False)

    build_report(entries, options, out, progress=show)
    console.print(f"report written to {out}/report.md (.csv, .json) and {out}/pareto.png")


@app.command("predict")
def predict_cmd(
    source: Annotated[
        list[str],
        typer.Argument(
            help="Images, folders, globs, video files, .txt lists of those; or one camera index (0) or stream URL.",
            show_default=False,
        ),
    ],
    model: Annotated[str | None, typer.Option("--model", help="Model name (default: the zoo's ESPNetv2 s2.0).")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Checkpoint path or zoo name.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    size: Annotated[str | None, typer.Option(help="Network input WxH (default: the weights' own).")] = None,
    half: Annotated[bool, typer.Option("--half", help="fp16 on CUDA, bf16 on a CPU with bf16 instructions.")] = False,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile the network (slow first frame, faster after).")
    ] = False,
    int8: Annotated[
        bool, typer.Option("--int8", help="CPU: the INT8 model accepted by `seglite quantize` for these weights.")
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            help="auto (CPU: fastest of torch, onnx, torch.compile where it pays; measured once), torch or onnx."
        ),
    ] = "auto",
    formats: Annotated[str, typer.Option("--format", help="overlay,color,trainid,labelid")] = "overlay",
    alpha: Annotated[float, typer.Option(min=0.0, max=1.0, help="Overlay opacity.")] = 0.5,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder (default: outputs/predict, or predict2, ... where it holds outputs of these inputs).",
        ),
    ] = None,
    batch: Annotated[int, typer.Option(min=1, help="Images or frames per forward pass.")] = 1,
    realtime: Annotated[bool, typer.Option("--realtime", help="Live sources: drop stale frames.")] = False,
    exist_ok: Annotated[
        bool, typer.Option("--exist-ok", "--overwrite", help="Replace outputs of an earlier run in --out.")
    ] = False,
) -> None:
    """Segment images, folders, videos, cameras or streams; write overlays and masks named after each input.

    Under torchrun the inputs are shared out by rank (each image, or each whole video, on one process)."""
    from seglite.devices import resolve_device
    from seglite.distributed import cleanup, gather_objects, init_distributed, shard
    from seglite.inference.outputs import check_formats, parse_formats
    from seglite.inference.predict import (
        DEFAULT_WEIGHTS,
        check_distinct_outputs,
        choose_output_folder,
        expand_sources,
        predict_units,
        work_units,
    )

    fmt = parse_formats(formats)
    sources = expand_sources(source)
    dist = init_distributed(resolve_device(device).type)
    if dist.enabled and resolve_device(device).type == "cuda":
        device = f"cuda:{dist.local_rank}"
    # Rank 0 alone decides the folder (another rank deciding later could see rank 0's first outputs).
    out = _on_main(dist, lambda: choose_output_folder(sources, out, fmt, exist_ok))
    check_distinct_outputs(sources, out, fmt)
    units = shard(work_units(sources), dist)
    if model is None and weights is None:
        weights = DEFAULT_WEIGHTS
    elif weights is None and dist.is_main:
        err_console.print(f"warning: no --weights: {model} is randomly initialised, its predictions mean nothing")
    frames = _expected_frames(sources, units)
    started = time.perf_counter()
    segmenter = _segmenter(model, weights, device, size, half, backend, int8=int8, compile=compile, frames=frames)
    set_up = time.perf_counter() - started
    check_formats(fmt, segmenter.loaded.dataset_name)
    if dist.is_main:
        err_console.print(
            f"{segmenter.model_name} ({segmenter.loaded.source}) on {segmenter.device}, backend "
            f"{segmenter.backend} ({segmenter.backend_reason}), input {segmenter.preprocess.size or 'native size'}"
            + (f"; set-up took {set_up:.0f} s (not in the FPS below)" if set_up >= 2 else "")
            + (f"; {dist.world_size} processes share the inputs" if dist.world_size > 1 else ""),
            markup=False,
        )
    with _predict_progress(dist.is_main) as (on_image, on_start, on_frames):
        run = predict_units(
            segmenter,
            sources,
            units,
            out,
            fmt,
            alpha=alpha,
            batch=batch,
            realtime=realtime,
            on_image=on_image,
            on_start=on_start,
            on_frames=on_frames,
        )
    runs = gather_objects(run, dist)
    cleanup(dist)
    failed = any(r.failures for r in runs)
    if dist.is_main:
        _print_predict_summary(runs, out)
    if failed:
        sys.exit(2)


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


def _expected_frames(sources, units) -> int | None:
    """Frames this process will segment (None if a source does not say): what `--backend auto` weighs a compile
    against."""
    total = 0
    for unit in units:
        if unit.image is not None:
            total += 1
            continue
        count = sources[unit.source].expected_frames()
        if count is None:
            return None
        total += count
    return total


@contextlib.contextmanager
def _predict_progress(show: bool):
    """Progress callbacks for images and video frames (rank 0 only under torchrun)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err_console, transient=True, disable=not show) as progress:
        tasks: dict = {}

        def on_image(_) -> None:
            if "images" not in tasks:
                tasks["images"] = progress.add_task("images", total=None, rate="")
            progress.advance(tasks["images"])

        def on_start(result) -> None:
            tasks["frames"] = progress.add_task("frames", total=result.expected_frames or None, rate="")
            tasks["t"] = time.perf_counter()

        def on_frames(n: int) -> None:
            progress.advance(tasks["frames"], n)
            done = progress.tasks[tasks["frames"]].completed
            progress.update(tasks["frames"], rate=f"{done / max(1e-9, time.perf_counter() - tasks['t']):.1f} FPS")

        yield on_image, on_start, on_frames


def _print_predict_summary(runs: list, out: Path) -> None:
    """Rank 0: every rank's failures once, the images line, each video (the stage table for a lone video)."""
    for failure in (f for r in runs for f in r.failures):
        err_console.print(f"error: {failure}", markup=False, highlight=False)
    images = sum(r.images for r in runs)
    videos = [v for r in runs for v in r.videos]
    if images:
        processed = sum(r.processed for r in runs)
        written = sum(len(r.written) for r in runs) - sum(len(v.outputs) for v in videos)
        console.print(f"{processed} of {images} image(s) segmented; {written} file(s) written to {out}", markup=False)
    if len(videos) == 1 and len(runs) == 1 and not images:
        _print_video_summary(videos[0], out)
    else:
        for video in videos:
            for path in video.outputs:
                console.print(f"wrote {path} ({video.frames_written} frames, {video.throughput:.2f} FPS)", markup=False)
    if len(runs) > 1:
        seconds = max(r.seconds for r in runs)
        frames = images + sum(v.frames_written for v in videos)
        console.print(
            f"{len(runs)} processes: {frames} image(s)/frame(s) in {seconds:.1f} s = {frames / max(seconds, 1e-9):.2f} "
            f"per second ({', '.join(f'rank {i}: {r.images} image(s), {len(r.videos)} video(s)' for i, r in enumerate(runs))})",
            markup=False,
        )


def _print_video_summary(result, out: Path) -> None:
    table = Table(
        title=f"{result.frames_written} frames in {result.seconds:.1f} s = {result.throughput:.2f} FPS "
        f"end to end" + (f", {result.frames_dropped} stale frames dropped" if result.frames_dropped else "")
    )
    table.add_column("stage")
    table.add_column("total s", justify="right")
    table.add_column("ms / frame", justify="right")
    for stage, seconds in result.stage_seconds.items():
        table.add_row(stage, f"{seconds:.2f}", f"{1000 * seconds / max(1, result.frames_written):.1f}")
    console.print(table)
    console.print(
        "threads: decode+preprocess | model+postprocess (on CUDA: postprocess with encode) | encode; on a CPU decode "
        "and encode run between model calls, so the model stage includes waiting for them"
    )
    for path in result.outputs:
        console.print(f"wrote {path}", markup=False)


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


@app.command("quantize")
def quantize_cmd(
    data: DataOption = None,
    data_root: Annotated[
        Path | None, typer.Option("--data-root", help="Data root: calibration frames and labelled frames.")
    ] = None,
    model: Annotated[str | None, typer.Option("--model")] = None,
    weights: Annotated[str | None, typer.Option("--weights", help="Checkpoint path or zoo name.")] = None,
    size: Annotated[str | None, typer.Option(help="Input WxH (default: the weights' own, else 1024x512).")] = None,
    calibration_split: Annotated[str, typer.Option(help="Split whose images calibrate the ranges.")] = "train",
    eval_split: Annotated[str, typer.Option(help="Labelled split for the mIoU change.")] = "val",
    threads: Annotated[int | None, typer.Option(help="ONNX Runtime threads for the timing.")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """INT8 for CPU: calibrate on real frames, measure latency and mIoU against fp32, keep it only if it pays.

    An accepted model (mIoU drop under 1 point, and faster) is cached; `predict --int8` then runs it.
    """
    from seglite.bench.quantize import MAX_MIOU_DROP, quantize_and_validate
    from seglite.bench.sizes import parse_size

    if weights is None:
        raise SegliteError("pass --weights (trained weights: the mIoU change of random weights means nothing)")
    report = quantize_and_validate(
        model, weights, _dataset(data, data_root), parse_size(size), calibration_split, eval_split, threads=threads
    )
    if as_json:
        print_json(report.to_dict())
    else:
        console.print(
            f"{report.model} {report.size}: fp32 {report.fp32_ms:.1f} ms, mIoU {report.fp32_miou:.2f} | "
            f"int8 {report.int8_ms:.1f} ms, mIoU {report.int8_miou:.2f} ({report.miou_change:+.2f} points, "
            f"argmax agreement {100 * report.argmax_agreement:.2f} %) on {report.eval_frames} {eval_split} frames, "
            f"calibrated on {report.calibration_frames} {calibration_split} frames",
            markup=False,
            highlight=False,
        )
    if not report.accepted:
        why = "it is slower than fp32" if report.int8_ms >= report.fp32_ms else ""
        if report.fp32_miou - report.int8_miou >= MAX_MIOU_DROP:
            why = f"mIoU drops by {-report.miou_change:.2f} points (>= {MAX_MIOU_DROP})" + (
                f" and {why}" if why else ""
            )
        raise SegliteError(f"INT8 not offered for {report.model}: {why}; keep fp32 (nothing cached)")
    console.print(f"accepted; cached at {report.path} (use `seglite predict --int8`)", markup=False)


def main() -> None:
    """Entry point: user mistakes end in one line on stderr and a non-zero exit, never a traceback."""
    try:
        code = app(standalone_mode=False)
    except SegliteError as exc:
        if _state["debug"]:
            raise
        label = "interrupted" if exc.exit_code == 130 else "[bold red]error:[/]"
        err_console.print(f"{label} {exc}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a write or read that no command wrapped: still one line, and the right exit code
        if _state["debug"]:
            raise
        failure = write_failure(exc, exc.filename or "a file", kept="see `seglite --debug` for where")
        err_console.print(f"[bold red]error:[/] {failure}", highlight=False, soft_wrap=True)
        sys.exit(failure.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: typer prints its own "Usage: ... Error: ..." text
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(exc, "exit_code", 2))
    # Typer turns Ctrl-C into Exit(130), which click returns rather than raises when standalone_mode is off.
    if isinstance(code, int) and code:
        if code == 130:
            err_console.print("interrupted")
        sys.exit(code)
