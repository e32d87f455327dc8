"""UpsampledArgmax: labels of low-res logits after a chain of bilinear resizes, computed only where in doubt.

Held equal, pixel for pixel, to its own brute-force definition (every class at every pixel, float64), and that
definition to PyTorch's and OpenCV's float32 resizes except where two classes are within float rounding."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import require_realdata

from seglite.inference.postprocess import UpsampledArgmax, interpolation_matrix, resize_argmax

# (low size, steps the net leaves out, frame size): ESPNetv2's align_corners x2 then a frame of another shape,
# DeepLabV3+'s half-pixel x4, ESPNet's logits at input size, a frame smaller than the input, odd sizes.
GEOMETRIES = [
    ((32, 64), [((64, 128), True)], (68, 120)),
    ((16, 32), [((64, 128), False)], (68, 120)),
    ((64, 128), [], (68, 120)),
    ((32, 64), [((64, 128), True)], (45, 60)),
    ((13, 21), [((26, 42), True)], (29, 31)),
    ((16, 32), [((64, 128), False)], (64, 128)),
]


def smooth_logits(classes: int, size: tuple[int, int], seed: int, ties: bool = False) -> np.ndarray:
    """Class scores with regions and boundaries like a network's; `ties` rounds them so classes tie exactly."""
    generator = torch.Generator().manual_seed(seed)
    coarse = 3 * torch.randn(1, classes, max(2, size[0] // 4), max(2, size[1] // 4), generator=generator)
    logits = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0].numpy()
    return np.ascontiguousarray(np.round(logits) if ties else logits, np.float32)


def exact_logits(logits: np.ndarray, steps, out_size) -> np.ndarray:
    """The resized logits by dense float64 matrices (independent of UpsampledArgmax's sparse windows)."""
    matrices = []
    for axis in (0, 1):
        matrix = np.eye(logits.shape[1 + axis])
        for size, corners in [*steps, (out_size, False)]:
            if size[axis] != matrix.shape[0]:
                matrix = interpolation_matrix(matrix.shape[0], size[axis], corners) @ matrix
        matrices.append(matrix)
    return np.einsum("yh,chw,xw->cyx", matrices[0], logits.astype(np.float64), matrices[1])


@pytest.mark.parametrize("low_size, steps, out_size", GEOMETRIES)
@pytest.mark.parametrize("ties", [False, True])
def test_fast_labels_equal_every_class_at_every_pixel(low_size, steps, out_size, ties):
    upsampled = UpsampledArgmax(low_size, steps, out_size)
    for seed in range(3):
        logits = smooth_logits(19, low_size, seed, ties)
        labels = upsampled(logits)
        assert labels.shape == out_size and labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, upsampled.reference_argmax(logits))
        assert len(np.unique(labels)) > 3  # boundaries to decide, not one class everywhere


@pytest.mark.parametrize("low_size, steps, out_size", GEOMETRIES)
def test_the_definition_is_the_resized_logits_argmax(low_size, steps, out_size):
    logits = smooth_logits(19, low_size, seed=5)
    exact = exact_logits(logits, steps, out_size)
    top_two = np.sort(exact, axis=0)[-2:]
    labels = UpsampledArgmax(low_size, steps, out_size).reference_argmax(logits)
    differ = labels != exact.argmax(0)
    assert (top_two[1] - top_two[0])[differ].max(initial=0) < 1e-9  # only where the best two are equal in float64

    # PyTorch's resizes (the nets' own) then OpenCV's to the frame (seglite's CPU path so far), in float32.
    tensor = torch.from_numpy(logits)[None]
    for size, corners in steps:
        tensor = F.interpolate(tensor, size=size, mode="bilinear", align_corners=corners)
    float32_labels = resize_argmax(tensor[0], out_size)
    differ = labels != float32_labels
    assert differ.mean() < 1e-3
    assert (top_two[1] - top_two[0])[differ].max(initial=0) < 1e-4  # float32 rounding decides only near-ties


def test_interpolation_matrix_matches_pytorch_and_opencv():
    signal = np.random.default_rng(0).normal(size=(1, 1, 1, 17)).astype(np.float32)
    for n_out, corners in [(40, True), (40, False), (9, False), (17, False)]:
        expected = F.interpolate(torch.from_numpy(signal), size=(1, n_out), mode="bilinear", align_corners=corners)
        got = interpolation_matrix(17, n_out, corners) @ signal[0, 0, 0]
        np.testing.assert_allclose(got, expected[0, 0, 0].numpy(), atol=1e-5)
        if not corners:
            np.testing.assert_allclose(got, cv2.resize(signal[0, 0], (n_out, 1))[0], atol=1e-5)


def test_published_espnetv2_on_real_frames_gives_the_labels_of_the_full_resize():
    weights = require_realdata("weights", "espnetv2", "espnetv2_s_0.5_city_1024x512.pth")
    clip = require_realdata("video", "solidWhiteRight.mp4")
    from seglite.inference.segmenter import Segmenter
    from seglite.models.base import without_final_upsample

    segmenter = Segmenter(weights=str(weights), device="cpu")
    capture = cv2.VideoCapture(str(clip))
    frames = [capture.read()[1] for _ in range(2)]
    capture.release()
    for frame in frames:
        batch = segmenter.to_tensor([frame])
        with torch.inference_mode(), without_final_upsample(align_corners_too=True) as left_out:
            low = segmenter.forward(batch)[0].float().numpy()
        with torch.inference_mode():
            full = segmenter.forward(batch)[0].float()
        upsampled = UpsampledArgmax(low.shape[1:], left_out, frame.shape[:2])
        labels = upsampled(low)
        np.testing.assert_array_equal(labels, upsampled.reference_argmax(low))
        assert (labels != resize_argmax(full, frame.shape[:2])).mean() < 1e-4
