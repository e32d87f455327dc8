"""`seglite train`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seglite.cli.common import (
    DataOption,
    _note_shared_cpu,
    app,
    console,
    err_console,
)
from seglite.errors import SegliteError


@app.command("train")
def train_cmd(
    config: Annotated[
        Path | None,
        typer.Argument(
            help="A YAML recipe, or the name of one in configs/ (e.g. camvid_espnetv2_s1.0_finetune); with --resume "
            "optional, the run's own is used."
        ),
    ] = None,
    data: DataOption = None,
    data_root: Annotated[
        Path | None, typer.Option("--data-root", help="Data root (overrides data.root and the data set's path).")
    ] = None,
    init: Annotated[
        str | None,
        typer.Option("--init", help="Fine-tune from these weights (zoo name, checkpoint or the authors' file)."),
    ] = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            "--teacher",
            help="Distil from these weights (zoo name or checkpoint trained on the same classes); sets "
            "distill.teacher.",
        ),
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
    print_config: Annotated[
        bool,
        typer.Option(
            "--print-config",
            help="Print the effective recipe (its base, --data, --init and --set applied; every key) as YAML, and exit.",
        ),
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
        err_console.print(f"resuming the newest run, {out}", highlight=False)
    chosen = out is None and not resume
    if chosen:
        out = next_free_name(Path(DEFAULT_RUNS) / "train", taken=lambda p: describe_run(p) is not None)

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
    if teacher is not None:
        fixed.append(f"distill.teacher={teacher}")
    if resume and (out / LAST).is_file():
        saved = read_checkpoint_file(out / LAST).get("config") or {}
        cfg, warnings = resume_config(saved, sets, fixed, str(out / LAST))
        for line in warnings:
            err_console.print(line, highlight=False)
    elif config is None and (resume or data in (None, "cityscapes")):
        raise SegliteError(_which_recipe(data) + (f"; --resume found no {out / LAST}" if resume else ""))
    else:
        picked = config is None
        if picked:  # own frames: what the own-data guide runs (Ultralytics' `train data=x.yaml` has a model)
            own = [] if data == "camvid" else ["class_map={}"]  # its map links CamVid's classes; yours link by name
            config, sets = Path(OWN_DATA_RECIPE), [*own, *sets]
            err_console.print(
                f"no recipe: {OWN_DATA_RECIPE} (fine-tunes the published Cityscapes ESPNetv2 s1.0 in CPU minutes"
                f"{', classes linked by name' if own else ''}; pass a recipe for another, see the own-data guide)",
                highlight=False,
            )
        cfg = load_config(config, [*fixed, *sets])
        if picked and (fitted := _fitted_to_frames(cfg, sets)):
            cfg = load_config(config, [*fixed, *sets, *fitted])
    if print_config:
        import yaml

        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False, width=120, default_flow_style=None)
        console.print(text.rstrip(), highlight=False)
        return
    if chosen:  # once the recipe is known to be good
        err_console.print(f"run folder: {out}", highlight=False)
    _note_shared_cpu()
    result = Trainer(cfg, out, resume=resume, exist_ok=exist_ok).run()
    if result.get("interrupted"):
        raise typer.Exit(130)
    best = result.get("best_miou")
    console.print(
        f"finished at iteration {result['iteration']}; best val mIoU "
        f"{'-' if best is None else f'{best:.2f} %'}; checkpoints in {out}",
    )
    console.print(  # each takes the run folder, and the data set it was trained on where one is needed
        f"next: seglite eval --weights {out} | seglite predict IMAGES_OR_VIDEO --weights {out} | "
        f"seglite export --weights {out} --format onnx",
        highlight=False,
        soft_wrap=True,
    )


OWN_DATA_RECIPE = "camvid_espnetv2_s1.0_finetune"


def _fitted_to_frames(cfg, sets: list[str]) -> list[str]:
    """For the recipe picked for own frames: where its 384x288 crops would see slivers of the frames (a phone's
    4032x3024), the val_size and scale_range that show whole scenes (said in a line); none where the frames fit,
    or where --set chose any of them."""
    from seglite.data.check import usual_frame_size
    from seglite.data.datasets import load_dataset
    from seglite.training.trainer import whole_scenes

    if any(item.split("=", 1)[0].strip() in ("data.val_size", "data.scale_range", "data.crop") for item in sets):
        return []
    try:
        frame = usual_frame_size(load_dataset(cfg.data.dataset, cfg.data.root), cfg.data.train_split)
    except SegliteError:  # the trainer names what is wrong with the data
        return []
    sliver = whole_scenes(frame, cfg.data) if frame else None
    if sliver is None:
        return []
    _, fit, scales = sliver
    err_console.print(
        f"frames: {frame[0]}x{frame[1]}, so large that the recipe's {cfg.data.crop[0]}x{cfg.data.crop[1]} crops would "
        f"see slivers of them: trained at {scales[0]:g}-{scales[1]:g}x (data.scale_range) and validated, and so "
        f"predicted, at {fit[0]}x{fit[1]} (data.val_size), where a crop sees a quarter of a scene; "
        "--set data.val_size=null keeps their own size",
        highlight=False,
    )
    return [f"data.val_size={fit}".replace(" ", ""), f"data.scale_range={scales}".replace(" ", "")]


def _which_recipe(data: str | None) -> str:
    """The recipe to start from, for the data at hand: own frames fine-tune the published weights (what the
    own-data guide runs), Cityscapes trains a paper's recipe, and the generated city trains in CPU minutes."""
    if data in (None, "cityscapes"):
        return (
            "pass a recipe: e.g. espnetv2_s2.0 (Cityscapes, the paper's), or synth_espnetv2_s0.5 (the generated city "
            "of `seglite data synth data/synth`, a few CPU minutes); every recipe is in configs/"
        )
    own = "" if data == "camvid" else " --set class_map={}"
    return (
        f"pass a recipe: e.g. seglite train {OWN_DATA_RECIPE} --data {data}{own} (fine-tunes the "
        "published Cityscapes ESPNetv2 s1.0 in CPU minutes; the own-data guide lists the others)"
    )
