"""`seglite eval`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from seglite.cli.common import (
    ClassMapOption,
    DataOption,
    DataRootOption,
    RunnableWeightsOption,
    _dataset_of,
    _eval_frames,
    _join_run,
    _on_main,
    _parse_scales,
    _segmenter,
    app,
    console,
    err_console,
    print_json,
)
from seglite.errors import SegliteError
from seglite.files import (
    choose_output,
    prepare_output_folder,
)


@app.command("eval")
def eval_cmd(
    model: Annotated[str | None, typer.Option("--model", help="Model name (see `seglite models`).")] = None,
    weights: RunnableWeightsOption = None,
    data: DataOption = None,
    data_root: DataRootOption = None,
    split: Annotated[str, typer.Option(help="Split to evaluate.")] = "val",
    class_map: ClassMapOption = None,
    size: Annotated[
        str | None, typer.Option(help="Network input WxH; default: the weights' own, else full resolution.")
    ] = None,
    flip: Annotated[bool, typer.Option("--flip", help="Average with the horizontally flipped image.")] = False,
    scales: Annotated[str, typer.Option(help="Comma-separated test scales, e.g. 0.75,1.0,1.25.")] = "1.0",
    sliding_window: Annotated[
        str | None, typer.Option("--sliding-window", help="Crop WxH slid over the full-resolution image (overlap 1/3).")
    ] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps (Apple GPU, untested).")] = "auto",
    half: Annotated[
        bool, typer.Option("--half", help="fp16 on CUDA, bf16 on CPU: measures what reduced precision costs.")
    ] = False,
    backend: Annotated[
        str,
        typer.Option(
            help="auto (CPU at --size: fastest of torch, onnx, openvino, torch.compile; measured once), torch, onnx or openvino."
        ),
    ] = "auto",
    streams: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="On a CPU: images evaluated at once, each on its share of the threads (default: 2 where --backend "
            "auto measured that it pays for this network on this CPU, else 1).",
            show_default=False,
        ),
    ] = None,
    save_predictions: Annotated[
        Path | None,
        typer.Option(
            "--save-predictions",
            help="Write each prediction here as a PNG: Cityscapes labelIds (the official evaluator's input), "
            "else class ids.",
        ),
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
    from seglite.distributed import cleanup
    from seglite.evaluation.evaluator import EvalOptions, evaluate
    from seglite.sizes import parse_size
    from seglite.zoo.registry import DEFAULT_WEIGHTS

    scale_list = _parse_scales(scales)
    spec = _dataset_of(weights, data, data_root)
    if model is None and weights is None:
        if spec.layout != "cityscapes":
            raise SegliteError(f"pass --weights: the default weights ({DEFAULT_WEIGHTS}) predict Cityscapes classes")
        weights = DEFAULT_WEIGHTS
        err_console.print(f"no --weights: evaluating {DEFAULT_WEIGHTS}")
    dist, device = _join_run(device)  # under torchrun: each rank evaluates a shard
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
            streams=streams,
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
        "streams": result.streams,
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
        f"model {record['model_ms_per_image']} ms/image"
        + (f" ({result.streams} images at once, each on its share of the threads)" if result.streams > 1 else "")
        + f", metric {record['metric_ms_per_image']} ms/image\n"
        f"backend {record['backend']}, {record['precision']}"
        + (f"\nclass map: {record['class_map']}" if record["class_map"] != "same classes" else ""),
    )


def _pngs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.png")) if folder.is_dir() else []


def _prediction_folder(folder: Path, exist_ok: bool) -> Path:
    """`eval --save-predictions`: a folder with PNGs in it holds an earlier eval's predictions."""
    choose_output(folder, folder, _pngs, exist_ok, "--save-predictions")
    return prepare_output_folder(folder, "--save-predictions")
