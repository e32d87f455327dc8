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


def interpolation_matrix(n_in: int, n_out: int, align_corners: bool) -> np.ndarray:
    """n_out x n_in float64 weights of 1-D bilinear interpolation as F.interpolate(size=...) and cv2.resize define it
    (half-pixel centres clamped at the edges, or align_corners=True), in exact arithmetic."""
    out = np.arange(n_out, dtype=np.float64)
    if align_corners:
        source = out * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(n_out)
    else:
        source = np.maximum((out + 0.5) * (n_in / n_out) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), n_in - 1)
    high = np.minimum(low + 1, n_in - 1)
    fraction = source - low
    matrix = np.zeros((n_out, n_in))
    np.add.at(matrix, (np.arange(n_out), low), 1.0 - fraction)
    np.add.at(matrix, (np.arange(n_out), high), fraction)
    return matrix


class _Axis:
    """One axis of a chain of bilinear resizes: each output index reads a window of `window` consecutive low-res
    indices from `start`, with `weights` (the composed interpolation matrix restricted to that window)."""

    def __init__(self, n_low: int, sizes: list[tuple[int, bool]]):
        matrix = np.eye(n_low)
        for n_out, align_corners in sizes:
            if n_out != matrix.shape[0]:
                matrix = interpolation_matrix(matrix.shape[0], n_out, align_corners) @ matrix
        used = matrix != 0
        first = used.argmax(1)
        last = n_low - 1 - used[:, ::-1].argmax(1)
        self.window = int((last - first).max()) + 1
        self.start = np.minimum(first, n_low - self.window)
        # window x n_out: one contiguous row per tap, as the gathers below read them
        self.weights = np.stack([matrix[np.arange(len(matrix)), self.start + k] for k in range(self.window)])


class UpsampledArgmax:
    """Labels of low-resolution logits after a chain of bilinear resizes (a net's own final upsampling, then the
    resize to the frame), computed only where they are in doubt. For one geometry; build once, call per frame.

    Why by hand: resizing all ~20 class planes to every frame costs more than the rest of the post-processing, and no
    library resizes only where it matters. Each output logit is a convex combination of the logits in a small low-res
    window. Where one class is strictly on top at every cell of the window, it is on top of the combination: such
    pixels (~85 % of a street scene) take it directly. Elsewhere the classes on top somewhere in the window are
    interpolated, and the winner is kept if it beats the interpolated second-best logit map, which bounds every other
    class; the rare pixels where it does not get every class. Values are float64 from the exact interpolation weights,
    always in the same order, so the labels are the argmax of the exactly resized logits (first class on ties):
    `reference_argmax` computes that for every pixel and class, and the tests hold both equal.
    """

    def __init__(self, low_size: tuple[int, int], steps: list[tuple[tuple[int, int], bool]], out_size: tuple[int, int]):
        """`low_size` (h, w) of the logits; `steps`: ((height, width), align_corners) resizes in order; a half-pixel
        resize to `out_size` (H, W) is appended unless the last step ends there."""
        sizes = [(tuple(size), bool(corners)) for size, corners in steps]
        if not sizes or sizes[-1][0] != tuple(out_size):
            sizes.append((tuple(out_size), False))
        self.low_size, self.out_size = tuple(low_size), tuple(out_size)
        self.rows = _Axis(low_size[0], [(size[0], corners) for size, corners in sizes])
        self.cols = _Axis(low_size[1], [(size[1], corners) for size, corners in sizes])
        self.kernel = np.ones((self.rows.window, self.cols.window), np.uint8)
        # low-res flat offsets of a window's cells, row by row
        self.offsets = (np.arange(self.rows.window)[:, None] * low_size[1] + np.arange(self.cols.window)).ravel()

    def _pixels(self, flat_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Output pixels (flat indices) -> their window origins in a low-res plane and their row and column weights."""
        rows, cols = np.divmod(flat_index, self.out_size[1])
        origins = self.rows.start[rows] * self.low_size[1] + self.cols.start[cols]
        return origins, self.rows.weights[:, rows], self.cols.weights[:, cols]

    def _interpolate(self, flat: np.ndarray, origins: np.ndarray, row_weights: np.ndarray, col_weights: np.ndarray):
        """float64 interpolated values of `flat` (a low-res plane, or all of them with the class in `origins`).

        The same operations in the same order whichever pixels are asked for: the fast path and the reference agree
        to the bit, and every step is monotone, so logits below a bound everywhere stay below its interpolation."""
        cells = flat.take(self.offsets[:, None] + origins)  # window cells x pixels
        width = self.cols.window
        values = None
        for a in range(self.rows.window):
            across = cells[a * width] * col_weights[0]
            for b in range(1, width):
                across += cells[a * width + b] * col_weights[b]
            across *= row_weights[a]
            values = across if values is None else values.__iadd__(across)
        return values

    def _argmax_over(self, flat, classes, origins, row_weights, col_weights):
        """(best value, its class) per pixel over classes[k] (rows of class ids in ascending order, 255 = none)."""
        best = np.full(len(origins), -np.inf)
        labels = np.zeros(len(origins), np.uint8)
        plane = self.low_size[0] * self.low_size[1]
        for rank, column in enumerate(classes):
            chosen = slice(None) if rank == 0 else np.flatnonzero(column != 255)
            if rank and not len(chosen):
                break
            ids = column[chosen]
            values = self._interpolate(
                flat, ids * plane + origins[chosen], row_weights[:, chosen], col_weights[:, chosen]
            )
            current = best[chosen]
            wins = values > current
            current[wins] = values[wins]
            best[chosen] = current
            taken = labels[chosen]
            taken[wins] = ids[wins]
            labels[chosen] = taken
        return best, labels

    def reference_argmax(self, logits: np.ndarray) -> np.ndarray:
        """Every class at every pixel: the definition the fast path is held to (slow; for tests)."""
        height, width = self.out_size
        flat = np.ascontiguousarray(logits, np.float32).ravel()
        every = np.repeat(np.arange(len(logits), dtype=np.int64)[:, None], height * width, 1)
        return self._argmax_over(flat, every, *self._pixels(np.arange(height * width)))[1].reshape(height, width)

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        """C x h x w float32 logits (C < 255) -> H x W uint8 labels."""
        first, best, second = _top_two(logits)
        top = np.where(second < best, first, np.uint8(255))  # a tie on top is never a window's sure class
        # min == max of the top class over the window starting at each cell (OpenCV's anchor (0, 0)): sure there.
        highest = cv2.dilate(top, self.kernel, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
        lowest = cv2.erode(top, self.kernel, anchor=(0, 0), borderType=cv2.BORDER_REPLICATE)
        labels = np.where(highest == lowest, lowest, np.uint8(255)).take(self.rows.start, 0).take(self.cols.start, 1)
        doubtful = np.flatnonzero(labels == 255)
        if not len(doubtful):
            return labels
        flat = logits.ravel()
        origins, row_weights, col_weights = pixels = self._pixels(doubtful)
        # The classes on top somewhere in each pixel's window, ascending, each once (255 pads).
        on_top = np.sort(first.ravel().take(self.offsets[:, None] + origins), axis=0)
        repeated = on_top[1:] == on_top[:-1]
        on_top[1:][repeated] = 255
        on_top.sort(axis=0)
        winning, winner = self._argmax_over(flat, on_top.astype(np.int64), *pixels)
        # Any other class is at most the second-best logit at every cell of the window, so below its interpolation.
        bound = self._interpolate(second.ravel(), origins, row_weights, col_weights)
        unsettled = np.flatnonzero(~(winning > bound))
        if len(unsettled):
            every = np.repeat(np.arange(len(logits), dtype=np.int64)[:, None], len(unsettled), 1)
            some = origins[unsettled], row_weights[:, unsettled], col_weights[:, unsettled]
            winner[unsettled] = self._argmax_over(flat, every, *some)[1]
        labels.ravel()[doubtful] = winner
        return labels


def _top_two(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel: the first class with the largest logit, that logit, and the second largest (equal on a tie)."""
    best = logits[0].copy()
    second = np.full(best.shape, -np.inf, np.float32)
    first = np.zeros(best.shape, np.uint8)
    wins = np.empty(best.shape, np.uint8)
    loser = np.empty(best.shape, np.float32)
    for index in range(1, len(logits)):
        scores = logits[index]
        cv2.compare(scores, best, cv2.CMP_GT, dst=wins)
        cv2.max(first, cv2.min(wins, index, dst=wins), dst=first)  # the running first index is below `index`
        cv2.max(second, cv2.min(best, scores, dst=loser), dst=second)
        cv2.max(best, scores, dst=best)
    return first, best, second
