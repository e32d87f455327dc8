"""Device choice shared by every command."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
import sys
from pathlib import Path

import torch

from seglite.errors import DeviceError


def resolve_device(device: str = "auto") -> torch.device:
    """--device: auto (CUDA when visible, else the CPU), cpu, cuda, cuda:N, or mps (Apple GPU, where PyTorch has it;
    never chosen by auto: seglite is not tested on it)."""
    device = (device or "auto").lower()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError:
        chosen = None
    if chosen is None or chosen.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"--device {device!r}: expected auto, cpu, cuda, cuda:N or mps")
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {device}: no CUDA GPU is visible to PyTorch; use --device cpu or auto")
        if chosen.index is not None and chosen.index >= (count := torch.cuda.device_count()):
            raise DeviceError(f"--device {device}: PyTorch sees {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}")
    if chosen.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"--device {device}: no Apple GPU (MPS) is visible to PyTorch here; use --device cpu or auto")
    return chosen


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt() parameter numbers from glibc's malloc.h
_allocator_tuned: bool | None = None


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse instead of handing it back to the OS; True if it took effect.

    Why: glibc serves every block over 32 MB (full-resolution logits are 40 MB at 1024x512) with a fresh mmap, and
    the OS zero-fills its pages on first touch, every forward pass: ~10 ms per 40 MB on the 2-core test machine,
    13-16 % of ESPNet's CPU latency. Served from the heap, repeat passes reuse warm pages. The cost: the process
    keeps its peak heap (flat, not growing). Linux/glibc only; SEGLITE_REUSE_MEMORY=0 turns it off.
    """
    global _allocator_tuned
    if _allocator_tuned is None:
        _allocator_tuned = False
        if sys.platform.startswith("linux") and os.environ.get("SEGLITE_REUSE_MEMORY", "1") != "0":
            try:
                libc = ctypes.CDLL("libc.so.6")
                _allocator_tuned = bool(libc.mallopt(_M_MMAP_MAX, 0)) and bool(
                    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
                )
            except (OSError, AttributeError):  # not glibc (e.g. musl): leave the allocator alone
                pass
    return _allocator_tuned


# The instruction sets that change which kernels are fastest (x86 and ARM names as /proc/cpuinfo spells them)
SPEED_FEATURES = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8",
    "asimd", "asimddp", "sve", "bf16", "i8mm",
)  # fmt: skip


def parse_cpuinfo(text: str) -> tuple[str | None, frozenset[str]]:
    """(model name or None, feature flags) of /proc/cpuinfo's text: x86 says `model name`/`flags`, ARM64
    `Model name` (or a board's `Model`)/`Features`."""
    fields = [(key.strip(), value.strip()) for key, _, value in (line.partition(":") for line in text.splitlines())]
    model = next((v for k, v in fields if k in ("model name", "Model name", "Model") and v), None)
    flags = next((v.split() for k, v in fields if k in ("flags", "Features")), [])
    return model, frozenset(flags)


@functools.lru_cache(maxsize=1)
def cpu_info() -> tuple[str, frozenset[str]]:
    """(model name, feature flags) of this machine; the platform's processor string and no flags without /proc."""
    try:
        with open("/proc/cpuinfo") as handle:
            model, flags = parse_cpuinfo(handle.read())
    except OSError:
        model, flags = None, frozenset()
    return model or platform.processor() or "unknown CPU", flags


def parse_cache_size(text: str) -> int:
    """Bytes of a sysfs cache `size` ("2048K", "1M", "32768")."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


@functools.lru_cache(maxsize=4)
def cpu_cache_bytes(level: int, root: str = "/sys/devices/system/cpu/cpu0/cache") -> int | None:
    """One core's data (or unified) cache at `level` as Linux reports it; None where it does not."""
    try:
        for folder in sorted(Path(root).glob("index*")):
            fields = {name: (folder / name).read_text().strip() for name in ("level", "type", "size")}
            if fields["level"] == str(level) and fields["type"] != "Instruction":
                return parse_cache_size(fields["size"])
    except (OSError, ValueError):
        pass
    return None


def cpu_description() -> str:
    """One line for benchmark headers: which CPU, how many cores, the features that decide kernel speed and the
    per-core L2 (cache blocking is sized from it)."""
    model, flags = cpu_info()
    features = [name for name in SPEED_FEATURES if name in flags]
    l2 = cpu_cache_bytes(2)
    cache = f", L2 {l2 >> 10} KiB a core" if l2 else ""
    return f"{model}, {os.cpu_count()} cores{cache}; {' '.join(features) or 'no vector features listed'}"


def cpu_supports_bf16() -> bool:
    """Native bf16 math (AVX512-BF16 or AMX): elsewhere oneDNN emulates it and bf16 is slower than fp32."""
    flags = cpu_info()[1]
    return "avx512_bf16" in flags or "amx_bf16" in flags


def free_memory_bytes(device: torch.device) -> int:
    """Memory a run can still take on the device: free GPU memory, or the system's available RAM."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def check_input_fits(size: tuple[int, int], outputs: int, batch: int, device: torch.device) -> None:
    """Refuse, before allocating anything, an input size whose activations cannot fit: a rough lower bound of
    4 bytes x (input + logits x 2 + ~48 feature channels) per pixel, which a huge --size exceeds by far."""
    width, height = size
    need = 4 * width * height * batch * (3 + 2 * outputs + 48)
    free = free_memory_bytes(device)
    if need > free:
        raise DeviceError(
            f"--size {width}x{height}: needs at least {need / 2**30:.1f} GiB of memory on {device}, "
            f"{free / 2**30:.1f} GiB are free; use a smaller --size (the networks run at any size)"
        )
