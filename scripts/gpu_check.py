"""One command that proves every CUDA path of seglite and writes a JSON report and a table; exit 1 if a check fails.

    python scripts/gpu_check.py --out gpu_report          # on a CUDA machine: about 6-8 minutes
    python scripts/gpu_check.py --dry-run --out /tmp/dry  # the same plan on CPU at tiny sizes (part of the tests)

Steps: (1) the CUDA-marked tests; (2) `seglite train` with AMP on the generated city (loss falls, val mIoU,
images/s), the same under `torchrun --nproc_per_node 1` (NCCL), and resume after a SIGTERM against an uninterrupted
run; (3) `seglite eval` of the published ESPNetv2 s2.0 on the real Cityscapes frames, CUDA against CPU in fp32 and
the fp16 change; (4) model latency of every network at 1024x512 and 2048x1024, batch 1 and 8, fp32 and fp16, the
faster of eager and torch.compile (compiled at batch 1, 1024x512, within the time budget); (5) `predict` on the
real dash-cam clip with --half: end-to-end FPS against model-only FPS; (6) TensorRT fp32 and fp16 engines of the
published s2.0 (export parity with PyTorch, `seglite bench` latency). Each step has a time budget so the whole run
fits the few minutes a lent GPU gives; what a budget cut is said in the report, never silently dropped.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from seglite.files import atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]
REALDATA = REPO.parent / "shared" / "realdata"
S2 = REALDATA / "weights" / "espnetv2" / "espnetv2_s_2.0_city_1024x512.pth"
CITYSCAPES = REALDATA / "cityscapes_val_sample"
VIDEO = REALDATA / "video" / "solidWhiteRight.mp4"


class Plan:
    """Sizes and budgets: the real ones for a GPU, tiny ones for the CPU dry run."""

    def __init__(self, dry_run: bool):
        self.dry_run = dry_run
        self.device = "cpu" if dry_run else "cuda"
        self.train_iters = 10 if dry_run else 300
        self.train_crop = "[128,64]" if dry_run else "[512,256]"
        self.train_batch = 2 if dry_run else 8
        self.synth = ("8", "2", "192x96") if dry_run else ("40", "10", "1024x512")
        self.resume_iters = 6 if dry_run else 60
        self.eval_size = "256x128" if dry_run else "1024x512"
        self.bench_sizes = ((128, 64),) if dry_run else ((1024, 512), (2048, 1024))
        self.bench_batches = (1,) if dry_run else (1, 8)
        self.bench_precisions = ("fp32",) if dry_run else ("fp32", "fp16")
        self.bench_models = ("espnetv2_s0.5", "deeplabv3p_lcnet_050") if dry_run else None
        self.bench_iters = 2 if dry_run else 20
        self.compile_budget_s = 0 if dry_run else 150
        self.video_frames = 8 if dry_run else None


def run(args: list[str], env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, capture_output=True, text=True, cwd=REPO, env={**os.environ, **(env or {})}, timeout=timeout
    )


def seglite(*args: str, **kwargs) -> subprocess.CompletedProcess:
    result = run([sys.executable, "-m", "seglite", *args], **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"seglite {' '.join(args)}: exit {result.returncode}: {result.stderr.strip()[-600:]}")
    return result


def step_tests(plan: Plan, out: Path) -> dict:
    env = {"SEGLITE_TEST_DEVICE": "cpu"} if plan.dry_run else {}
    result = run(
        [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/test_cuda.py", "-p", "no:cacheprovider"], env
    )
    tail = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr[-300:]
    return {"ok": result.returncode == 0, "summary": tail}


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _train_args(plan: Plan, data: Path, out: Path, iters: int, amp: str = "auto") -> list[str]:
    sets = [
        f"schedule.iters={iters}", f"batch_size={plan.train_batch}", f"data.crop={plan.train_crop}",
        f"device={plan.device}", f"amp={amp}", f"val_every={iters}", "ckpt_every=5", "data.workers=2",
        "data.val_size=null", "log_every=10",
    ]  # fmt: skip
    args = ["train", "configs/synth_espnetv2_s0.5.yaml", "--data-root", str(data), "--out", str(out)]
    for item in sets:
        args += ["--set", item]
    return args


def step_train(plan: Plan, out: Path) -> dict:
    import torch

    data = out / "synth"
    train, val, size = plan.synth
    seglite("data", "synth", str(data), "--train", train, "--val", val, "--size", size)
    start = time.perf_counter()
    seglite(*_train_args(plan, data, out / "amp", plan.train_iters))
    seconds = time.perf_counter() - start
    steps = [m for m in _metrics(out / "amp") if "loss" in m]
    val = [m for m in _metrics(out / "amp") if "val_miou" in m]
    first, last = (sum(m["loss"] for m in part) / len(part) for part in (steps[:3], steps[-3:]))
    record = {
        "seconds": round(seconds, 1),
        "loss_first": round(first, 3),
        "loss_last": round(last, 3),
        "val_miou": round(val[-1]["val_miou"], 2) if val else None,
        "images_per_second": round(steps[-1]["images_per_second"], 1),
    }
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_port", "29581"]
    torchrun = run([*launcher, "-m", "seglite", *_train_args(plan, data, out / "ddp", plan.resume_iters)])
    record["torchrun_1_process"] = "ok" if torchrun.returncode == 0 else torchrun.stderr.strip()[-300:]
    record["backend"] = "nccl" if plan.device == "cuda" else "gloo"
    # Resume: SIGTERM mid-run, --resume to the end, compare with an uninterrupted run.
    seglite(*_train_args(plan, data, out / "straight", plan.resume_iters))
    # amp auto on a CPU times fp32 and bf16 on the first batch: near a tie two runs can choose differently, so the
    # interrupted run takes the straight run's choice (a resumed run keeps its own, which is what is checked).
    chosen = torch.load(out / "straight" / "last.pt", map_location="cpu", weights_only=True)["precision"]
    amp = {"fp32": "none"}.get(chosen, chosen)
    child = subprocess.Popen(
        [sys.executable, "-m", "seglite", *_train_args(plan, data, out / "cut", plan.resume_iters, amp)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and child.poll() is None:
        path = out / "cut" / "metrics.jsonl"
        if path.is_file() and sum(1 for _ in path.open()) >= plan.resume_iters // 2:
            child.send_signal(signal.SIGTERM)
            break
        time.sleep(0.2)
    child.wait(timeout=300)
    seglite(*_train_args(plan, data, out / "cut", plan.resume_iters, amp), "--resume")
    a, b = (
        torch.load(out / r / "last.pt", map_location="cpu", weights_only=True)["state_dict"]
        for r in ("straight", "cut")
    )
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].is_floating_point())
    record["resume_max_abs_diff"] = diff
    # CPU is bit-exact; cuDNN picks kernels per run, so CUDA is held to a tolerance (documented in the README).
    tolerance = 0.0 if plan.device == "cpu" else 5e-2
    record["ok"] = (
        last < first and record["torchrun_1_process"] == "ok" and diff <= tolerance and record["val_miou"] is not None
    )
    return record


def step_eval(plan: Plan, out: Path) -> dict:
    if not S2.is_file() or not CITYSCAPES.is_dir():
        return {"ok": True, "skipped": f"{S2} or {CITYSCAPES} absent"}
    common = ["eval", "--weights", str(S2), "--data-root", str(CITYSCAPES), "--size", plan.eval_size, "--json"]
    common += ["--backend", "torch"]
    cpu = json.loads(seglite(*common, "--device", "cpu").stdout)
    gpu = json.loads(seglite(*common, "--device", plan.device).stdout)
    half = json.loads(seglite(*common, "--device", plan.device, "--half").stdout)
    return {
        "ok": abs(cpu["miou"] - gpu["miou"]) <= 0.1,
        "cpu_fp32_miou": round(cpu["miou"], 3),
        f"{plan.device}_fp32_miou": round(gpu["miou"], 3),
        "half_miou_change": round(half["miou"] - gpu["miou"], 3),
        "half_precision": half["precision"],
        "images": cpu["num_images"],
    }


def step_latency(plan: Plan, out: Path) -> dict:
    import torch

    from seglite.bench.latency import benchmark
    from seglite.models.registry import create_model, list_models

    device = torch.device(plan.device)
    rows, compile_spent, cut = [], 0.0, []
    for name in plan.bench_models or list_models():
        model = create_model(name).eval()
        for size in plan.bench_sizes:
            for batch in plan.bench_batches:
                for precision in plan.bench_precisions:
                    eager = benchmark(
                        model, name, size, batch, device, precision=precision, warmup=3, iters=plan.bench_iters
                    )
                    row = {"model": name, "size": f"{size[0]}x{size[1]}", "batch": batch, "precision": precision,
                           "eager_ms": round(eager.median_ms, 2), "compile_ms": None}  # fmt: skip
                    if size == plan.bench_sizes[0] and batch == 1 and compile_spent < plan.compile_budget_s:
                        start = time.perf_counter()
                        compiled = benchmark(model, name, size, batch, device, precision=precision, warmup=3,
                                             iters=plan.bench_iters, compile=True)  # fmt: skip
                        compile_spent += time.perf_counter() - start
                        row["compile_ms"] = round(compiled.median_ms, 2)
                    elif size == plan.bench_sizes[0] and batch == 1:
                        cut.append(f"{name} {precision}")
                    row["best_ms"] = min(v for v in (row["eager_ms"], row["compile_ms"]) if v is not None)
                    rows.append(row)
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    record = {"ok": all(r["best_ms"] > 0 for r in rows), "rows": rows}
    if cut:
        record["compile_budget_cut"] = f"torch.compile not timed (budget {plan.compile_budget_s} s): {', '.join(cut)}"
    if plan.dry_run or not (REPO.parent / "ESPNet").is_dir():
        record["authors_code"] = "not timed: no clone of the authors' ESPNet/EdgeNets code next to the checkout"
    return record


def step_video(plan: Plan, out: Path) -> dict:
    if not VIDEO.is_file():
        return {"ok": True, "skipped": f"{VIDEO} absent"}
    video = VIDEO
    if plan.video_frames:  # the dry run: a short clip of the same video
        import cv2

        reader, video = cv2.VideoCapture(str(VIDEO)), out / "clip.mp4"
        writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (960, 540))
        for _ in range(plan.video_frames):
            ok, frame = reader.read()
            if ok:
                writer.write(frame)
        writer.release()
    args = [sys.executable, "scripts/bench_predict.py", "--video", str(video), "--device", plan.device, "--no-memory"]
    args += ["--rounds", "1"]  # one pass of the clip: the device time is short
    if not plan.dry_run:
        args.append("--half")
    result = run(args)
    if result.returncode != 0:
        return {"ok": False, "error": result.stderr.strip()[-400:]}
    last = result.stdout.strip().splitlines()[-1]
    return {"ok": "ratio" in last, "summary": last}


def step_engine(plan: Plan, out: Path) -> dict:
    """TensorRT: the published s2.0 as fp32 and fp16 engines, each checked against PyTorch by the export itself and
    timed by `seglite bench`; on the CPU (dry run) the one-line refusal, with nothing written."""
    import importlib.util

    if plan.dry_run:
        target = out / "engine"
        result = run([sys.executable, "-m", "seglite", "export", "--model", "espnetv2_s0.5", "--format", "engine",
                      "--size", "128x64", "--out", str(target)])  # fmt: skip
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        ok = result.returncode == 2 and len(lines) == 1 and "TensorRT" in lines[0] and not target.exists()
        return {"ok": ok, "refusal": result.stderr.strip()[-300:]}
    if importlib.util.find_spec("tensorrt") is None:
        return {"ok": True, "skipped": "tensorrt is not installed here (pip install tensorrt)"}
    if not S2.is_file():
        return {"ok": True, "skipped": f"{S2} absent"}
    rows = []
    for precision in ("fp32", "fp16"):
        folder = out / f"engine_{precision}"
        exported = json.loads(
            seglite("export", "--weights", str(S2), "--format", "engine", "--precision", precision, "--size",
                    "1024x512", "--out", str(folder), "--exist-ok", "--json").stdout
        )  # fmt: skip
        bench = json.loads(seglite("bench", "--weights", str(folder), "--json").stdout)
        rows.append({"precision": precision, "agreement": exported["agreement"], "file_mb": exported["file_mb"],
                     "export_s": exported["export_s"], "median_ms": round(bench["median_ms"], 2)})  # fmt: skip
    return {"ok": rows[0]["agreement"] is not None and rows[0]["agreement"] >= 0.995, "engines": rows}


STEPS = (
    ("tests", step_tests),
    ("train", step_train),
    ("eval", step_eval),
    ("latency", step_latency),
    ("video", step_video),
    ("engine", step_engine),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="the same plan on CPU at tiny sizes")
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "gpu_check")
    parser.add_argument("--steps", default=",".join(name for name, _ in STEPS))
    args = parser.parse_args(argv)
    plan = Plan(args.dry_run)
    if not args.dry_run:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device here: run with --dry-run, or on a GPU machine", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"device": plan.device, "dry_run": args.dry_run, "steps": {}}
    if not args.dry_run:
        import torch

        report["gpu"] = torch.cuda.get_device_name(0)
        report["torch"] = torch.__version__
    chosen = set(args.steps.split(","))
    for name, step in STEPS:
        if name not in chosen:
            continue
        start = time.perf_counter()
        try:
            record = step(plan, args.out)
        except Exception as exc:  # a failing step is reported, and the other steps still run
            record = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "trace": traceback.format_exc()[-1500:]}
        record["seconds"] = round(time.perf_counter() - start, 1)
        report["steps"][name] = record
        print(f"{name:8s} {'ok' if record['ok'] else 'FAILED':6s} {record['seconds']:7.1f} s  "
              f"{json.dumps({k: v for k, v in record.items() if k not in ('ok', 'seconds', 'rows', 'trace')})}")  # fmt: skip
        path = args.out / "gpu_check.json"
        atomic_write_bytes(json.dumps(report, indent=1).encode(), path)
    rows = report["steps"].get("latency", {}).get("rows", [])
    if rows:
        print(f"\n{'model':24s} {'size':>10s} {'batch':>5s} {'prec':>5s} {'eager ms':>9s} {'compile ms':>10s}")
        for r in rows:
            compiled = "-" if r["compile_ms"] is None else f"{r['compile_ms']:.2f}"
            print(
                f"{r['model']:24s} {r['size']:>10s} {r['batch']:5d} {r['precision']:>5s} {r['eager_ms']:9.2f} {compiled:>10s}"
            )
    failed = [name for name, record in report["steps"].items() if not record["ok"]]
    print(
        f"\nreport: {args.out / 'gpu_check.json'}; "
        + (f"FAILED: {', '.join(failed)}" if failed else "all checks passed")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
