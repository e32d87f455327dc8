"""Logits to labels on the CPU: the exact bilinear resize + argmax, fast on 2 cores."""

from __future__ import annotations

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


def resize_argmax(logits: torch.Tensor, out_size: tuple[int, int]) -> np.ndarray:
    """C x h x w logits -> H x W uint8 argmax of the logits resized bilinearly (half-pixel centres, as
    align_corners=False) to out_size.

    Written by hand because neither NumPy nor OpenCV has a fast argmax over channels: one class plane at a time
    (resize, compare, running max) stays in cache and is ~4x faster than resizing all channels and calling argmax.
    A strictly greater score takes over, so ties keep the first class, as argmax does. It runs in whatever thread
    calls it without starting a second OpenMP team next to the model's, which on 2 cores stalls the video pipeline.
    """
    planes = _class_planes(logits.float())
    height, width = out_size
    resize = planes.shape[1:] != (height, width)
    scratch = np.empty((height, width), np.float32)

    def plane(index: int) -> np.ndarray:
        if not resize:
            return planes[index]
        return cv2.resize(planes[index], (width, height), dst=scratch, interpolation=cv2.INTER_LINEAR)

    best = plane(0).copy()
    labels = np.zeros((height, width), np.uint8)
    wins = np.empty((height, width), np.uint8)
    for index in range(1, len(planes)):
        scores = plane(index)
        cv2.compare(scores, best, cv2.CMP_GT, dst=wins)
        cv2.max(best, scores, dst=best)
        # Every class so far is below `index`, so taking the maximum with `index` where it wins sets it there.
        cv2.max(labels, cv2.min(wins, index, dst=wins), dst=labels)
    return labels
