"""scripts/gpu_check.py cannot rot while no GPU is at hand: its whole plan runs on the CPU at tiny sizes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.slow  # CI's second step (-m slow)
def test_gpu_check_dry_run_passes_every_step(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/gpu_check.py", "--dry-run", "--out", str(tmp_path)],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] and report["device"] == "cpu"
    steps = report["steps"]
    assert set(steps) == {"tests", "train", "eval", "latency", "video", "engine"}
    assert all(step["ok"] for step in steps.values()), steps
    assert steps["train"]["loss_last"] < steps["train"]["loss_first"]
    assert steps["train"]["resume_max_abs_diff"] == 0.0 and steps["train"]["torchrun_1_process"] == "ok"
    assert "passed" in steps["tests"]["summary"]
    rows = steps["latency"]["rows"]
    assert rows and all(row["eager_ms"] > 0 for row in rows)
    assert "all checks passed" in result.stdout
