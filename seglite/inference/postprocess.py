"""Logits to labels on the CPU: the exact bilinear resize + argmax, fast on 2 cores."""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import torch


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
