from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REALDATA = SHARED / "realdata"


# `seglite train --set` items for a tiny CPU run of configs/synth_espnetv2_s0.5.yaml on a generated city
TINY_TRAIN = [
    "model=espnetv2_s0.5",
    "data.crop=[128,64]",
    "data.val_size=[128,64]",
    "data.workers=0",
    "batch_size=2",
    "device=cpu",
    "optim.lr=0.01",
    "val_every=1000",
    "ckpt_every=1000",
]


def cli(*args: str) -> subprocess.CompletedProcess:
    """`seglite ARGS` in this process (no second torch import: ~3 s a call saved), with what the console entry point
    does: exit code, stdout and stderr as a subprocess would give them. For refusals and quick commands; anything
    that changes process-wide state (threads, signal handlers) belongs in a real subprocess."""
    import contextlib
    import io

    from seglite.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["seglite", *args]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    return subprocess.CompletedProcess(["seglite", *args], code, out.getvalue(), err.getvalue())


def require_realdata(*parts: str) -> Path:
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (../shared/realdata is not checked out here)")
    return path


def record_calling_threads(owner: object, method: str) -> set[str]:
    """Wrap `owner.method` (on the instance) so that every call adds its thread's name to the returned set: which
    calls ran in stream threads."""
    import threading

    callers: set[str] = set()
    wrapped = getattr(owner, method)

    def recording(*args, **kwargs):
        callers.add(threading.current_thread().name)
        return wrapped(*args, **kwargs)

    setattr(owner, method, recording)
    return callers


LARGE_TENSOR_PAGES = 5 * 40_000_000 // 4096  # what five fresh 40 MB tensors (full-resolution logits) touch


def large_tensor_page_faults(setup: str, env: dict) -> tuple[list[str], int]:
    """Run `setup` in a fresh Python, then count minor page faults while five 40 MB tensors are allocated and
    filled after twenty warm-up rounds (the heap grows a few blocks before glibc's bins serve every request).
    Returns what `setup` printed and the count."""
    code = (
        "import resource, torch\n"
        f"{setup}\n"
        "for _ in range(20):\n"
        "    torch.empty(10_000_000).fill_(1)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5):\n"
        "    torch.empty(10_000_000).fill_(1)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    *printed, count = out.stdout.split()
    return printed, int(count)
