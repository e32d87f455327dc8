"""Logits to labels on the CPU: the exact bilinear resize + argmax, fast on 2 cores."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from seglite.devices import cpu_cache_bytes
from seglite.inference import native


def class_argmax(logits: torch.Tensor) -> torch.Tensor:
    """N x C x H x W logits -> N x H x W class ids, the first of equal maxima, as torch.argmax(1) gives them. On a
    CPU torch.argmax over the strided class dimension is ~6x slower than max(1), which picks the same index:
    531 against 89 ms for 19 x 1024 x 2048 logits on 2 threads (Xeon; most of what eval spent on a Cityscapes frame
    beside the network)."""
    return logits.max(1).indices


def _class_planes(logits: torch.Tensor) -> np.ndarray:
    """C x h x w logits as contiguous class planes: free for NCHW; for channels_last (e.g. ESPNet's final deconv),
    OpenCV's transpose, ~5x faster than NumPy's or PyTorch's copy for 19 interleaved channels."""
    channels, height, width = logits.shape
    pixels = logits.permute(1, 2, 0)
    if not logits.is_contiguous() and pixels.is_contiguous():
        return cv2.transpose(pixels.numpy().reshape(height * width, channels)).reshape(channels, height, width)
    return logits.contiguous().numpy()


def resize_argmax(logits: torch.Tensor, out_size: tuple[int, int], threads: int = 1) -> np.ndarray:
    """C x h x w logits -> H x W uint8 argmax of the logits resized bilinearly (half-pixel centres, as
    align_corners=False) to out_size.

    Written by hand because neither NumPy nor OpenCV has a fast argmax over channels: one class plane at a time
    (resize, compare, running max) stays in cache and is ~4x faster than resizing all channels and calling argmax.
    A strictly greater score takes over, so ties keep the first class, as argmax does. `threads` split the classes
    (OpenCV releases the GIL; its own threads do not speed up these small resizes): for a caller whose cores are
    idle meanwhile, as the model's are between its calls.
    """
    planes = _class_planes(logits.float())
    groups = [range(len(planes) * k // threads, len(planes) * (k + 1) // threads) for k in range(threads)]
    results = _in_parallel(lambda classes: _resize_argmax_of(planes, classes, out_size), [g for g in groups if g])
    best, labels = results[0]
    wins = np.empty(labels.shape, np.uint8)
    for scores, later in results[1:]:  # later classes take over only where strictly greater
        cv2.compare(scores, best, cv2.CMP_GT, dst=wins)
        cv2.max(best, scores, dst=best)
        cv2.copyTo(later, wins, labels)
    return labels


def _resize_argmax_of(planes: np.ndarray, classes: range, out_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(best resized score, its class) over `classes`."""
    height, width = out_size
    resize = planes.shape[1:] != (height, width)
    scratch = np.empty((height, width), np.float32)

    def plane(index: int) -> np.ndarray:
        if not resize:
            return planes[index]
        return cv2.resize(planes[index], (width, height), dst=scratch, interpolation=cv2.INTER_LINEAR)

    best = plane(classes[0]).copy()
    labels = np.full((height, width), classes[0], np.uint8)
    wins = np.empty((height, width), np.uint8)
    for index in classes[1:]:
        scores = plane(index)
        cv2.compare(scores, best, cv2.CMP_GT, dst=wins)
        cv2.max(best, scores, dst=best)
        # Every class so far is below `index`, so taking the maximum with `index` where it wins sets it there.
        cv2.max(labels, cv2.min(wins, index, dst=wins), dst=labels)
    return best, labels


_pool: ThreadPoolExecutor | None = None


def _in_parallel(work: Callable, parts: list) -> list:
    """work(part) for every part, the first in this thread and the others in a shared pool."""
    global _pool
    if len(parts) == 1:
        return [work(parts[0])]
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2, thread_name_prefix="seglite-labels")
    others = [_pool.submit(work, part) for part in parts[1:]]
    return [work(parts[0])] + [future.result() for future in others]


def bilinear_taps(size_in: int, steps: list[tuple[int, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """One axis of a chain of bilinear resizes (each (size, align_corners), as F.interpolate) as every output's window
    of input taps: (start: size_out int32, weights: taps x size_out float32). Each output's weights are the chain's
    exact product (float64, then rounded once); its window holds every input it depends on."""
    matrix = torch.eye(size_in, dtype=torch.float64)[None]
    for size, align_corners in steps:
        matrix = F.interpolate(matrix, size=size, mode="linear", align_corners=align_corners)
    matrix = matrix[0].T  # size_out x size_in
    used = matrix != 0
    first = used.int().argmax(1)
    last = size_in - 1 - used.flip(1).int().argmax(1)
    taps = int((last - first).max()) + 1
    start = first.clamp(max=size_in - taps)
    window = start[:, None] + torch.arange(taps)
    weights = matrix.gather(1, window)
    assert torch.equal(used.gather(1, window).sum(1), used.sum(1)), "a bilinear chain's inputs lie in one window"
    return start.to(torch.int32).numpy(), weights.T.to(torch.float32).contiguous().numpy()


def grouped_taps(start: np.ndarray, weights: np.ndarray, size_in: int, group: int) -> tuple[np.ndarray, np.ndarray]:
    """bilinear_taps' outputs in groups of `group` consecutive ones sharing one input window: (window start: groups
    int32, weights: groups x window x group float32, zero where an input is not one of an output's taps)."""
    taps, size_out = weights.shape
    first = np.arange(0, size_out, group)
    last = np.minimum(first + group, size_out) - 1
    window = min(size_in, int((start[last] + taps - start[first]).max()))
    group_start = np.clip(start[first], 0, size_in - window)
    outputs = np.arange(size_out)
    block = np.zeros((len(first), window, group), np.float32)
    for tap in range(taps):
        block[outputs // group, start + tap - group_start[outputs // group], outputs % group] = weights[tap]
    return group_start.astype(np.int32), block


class ResizeChainArgmax:
    """Labels straight from logits at the network's own resolution: its last upsampling(s), the resize to the frame
    and the argmax, in one native pass (seglite/inference/upsample_argmax.c).

    Why: the full-resolution logits (40 MB at 1024x512) are never written or read; for ESPNetv2 s1.0 on a 960x540
    video this does in ~6.5 ms what the net's upsampling plus `resize_argmax` did in ~29 (scripts/bench_labels.py).
    The same labels up to float rounding (one chain of weights instead of two roundings: near-exact ties may differ,
    as between any two implementations). `steps`: (height, width, align_corners) of each resize after the logits,
    the frame last.
    """

    def __init__(self, logits_size: tuple[int, int], steps: list[tuple[int, int, bool]], grouped: bool = True):
        """grouped: the width pass in vector-wide groups of outputs where the build has them (`grouped_taps`) and a
        group's window is at most 4 vectors (a frame at least ~1/4 the logits' width); False: per-output taps."""
        self.library = upsample_argmax_library()
        if self.library is None:
            raise RuntimeError("the upsample_argmax kernels could not be built (no C compiler?)")
        self.rows = bilinear_taps(logits_size[0], [(h, corners) for h, _, corners in steps])
        self.cols = bilinear_taps(logits_size[1], [(w, corners) for _, w, corners in steps])
        self.col_group = self.library.upsample_argmax_group() if grouped else 0
        if self.col_group:
            group_start, block = grouped_taps(*self.cols, logits_size[1], self.col_group)
            if block.shape[1] <= 4 * self.col_group:
                self.cols = group_start, block
            else:
                self.col_group = 0
        self.col_taps = self.cols[1].shape[1 if self.col_group else 0]  # the window of a group, or the taps
        self.logits_size = logits_size
        self.out_size = (steps[-1][0], steps[-1][1])

    def __call__(self, logits: torch.Tensor) -> np.ndarray:
        """C x h x w logits (h, w = logits_size) -> H x W uint8 class ids.

        In the calling thread only: right after a forward pass the model's OpenMP threads spin-wait for a few ms, so a
        second thread measured no faster (LCNet 3.3 ms alone vs 4.1, ESPNetv2 s1.0 8.9 vs 8.4), and the other core
        meanwhile serves the video's decoding and encoding."""
        planes = np.ascontiguousarray(_class_planes(logits.float()), dtype=np.float32)
        classes, height, width = planes.shape
        if (height, width) != self.logits_size or classes > 256:
            raise ValueError(f"logits of {tuple(planes.shape)}: expected C x {self.logits_size}, C <= 256")
        out_height, out_width = self.out_size
        labels = np.empty(self.out_size, np.uint8)
        (row_start, row_weights), (col_start, col_weights) = self.rows, self.cols
        block, max_rows = self._blocks(classes)

        scratch = np.empty((classes, max_rows, out_width), np.float32)
        best, scores = np.empty(out_width, np.float32), np.empty(out_width, np.float32)
        self.library.upsample_argmax(
            _ptr(planes), classes, height, width, _ptr(col_start), _ptr(col_weights), self.col_taps, self.col_group,
            out_width, _ptr(row_start), _ptr(row_weights), len(row_weights), out_height, 0, out_height, block, max_rows,
            _ptr(scratch), _ptr(best), _ptr(scores), _ptr(labels),
        )  # fmt: skip
        return labels

    def _blocks(self, classes: int, cache_bytes: int | None = None) -> tuple[int, int]:
        """Output rows a block (its widened rows fill about `cache_bytes`: half a core's L2, 1 MiB where unknown, so
        they stay in L2 on a 1 MiB-L2 AMD Zen 4 as on a 2 MiB-L2 Xeon) and the most low-resolution rows one reads."""
        cache_bytes = cache_bytes or (cpu_cache_bytes(2) or 2 << 20) // 2
        start, weights = self.rows
        out_height, taps = len(start), len(weights)
        row_bytes = classes * self.out_size[1] * 4
        block = max(1, min(out_height, int(cache_bytes // row_bytes * out_height / max(1, start[-1] - start[0] + 1))))
        ends = np.minimum(np.arange(out_height) + block - 1, out_height - 1)
        return block, int((start[ends] - start).max()) + taps


def _ptr(array: np.ndarray) -> int:
    return array.ctypes.data


def upsample_argmax_library():
    """The kernels of upsample_argmax.c with their C signatures, or None where they cannot be built."""
    library = native.load("upsample_argmax")
    if library is not None and library.upsample_argmax.argtypes is None:
        pointer, size = ctypes.c_void_p, ctypes.c_int64
        library.upsample_argmax.argtypes = [pointer, size, size, size, pointer, pointer, size, size, size]
        library.upsample_argmax.argtypes += [pointer, pointer] + [size] * 6 + [pointer] * 4
        library.upsample_argmax.restype = None
        library.upsample_argmax_group.argtypes, library.upsample_argmax_group.restype = [], size
    return library
