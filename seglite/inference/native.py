"""Small C kernels that ship as source, built with the machine's C compiler at first use and loaded with ctypes.

Why not torch.compile (Inductor writes the same loops): its start-up is 3-4 s a process with a warm cache and 13 s
cold, more than its kernel saves over a minute of video; a C file builds in ~0.3 s once per machine and loads in
milliseconds. Without a compiler (or if the build fails) `load` returns None and callers keep their NumPy/OpenCV path.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

log = logging.getLogger(__name__)
_SOURCES = Path(__file__).parent
# No -ffast-math: sums keep their order. gcc stops at 256-bit vectors on some AVX-512 CPUs unless told.
_FLAGS = ["-O3", "-march=native", "-fPIC", "-shared", "-std=c99"]
if platform.machine() in ("x86_64", "AMD64"):
    _FLAGS.append("-mprefer-vector-width=512")
_loaded: dict[str, ctypes.CDLL | None] = {}
_lock = threading.Lock()


def compiler() -> str | None:
    return next(
        (found for name in (os.environ.get("CC", ""), "cc", "gcc", "clang") if name and (found := shutil.which(name))),
        None,
    )


def library_dir() -> Path:
    from seglite.zoo.registry import seglite_home

    return seglite_home() / "native"


def load(name: str) -> ctypes.CDLL | None:
    """The kernel library built from `<name>.c` beside this module (cached per source, flags, compiler and CPU)."""
    with _lock:
        if name not in _loaded:
            _loaded[name] = _build_and_load(name)
        return _loaded[name]


def _build_and_load(name: str) -> ctypes.CDLL | None:
    if os.environ.get("SEGLITE_NATIVE", "1") == "0":
        return None
    cc = compiler()
    if cc is None:
        log.info("no C compiler found: %s kernels off", name)
        return None
    source = _SOURCES / f"{name}.c"
    key = hashlib.sha256(source.read_bytes() + " ".join([cc, *_FLAGS, _cpu_identity()]).encode()).hexdigest()[:16]
    target = library_dir() / f"{name}-{key}.so"
    try:
        if not target.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as scratch:  # renamed into place once built
                built = Path(scratch) / target.name
                subprocess.run(
                    [cc, *_FLAGS, str(source), "-o", str(built)], check=True, capture_output=True, timeout=120
                )
                os.replace(built, target)
        return ctypes.CDLL(str(target))
    except (OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        log.warning("building the %s kernels failed (%s %s): using the slower path", name, exc, detail.decode()[-500:])
        return None


def _cpu_identity() -> str:
    """-march=native code may not run on another CPU (a home directory shared between machines, a VM moved to other
    hardware): the cache key holds the CPU's model and instruction-set flags."""
    try:
        with open("/proc/cpuinfo") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return platform.machine() + platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")  # x86 and ARM spellings
    return platform.machine() + "".join(sorted({line for line in lines if line.startswith(wanted)}))
