"""The native labels path: the net's last upsampling, the resize to the frame and the argmax in one pass."""

from __future__ import annotations

import shutil
import subprocess

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, require_realdata

import seglite
from seglite.data.labels import CLASS_NAMES
from seglite.data.synth import render_scene
from seglite.inference import native
from seglite.inference.postprocess import (
    ResizeChainArgmax,
    bilinear_taps,
    class_argmax,
    grouped_taps,
    upsample_argmax_library,
)
from seglite.inference.segmenter import Segmenter
from seglite.zoo.checkpoint import LoadedWeights
from seglite.zoo.preprocess import IMAGENET

needs_kernels = pytest.mark.skipif(upsample_argmax_library() is None, reason="no C compiler: the native path is off")


@pytest.fixture(scope="module")
def street() -> np.ndarray:
    return render_scene(300, 170, seed=3)[0]


def chain_reference(logits: torch.Tensor, steps: list[tuple[int, int, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """F.interpolate step by step in float64, then argmax: (labels, margin of the winner over the runner-up)."""
    scores = logits.double()[None]
    for height, width, align_corners in steps:
        scores = F.interpolate(scores, size=(height, width), mode="bilinear", align_corners=align_corners)
    top2 = scores[0].topk(2, dim=0).values
    return scores[0].argmax(0).numpy(), (top2[0] - top2[1]).numpy()


@pytest.mark.parametrize(
    "size_in, steps",
    [
        (256, [(512, True), (540, False)]),  # ESPNetv2's x2 (corners aligned), then a 960x540 frame's height
        (128, [(512, False), (540, False)]),  # DeepLabV3+'s x4, then the frame
        (64, [(512, False), (360, False)]),  # x8, then a smaller frame (more taps an output)
        (37, [(74, True)]),  # one step
        (50, [(50, False)]),  # the identity
    ],
)
def test_bilinear_taps_are_the_chain_of_resizes(size_in, steps):
    start, weights = bilinear_taps(size_in, steps)
    signal = torch.randn(3, size_in, dtype=torch.float64)
    expected = signal[None]
    for size, align_corners in steps:
        expected = F.interpolate(expected, size=size, mode="linear", align_corners=align_corners)
    window = torch.from_numpy(start).long()[:, None] + torch.arange(len(weights))
    got = (signal[:, window] * torch.from_numpy(weights).double().T).sum(-1)
    assert start.min() >= 0 and start.max() + len(weights) <= size_in
    torch.testing.assert_close(got, expected[0], rtol=0, atol=1e-6)


def dense(start: np.ndarray, weights: np.ndarray, size_in: int) -> np.ndarray:
    """Per-output taps as the size_out x size_in matrix they stand for."""
    matrix = np.zeros((weights.shape[1], size_in))
    for tap, row in enumerate(weights):
        np.add.at(matrix, (np.arange(weights.shape[1]), start + tap), row)
    return matrix


@pytest.mark.parametrize(
    "size_in, steps, group",
    [
        (512, [(1024, True), (960, False)], 16),  # ESPNetv2's x2 then a 960-wide frame, AVX-512 groups
        (64, [(256, False), (301, False)], 8),  # x4 then an odd width: the last group is partial (AVX groups)
        (96, [(60, False)], 16),  # a smaller frame: wider windows
        (5, [(40, True)], 16),  # fewer inputs than a window would span: the window is the whole row
    ],
)
def test_grouped_taps_are_the_same_map_as_the_per_output_taps(size_in, steps, group):
    start, weights = bilinear_taps(size_in, steps)
    group_start, block = grouped_taps(start, weights, size_in, group)
    groups, window, width = block.shape
    assert width == group and groups == -(-len(start) // group) and window <= size_in
    assert group_start.min() >= 0 and group_start.max() + window <= size_in
    matrix = np.zeros((groups * group, size_in))
    for g in range(groups):
        matrix[g * group : (g + 1) * group, group_start[g] : group_start[g] + window] = block[g].T
    np.testing.assert_array_equal(matrix[: len(start)], dense(start, weights, size_in))
    assert not matrix[len(start) :].any()


@needs_kernels
@pytest.mark.parametrize(
    "classes, low, steps",
    [
        (19, (32, 64), [(64, 128, True), (70, 120, False)]),  # ESPNetv2-like: x2 corners aligned, then the frame
        (11, (16, 32), [(64, 128, False), (45, 80, False)]),  # DeepLabV3+-like: x4, then a smaller frame
        (19, (16, 32), [(128, 256, False), (97, 301, False)]),  # x8, then odd sizes, wider than tall
        (3, (20, 30), [(40, 60, True), (40, 60, False)]),  # the frame at the network's size
        (5, (48, 320), [(30, 40, False)]),  # a frame an eighth as wide: windows too wide to group, per-output taps
    ],
)
def test_resize_chain_argmax_equals_resizing_every_class_then_argmax(classes, low, steps):
    generator = torch.Generator().manual_seed(classes)
    # Smooth scores like a network's, crossing each other often (noise alone would make only near-ties).
    logits = F.interpolate(torch.randn(1, classes, 6, 8, generator=generator) * 4, size=low, mode="bilinear")[0]
    expected, margin = chain_reference(logits, steps)
    chain = ResizeChainArgmax(low, steps)
    labels = chain(logits)
    assert chain.col_group == (0 if low[1] > 4 * steps[-1][1] else upsample_argmax_library().upsample_argmax_group())
    per_output = ResizeChainArgmax(low, steps, grouped=False)
    assert per_output.col_group == 0
    assert np.array_equal(per_output(logits), labels)  # the grouped width pass sums the same terms in the same order
    assert labels.dtype == np.uint8 and labels.shape == steps[-1][:2]
    assert len(np.unique(expected)) >= min(classes, 3)
    clear = margin > 1e-4  # float32 and float64 may order near-exact ties either way
    assert clear.mean() > 0.99
    assert np.array_equal(labels[clear], expected[clear])
    channels_last = logits[None].contiguous(memory_format=torch.channels_last)[0]
    assert np.array_equal(chain(channels_last), labels)


@needs_kernels
def test_resize_chain_argmax_blocks_follow_the_l2_and_never_change_the_labels(monkeypatch):
    from seglite.inference import postprocess

    torch.manual_seed(2)
    logits = F.interpolate(torch.randn(1, 19, 6, 8) * 4, size=(64, 128), mode="bilinear")[0]
    chain = ResizeChainArgmax((64, 128), [(128, 256, True), (270, 480, False)])
    found = []
    for l2 in (None, 4 << 20, 1 << 20, 128 << 10, 1):  # unknown (as 2 MiB), 4 MiB, 1 MiB (AMD Zen 4), tiny
        monkeypatch.setattr(postprocess, "cpu_cache_bytes", lambda level, l2=l2: l2)
        found.append((chain._blocks(19)[0], chain(logits)))
    blocks = [block for block, _ in found]
    assert blocks[1] > blocks[0] > blocks[2] > blocks[3] > blocks[4] == 1, blocks  # widened rows fill half the L2
    assert all(np.array_equal(labels, found[0][1]) for _, labels in found)


@needs_kernels
def test_resize_chain_argmax_ties_keep_the_first_class():
    logits = torch.zeros(4, 8, 8)
    logits[1, :4] = logits[3, :4] = 2.0  # classes 1 and 3 tie on the top half, all four on the bottom half
    labels = ResizeChainArgmax((8, 8), [(16, 16, True), (12, 20, False)])(logits)
    assert set(np.unique(labels[:4])) == {1} and set(np.unique(labels[-4:])) == {0}


@needs_kernels
@pytest.mark.parametrize(
    "name, upsample",
    [("espnetv2_s0.5", (True,)), ("deeplabv3p_lcnet_050", (False,)), ("espnetv1_c", (False,)), ("espnetv1", ())],
)
def test_segmenter_leaves_the_last_upsampling_to_the_labels_with_the_same_result(name, upsample, street):
    torch.manual_seed(0)
    model = seglite.create_model(name, num_classes=19)
    field = torch.randn(1, 19, 4, 6) * 3  # a random net gives one or two classes everywhere: add smooth class scores

    def spread(module, inputs, output):
        return output + F.interpolate(field, size=output.shape[-2:], mode="bilinear").to(output)

    classifiers = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    next(m for m in reversed(classifiers) if m.out_channels == 19).register_forward_hook(spread)
    seg = Segmenter.from_loaded(_loaded(model, name), size=(256, 128))
    image = street
    batch = seg.to_tensor([image])
    logits, left_out = seg.forward_for_labels(batch)
    assert [step.align_corners for step in left_out] == list(upsample)
    full = seg.forward(batch)
    if left_out:
        assert logits.shape[-1] < 256 and left_out[0].size == (128, 256)
    expected = seg.labels_from_logits(full, image.shape[:2])[0]
    labels = seg.labels_from_logits(logits, image.shape[:2], left_out)[0]
    assert len(np.unique(expected)) > 2
    assert (labels == expected).mean() > 0.9999
    assert np.array_equal(seg(image), labels)


@needs_kernels
def test_segmenter_keeps_the_upsampling_for_padded_inputs(street):
    model = seglite.create_model("espnetv2_s0.5", num_classes=19)
    seg = Segmenter.from_loaded(_loaded(model, "espnetv2_s0.5"), size=(250, 130))  # not a multiple of the stride
    logits, left_out = seg.forward_for_labels(seg.to_tensor([street]))
    assert left_out == [] and logits.shape[-2:] == (130, 250)


def test_without_a_c_compiler_the_labels_take_the_opencv_path(monkeypatch, tmp_path, street):
    monkeypatch.setenv("SEGLITE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", "")
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    monkeypatch.setattr(native, "_loaded", {})
    assert native.load("upsample_argmax") is None
    model = seglite.create_model("espnetv2_s0.5", num_classes=19)
    seg = Segmenter.from_loaded(_loaded(model, "espnetv2_s0.5"), size=(256, 128))
    image = street
    logits, left_out = seg.forward_for_labels(seg.to_tensor([image]))
    assert left_out == [] and logits.shape[-2:] == (128, 256)
    assert seg(image).shape == image.shape[:2]
    assert not (tmp_path / "native").exists() or not any((tmp_path / "native").iterdir())


@needs_kernels
def test_native_kernels_build_once_into_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGLITE_HOME", str(tmp_path))
    monkeypatch.setattr(native, "_loaded", {})
    assert native.load("upsample_argmax") is not None
    built = list((tmp_path / "native").iterdir())
    assert len(built) == 1 and built[0].suffix == ".so"  # no leftover scratch from the build
    stamp = built[0].stat().st_mtime_ns
    monkeypatch.setattr(native, "_loaded", {})
    monkeypatch.setattr(native.subprocess, "run", _no_compiler_call)
    assert native.load("upsample_argmax") is not None
    assert built[0].stat().st_mtime_ns == stamp


@needs_kernels
def test_native_labels_of_real_frames_equal_the_float64_chain():
    weights = require_realdata("weights", "espnetv2", "espnetv2_s_1.0_city_1024x512.pth")
    video = require_realdata("video", "solidWhiteRight.mp4")
    capture = cv2.VideoCapture(str(video))
    frames = [capture.read()[1] for _ in range(3)]
    capture.release()
    frames.append(cv2.imread(str(next(require_realdata("cityscapes_val_sample", "leftImg8bit").rglob("*.png")))))
    seg = Segmenter(weights=str(weights))
    for frame in frames:
        logits, left_out = seg.forward_for_labels(seg.to_tensor([frame]))
        assert left_out and left_out[0].align_corners  # ESPNetv2's last step
        steps = [(*left_out[0].size, True), (*frame.shape[:2], False)]
        expected, margin = chain_reference(logits[0], steps)
        labels = seg.labels_from_logits(logits, frame.shape[:2], left_out)[0]
        clear = margin > 1e-4
        assert clear.mean() > 0.999 and len(np.unique(expected)) >= 8
        assert np.array_equal(labels[clear], expected[clear])


def _no_compiler_call(*args, **kwargs):
    raise AssertionError("the cached kernel library was rebuilt")


def _loaded(model: torch.nn.Module, name: str) -> LoadedWeights:
    return LoadedWeights(model.eval(), name, CLASS_NAMES, IMAGENET, "random init")


ARM64_TOOLS = ("aarch64-linux-gnu-gcc", "qemu-aarch64")


@needs_kernels
@pytest.mark.skipif(
    not all(shutil.which(tool) for tool in ARM64_TOOLS),
    reason="no ARM64 cross-compiler or emulator: apt-get install gcc-aarch64-linux-gnu qemu-user (scripts/test.sh "
    "installs them where it runs as root with apt)",
)
def test_native_kernel_gives_the_same_labels_on_arm64(tmp_path):
    """The kernel cross-compiled for ARM64 (as a Raspberry Pi or Jetson builds it) and run under qemu-user labels
    generated scores exactly as the kernel built for this CPU, and as the float64 chain where no near-tie is."""
    torch.manual_seed(4)
    logits = F.interpolate(torch.randn(1, 19, 16, 32), size=(64, 128), mode="bilinear")[0] * 4  # smooth regions
    steps = [(256, 512, True), (270, 480, False)]  # ESPNetv2's last upsampling, then a 480x270 frame
    here = ResizeChainArgmax((64, 128), steps)(logits)  # grouped where this CPU has wide vectors
    chain = ResizeChainArgmax((64, 128), steps, grouped=False)  # the form an ARM64 build has (128-bit vectors)
    block, max_rows = chain._blocks(19)
    (row_start, row_weights), (col_start, col_weights) = chain.rows, chain.cols
    header = np.array([19, 64, 128, len(col_weights), 480, len(row_weights), 270, block, max_rows], np.int64)
    arguments = tmp_path / "arguments.bin"
    with arguments.open("wb") as handle:
        for array in (header, logits.numpy().astype(np.float32), col_start, col_weights, row_start, row_weights):
            handle.write(np.ascontiguousarray(array).tobytes())
    program = tmp_path / "upsample_argmax_arm64"
    sources = [
        REPO / "tests" / "native" / "upsample_argmax_main.c",
        REPO / "seglite" / "inference" / "upsample_argmax.c",
    ]
    subprocess.run(
        ["aarch64-linux-gnu-gcc", "-O3", "-std=c99", "-static", *map(str, sources), "-o", str(program), "-lm"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    assert program.read_bytes()[18:20] == (183).to_bytes(2, "little")  # ELF e_machine: EM_AARCH64
    subprocess.run(
        ["qemu-aarch64", str(program), str(arguments), str(tmp_path / "labels.bin")], check=True, timeout=120
    )
    arm64 = np.fromfile(tmp_path / "labels.bin", np.uint8).reshape(270, 480)
    assert np.array_equal(arm64, here)
    expected, margin = chain_reference(logits, steps)
    clear = margin > 1e-4
    assert clear.mean() > 0.99 and len(np.unique(expected)) >= 10
    assert np.array_equal(arm64[clear], expected[clear])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_class_argmax_is_torch_argmax_ties_included(dtype):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randint(0, 3, (2, 19, 31, 45), generator=generator).to(dtype)  # many equal maxima
    assert torch.equal(class_argmax(logits), logits.argmax(1))
    logits = torch.randn(1, 11, 40, 64, generator=generator).to(dtype).contiguous(memory_format=torch.channels_last)
    assert torch.equal(class_argmax(logits), logits.argmax(1))
