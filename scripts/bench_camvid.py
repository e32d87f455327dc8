"""Train every CamVid recipe (teachers first), evaluate it on CamVid val at one scale and with test-time scales and
flip, and print mIoU, per-class IoU, wall time and images/s; also the published Cityscapes ESPNetv2 s1.0/s2.0 weights
zero-shot on CamVid val through the class map, and INT8 of the CamVid-trained DeepLabV3+ LCNet 0.5x.

    python scripts/bench_camvid.py                                  # every recipe (about 2.5 hours on 2 cores)
    python scripts/bench_camvid.py --recipes camvid_espnetv2_s1.0_finetune --camvid ../shared/realdata/camvid

Run it alone on the machine: training speed is what it measures. The published weights are read from seglite's zoo
cache; where the cache lacks them and ../shared/realdata has them, they are placed there first (what a user
without network does by hand, as the offline error says).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from seglite.devices import cpu_description

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
RECIPES = (  # teachers before their students
    "camvid_espnetv2_s2.0_finetune",
    "camvid_espnetv2_s1.0_finetune",
    "camvid_espnetv2_s0.5_finetune",
    "camvid_espnetv2_s0.5_distill",
    "camvid_deeplabv3p_lcnet_050_distill",
    "camvid_espnetv1_finetune",
    "camvid_espnetv2_s0.5_scratch",
    "camvid_deeplabv3p_lcnet_050",
    "camvid_drivable_espnetv2_s0.5",
)
TEACHER = "camvid_espnetv2_s2.0_finetune"  # what the recipes with a distill section learn from
TTA = ("--scales", "0.75,1.0,1.25", "--flip")
ZERO_SHOT = ("espnetv2_s1.0_cityscapes_1024x512", "espnetv2_s2.0_cityscapes_1024x512")
CLASS_MAP = REPO / "configs" / "class_maps" / "cityscapes_to_camvid.yaml"


def seed_zoo_cache() -> None:
    from seglite.zoo.registry import cached_path, list_zoo

    for entry in list_zoo():
        target = cached_path(entry)
        local = next(REALDATA.joinpath("weights").rglob(entry.file), None) if REALDATA.is_dir() else None
        if not target.is_file() and local is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, target)


def seglite(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "seglite", *args], capture_output=True, text=True, cwd=REPO)
    if result.returncode != 0:
        sys.exit(f"seglite {' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return result


def evaluate(weights: str, camvid: Path, data: str | None, extra: tuple[str, ...] = ()) -> dict:
    args = ["eval", "--weights", weights, "--data-root", str(camvid), "--device", "cpu", "--json", *extra]
    args += ["--data", data or "camvid"]
    return json.loads(seglite(*args).stdout)


def train(recipe: str, camvid: Path, out: Path, tta: bool) -> dict:
    import yaml

    from seglite.training.config import load_config

    config = load_config(REPO / "configs" / f"{recipe}.yaml")
    run = out / recipe
    shutil.rmtree(run, ignore_errors=True)
    teacher = []
    if config.distill.teacher:  # this run's teacher, not the path the recipe names for a hand-made run
        teacher_weights = out / TEACHER / "best.pt"
        if not teacher_weights.is_file():
            sys.exit(f"{recipe} distils from {TEACHER}: train that recipe first (it is first in --recipes)")
        teacher = ["--teacher", str(teacher_weights)]
    start = time.perf_counter()
    seglite("train", f"configs/{recipe}.yaml", "--data-root", str(camvid), "--out", str(run), *teacher)
    seconds = time.perf_counter() - start
    steps = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rate = [s["images_per_second"] for s in steps if "images_per_second" in s][-1]
    dataset = config.data.dataset
    data = None
    if isinstance(dataset, dict):  # an inline data set: evaluate through the same definition
        data_file = run / "dataset.yaml"
        data_file.write_text(yaml.safe_dump(dataset))
        data = str(data_file)
    record = evaluate(str(run / "best.pt"), camvid, data, ("--backend", "torch"))
    row = {
        "recipe": recipe,
        "minutes": seconds / 60,
        "images_per_second": rate,
        **record,
        "weights": str(run / "best.pt"),
    }
    if tta:
        augmented = evaluate(str(run / "best.pt"), camvid, data, ("--backend", "torch", *TTA))
        row["miou_tta"], row["tta_ms_per_image"] = augmented["miou"], augmented["model_ms_per_image"]
    return row


def table(rows: list[dict]) -> None:
    names = list(rows[0]["per_class_iou"]) if rows else []
    print(
        f"\n{'run':44s} {'mIoU':>6s} {'TTA':>6s} {'TTA ms':>7s} {'min':>6s} {'img/s':>6s}  "
        f"per-class IoU ({', '.join(names)})"
    )
    for row in rows:
        per_class = " ".join("-" if v is None else f"{v:.1f}" for v in row["per_class_iou"].values())
        cells = [
            f"{row[key]:{fmt}}" if row.get(key) is not None else "-"
            for key, fmt in (("miou_tta", ".2f"), ("tta_ms_per_image", ".1f"), ("minutes", ".1f"))
        ]
        rate = f"{row['images_per_second']:.2f}" if row.get("images_per_second") is not None else "-"
        print(
            f"{row['recipe']:44s} {row['miou']:6.2f} {cells[0]:>6s} {cells[1]:>7s} {cells[2]:>6s} {rate:>6s}  {per_class}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--camvid", type=Path, default=REALDATA / "camvid", help="CamVid root (SegNet layout)")
    parser.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated recipe names")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_camvid")
    parser.add_argument("--no-zero-shot", action="store_true")
    parser.add_argument("--no-int8", action="store_true")
    parser.add_argument("--no-tta", action="store_true", help="skip the eval at scales 0.75,1.0,1.25 with flip")
    args = parser.parse_args()
    print(f"CPU: {cpu_description()}", flush=True)
    if not (args.camvid / "val").is_dir():
        sys.exit(f"{args.camvid}: no CamVid here (train/, val/, trainannot/, valannot/); pass --camvid DIR")
    seed_zoo_cache()
    rows = []
    if not args.no_zero_shot:
        for name in ZERO_SHOT:
            extra = ("--class-map", str(CLASS_MAP), "--size", "480x360", "--backend", "torch")
            record = evaluate(name, args.camvid, None, extra)
            rows.append({"recipe": f"{name} zero-shot", "minutes": None, "images_per_second": None, **record})
            table(rows[-1:])
    for recipe in [r for r in args.recipes.split(",") if r]:
        rows.append(train(recipe, args.camvid, args.out, not args.no_tta))
        table(rows[-1:])
    table(rows)
    lcnet = next((r for r in rows if r["recipe"] == "camvid_deeplabv3p_lcnet_050"), None)
    if lcnet is not None and not args.no_int8:
        result = subprocess.run(
            [sys.executable, "-m", "seglite", "quantize", "--weights", lcnet["weights"], "--data", "camvid",
             "--data-root", str(args.camvid), "--size", "480x360", "--json"],
            capture_output=True, text=True, cwd=REPO,
        )  # fmt: skip
        print("\nINT8 (seglite quantize, CamVid train calibrates, val measures):")
        print(result.stdout.strip() or result.stderr.strip().splitlines()[-1])
    (args.out / "bench_camvid.json").parent.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_camvid.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
