"""Segmenter: the Python API that turns images into class-id maps (Cityscapes trainIds for Cityscapes weights).

Preprocessing comes from the weights (colour order, normalisation, network input size), so callers
pass plain OpenCV BGR uint8 images and get a map at the image's own resolution back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from seglite.data.labels import IGNORE_INDEX
from seglite.devices import check_input_fits, cpu_supports_bf16, resolve_device, reuse_freed_memory
from seglite.errors import InputError, SegliteError
from seglite.inference.backends import Backend, BackendContext, create_backend
from seglite.inference.optimize import fold_batchnorm
from seglite.inference.postprocess import ResizeChainArgmax, class_argmax, resize_argmax, upsample_argmax_library
from seglite.inference.sources import to_image_bgr
from seglite.inference.visualize import palette_lut
from seglite.models.base import FinalUpsample, SegmentationNet, without_final_upsample
from seglite.sizes import as_size
from seglite.zoo.checkpoint import LoadedWeights, load_model
from seglite.zoo.preprocess import Preprocess
from seglite.zoo.registry import DEFAULT_WEIGHTS

if TYPE_CHECKING:
    from PIL.Image import Image

    ImageLike = np.ndarray | str | Path | Image  # what Segmenter takes: an OpenCV BGR array, a file, a PIL image


def half_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA; bf16 on a CPU with native bf16 math (elsewhere it would be slower than fp32)."""
    if device.type == "cuda":
        return torch.float16
    if not cpu_supports_bf16():
        raise SegliteError(
            "--half on CPU runs bf16, which this CPU has no instructions for (AVX512-BF16 or AMX): drop --half"
        )
    return torch.bfloat16


def _names_weights(model: str) -> bool:
    """Whether a `model` argument names weights (a file, a run folder, a zoo name) rather than a network."""
    from seglite.models.registry import list_models
    from seglite.zoo.registry import find_entry

    return model not in list_models() and (Path(model).expanduser().exists() or find_entry(model) is not None)


class Segmenter:
    """`Segmenter(model=..., weights=...)(image_bgr)` -> uint8 class-id map (255 = ignore/unlabeled).

    Weights + preprocessing + one backend (seglite.inference.backends) + postprocessing. Batches the backend does not
    serve (another size, another batch shape) run in eager PyTorch, here and nowhere else.
    """

    def __init__(
        self,
        model: str | None = None,
        weights: str | None = None,
        device: str = "auto",
        size: tuple[int, int] | str | None = None,
        half: bool = False,
        backend: str = "torch",
        int8: bool = False,
        compile: bool = False,
        frames: int | None = None,
    ):
        """`model` alone: random weights; neither: the published ESPNetv2 s2.0 (`DEFAULT_WEIGHTS`). `size`: the network
        input, (width, height) or 'WIDTHxHEIGHT' (default: the weights' own).
        `frames`: how many images or frames this segmenter will run, when known. `backend="auto"` picks
        torch.compile only where the time it saves over them pays for compiling (None: an open-ended run)."""
        if model is None and weights is None:
            weights = DEFAULT_WEIGHTS
        elif weights is None and _names_weights(str(model)):
            model, weights = None, str(model)  # Segmenter("runs/x/best.pt"), as Ultralytics' YOLO("x.pt") reads
        size = as_size(size)
        if backend not in ("auto", "torch", "onnx", "openvino"):
            raise SegliteError(f"--backend {backend!r}: expected auto, torch, onnx or openvino")
        if (half or compile) and (backend in ("onnx", "openvino") or int8):
            raise SegliteError("--half and --compile run in PyTorch: leave out --backend onnx/openvino and --int8")
        from seglite.export.base import find_artifact

        if (artifact := find_artifact(weights)) is not None:
            self._open_artifact(artifact, model, size, half or compile or int8 or backend in ("onnx", "openvino"))
            return
        device = resolve_device(device)
        if device.type == "cpu":
            reuse_freed_memory()
        loaded = load_model(model, weights)
        if size is None and (int8 or backend in ("onnx", "openvino")):
            size = loaded.fixed_size()  # a runtime with a fixed input: the size quantize and export chose too
        self._prepare(loaded, device, size, half_dtype(device) if half else torch.float32)
        if self.preprocess.size:
            check_input_fits(self.preprocess.size, self.loaded.model.num_classes, 1, self.device)
        self.backend_reason = "requested"
        if int8:
            self.runtime = create_backend("int8", self.context)
            self.backend_reason = self.runtime.description
        elif half or compile:
            self.runtime = create_backend("torch.compile" if compile else "torch", self.context)
            self.backend_reason = " + ".join(
                ([str(self.dtype).removeprefix("torch.")] if half else []) + (["torch.compile"] if compile else [])
            )
        elif backend == "auto":
            from seglite.inference.autotune import choose_backend

            self.runtime, self.backend_reason = choose_backend(self.context, frames)
        else:
            self.runtime = create_backend(backend, self.context)

    def _open_artifact(self, path, model: str | None, size: tuple[int, int] | None, other_runtime: bool) -> None:
        """An exported model: its own runtime on the CPU, at the size it was exported for."""
        from seglite.export.artifact import open_artifact

        if other_runtime:
            raise InputError(
                f"--weights {path}: an exported model runs in its own runtime at its own precision; leave out "
                "--half, --compile, --int8 and --backend onnx (or pass the PyTorch checkpoint)"
            )
        loaded = open_artifact(path, model)
        exported = loaded.preprocess.size
        if size is not None and tuple(size) != tuple(exported):
            raise InputError(
                f"--size {size[0]}x{size[1]}: {path} was exported for {exported[0]}x{exported[1]}; leave out --size "
                "or export again at this size"
            )
        self._prepare(loaded, torch.device("cpu"), None, torch.float32)
        self.runtime = create_backend("artifact", self.context)
        self.backend_reason = self.runtime.description

    def _prepare(
        self, loaded: LoadedWeights, device: torch.device, size: tuple[int, int] | None, dtype: torch.dtype
    ) -> None:
        self.loaded, self.device, self.dtype = loaded, device, dtype
        self.preprocess: Preprocess = loaded.preprocess.with_size(size) if size else loaded.preprocess
        # channels_last pays off on CPU (oneDNN) and with fp16 tensor cores; the logits still come out NCHW.
        self.memory_format = torch.channels_last
        self.model = fold_batchnorm(loaded.model).to(device, dtype, memory_format=self.memory_format)
        self.num_known = len(loaded.classes)  # output channels past these (the authors' background) -> ignore
        self.context = BackendContext(loaded, self.model, self.preprocess.size, device, dtype, self.memory_format)
        self.eager = create_backend("torch", self.context)
        self.runtime: Backend = self.eager
        self._upsample_outside: bool | None = None  # decided at the first forward_for_labels
        self._resize_chains: dict[tuple, ResizeChainArgmax] = {}

    @classmethod
    def from_loaded(
        cls,
        loaded: LoadedWeights,
        device: str | torch.device = "cpu",
        size: tuple[int, int] | None = None,
        backend: Callable[[BackendContext], Backend] | None = None,
    ) -> Segmenter:
        """Wrap an in-memory model (e.g. during training) without reading any file; `backend` builds the backend
        from the context (default eager)."""
        self = cls.__new__(cls)
        self._prepare(loaded, torch.device(device), size, torch.float32)
        if backend is not None:
            self.runtime = backend(self.context)
        self.backend_reason = "requested"
        return self

    @property
    def backend(self) -> str:
        return self.runtime.name

    @property
    def int8(self) -> bool:
        return self.runtime.description.startswith("INT8")

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits for a preprocessed batch at any size: the backend where it serves the shape, eager elsewhere
        (other test scales, sliding-window crops, a last partial batch of a compiled run)."""
        if self.runtime is not self.eager and self.runtime.serves(batch):
            return self.runtime(batch)
        return self.eager(batch)

    network = forward

    def forward_for_labels(self, batch: torch.Tensor) -> tuple[torch.Tensor, list[FinalUpsample]]:
        """Logits for labels_from_logits, and the net's last upsamplings it left out (then the logits are at the
        net's own resolution). On a CPU with the native kernels, eager batches skip that upsampling: the labels do
        it together with the resize to the frame and the argmax (~15 ms a 960x540 frame less for ESPNetv2 s1.0)."""
        if not self._leaves_out_upsample(batch):
            return self.forward(batch), []
        with without_final_upsample(align_corners=(False, True)) as left_out:
            logits = self.eager(batch)
        if len(left_out) != 1 or left_out[0].size != tuple(batch.shape[-2:]):  # not one last step to the input size
            self._upsample_outside = False
            return self.forward(batch), []
        return logits, list(left_out)

    def _leaves_out_upsample(self, batch: torch.Tensor) -> bool:
        if self._upsample_outside is None:
            self._upsample_outside = (
                self.device.type == "cpu"
                and isinstance(self.model, SegmentationNet)
                and upsample_argmax_library() is not None
            )
        stride = getattr(self.model, "stride", 0)
        return (
            self._upsample_outside
            and (self.runtime.name == self.eager.name or not self.runtime.serves(batch))
            and batch.shape[-2] % stride == 0
            and batch.shape[-1] % stride == 0
        )

    @property
    def model_name(self) -> str:
        return self.loaded.model_name

    @property
    def palette_lut(self) -> np.ndarray:
        """The colours of the classes these weights predict, as colorize() takes them."""
        if getattr(self, "_palette_lut", None) is None:
            self._palette_lut = palette_lut(self.loaded.palette)
        return self._palette_lut

    def prepare(self, image_bgr: np.ndarray) -> torch.Tensor:
        """One BGR uint8 image -> its 3xHxW network input, already in the model's channels_last memory order."""
        return self.preprocess.channels_last(image_bgr)

    def to_tensor(self, images_bgr: list[np.ndarray]) -> torch.Tensor:
        return self.stack([self.prepare(image) for image in images_bgr])

    def stack(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Preprocessed 3xHxW tensors -> a batch on the device, in the model's dtype and memory format."""
        # Stacked pixels-last: channels_last inputs (prepare) then need no copy for one image and one for a batch.
        pixels_last = [tensor.permute(1, 2, 0) for tensor in tensors]
        batch = (pixels_last[0][None] if len(tensors) == 1 else torch.stack(pixels_last)).permute(0, 3, 1, 2)
        return batch.to(self.device, self.dtype, non_blocking=True).contiguous(memory_format=self.memory_format)

    def logits(self, image: ImageLike) -> torch.Tensor:
        """Raw network output (C x h x w) at the network's input size."""
        return self.forward(self.to_tensor([to_image_bgr(image)]))[0].float()

    def labels_from_logits(
        self, logits: torch.Tensor, out_size: tuple[int, int], left_out: list[FinalUpsample] | None = None
    ) -> np.ndarray:
        """Upsample logits (N x C x h x w) bilinearly to out_size (H, W), argmax, background channels -> 255.
        `left_out`: the net's upsamplings forward_for_labels left out, done here first.
        On a CPU it takes the model's threads: call it between model calls, not beside one."""
        if left_out:
            chain = self._resize_chain(logits, left_out, out_size)
            labels = np.stack([chain(frame) for frame in logits])
        elif logits.device.type == "cpu":
            threads = torch.get_num_threads()
            labels = np.stack([resize_argmax(frame, out_size, threads) for frame in logits])
        else:
            if tuple(logits.shape[-2:]) != tuple(out_size):
                logits = F.interpolate(logits.float(), size=out_size, mode="bilinear", align_corners=False)
            labels = class_argmax(logits).to(torch.uint8).cpu().numpy()
        if logits.shape[1] > self.num_known:
            labels[labels >= self.num_known] = IGNORE_INDEX
        return labels

    def _resize_chain(
        self, logits: torch.Tensor, left_out: list[FinalUpsample], out_size: tuple[int, int]
    ) -> ResizeChainArgmax:
        size = tuple(logits.shape[-2:])
        key = (size, tuple(left_out), tuple(out_size))
        if key not in self._resize_chains:
            if len(self._resize_chains) >= 16:  # a folder of many image sizes: keep the table small
                self._resize_chains.clear()
            steps = [(*step.size, step.align_corners) for step in left_out] + [(*out_size, False)]
            self._resize_chains[key] = ResizeChainArgmax(size, steps)
        return self._resize_chains[key]

    @torch.inference_mode()
    def predict_batch(self, images: list[ImageLike]) -> list[np.ndarray]:
        """Several images in one network call (one size for the network; each map at its own image's size)."""
        images = [to_image_bgr(image) for image in images]
        shapes = {image.shape[:2] for image in images}
        if self.preprocess.size is None and len(shapes) > 1:
            return [self.predict_batch([image])[0] for image in images]
        logits, left_out = self.forward_for_labels(self.to_tensor(images))
        if len(shapes) == 1:
            return list(self.labels_from_logits(logits, images[0].shape[:2], left_out))
        return [
            self.labels_from_logits(logits[i : i + 1], image.shape[:2], left_out)[0] for i, image in enumerate(images)
        ]

    def __call__(self, image: ImageLike | list[ImageLike]) -> np.ndarray | list[np.ndarray]:
        """An image (OpenCV BGR array, path or PIL image) -> its HxW uint8 class-id map; a list -> a list of maps."""
        if isinstance(image, list | tuple):
            return self.predict_batch(list(image))
        return self.predict_batch([image])[0]

    def __repr__(self) -> str:
        size = "x".join(map(str, self.preprocess.size)) if self.preprocess.size else "native"
        return f"Segmenter({self.model_name}, {self.num_known} classes, {size}, {self.backend} on {self.device})"

    def predict_video(
        self,
        source: str | int,
        out_dir: str | Path,
        formats: tuple[str, ...] = ("overlay",),
        batch: int = 1,
        alpha: float = 0.5,
        streams: int | None = None,
        exist_ok: bool = False,
        show: bool = False,
    ):
        """Segment a video file, camera or stream into `out_dir` as `predict` does (pipelined; see
        seglite.inference.video); an earlier result there is refused unless `exist_ok`. `streams`: inference streams
        at once (None: two for a video file where `backend="auto"` measured that they pay, else one). `show`: a
        window shows each overlay, as `predict --show`."""
        from seglite.inference.predict import planned_outputs
        from seglite.inference.sources import resolve_sources
        from seglite.inference.video import segment_video
        from seglite.inference.viewer import Viewer

        found = resolve_sources(str(source))
        if len(found) != 1 or found[0].kind == "images":
            raise InputError(
                f"{source}: not one video; call the Segmenter on images (a path or a list of paths), and "
                "predict_video on each video"
            )
        resolved = found[0]
        out = Path(out_dir)
        there = [path for path in planned_outputs(resolved, out, formats) if path.exists()]
        if there and not exist_ok:
            raise InputError(f"{there[0]}: already exists; pass another out_dir, or exist_ok=True to replace it")
        viewer = Viewer(f"seglite {source}") if show else None
        out.mkdir(parents=True, exist_ok=True)
        try:
            return segment_video(
                self,
                resolved.video,
                out,
                resolved.video_stem(),
                formats=formats,
                batch=batch,
                alpha=alpha,
                streams=streams,
                viewer=viewer,
            )
        finally:
            if viewer is not None:
                viewer.close()

    def stream(self, source: str | int, batch: int = 1, realtime: bool | None = None):
        """Iterate (index, frame, trainId map) over a video or live source; realtime (None: for a camera or a
        stream) keeps only the newest frames."""
        from seglite.inference.video import iter_frames

        return iter_frames(self, source, batch=batch, realtime=realtime)
