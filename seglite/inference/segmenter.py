"""Segmenter: the Python API that turns images into Cityscapes trainId maps.

Preprocessing comes from the weights (colour order, normalisation, network input size), so callers
pass plain OpenCV BGR uint8 images and get a map at the image's own resolution back.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from seglite import __version__
from seglite.data.labels import IGNORE_INDEX
from seglite.devices import check_input_fits, cpu_supports_bf16, resolve_device, reuse_freed_memory
from seglite.errors import InputError, SegliteError
from seglite.inference.optimize import fold_batchnorm
from seglite.inference.visualize import palette_lut
from seglite.zoo.checkpoint import LoadedWeights, atomic_write_bytes, load_model
from seglite.zoo.preprocess import Preprocess

if TYPE_CHECKING:
    from seglite.inference.onnx_export import OnnxRunner


def as_bgr_uint8(image: np.ndarray, name: str = "image") -> np.ndarray:
    """Accept gray, BGR, BGRA and 16-bit images; return HxWx3 uint8 BGR."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise InputError(f"{name}: expected an HxW or HxWxC image array")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    elif image.shape[2] == 4:
        image = np.ascontiguousarray(image[:, :, :3])
    elif image.shape[2] != 3:
        raise InputError(f"{name}: {image.shape[2]} channels; expected 1, 3 or 4")
    return image


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


def half_dtype(device: torch.device) -> torch.dtype:
    """fp16 on CUDA; bf16 on a CPU with native bf16 math (elsewhere it would be slower than fp32)."""
    if device.type == "cuda":
        return torch.float16
    if not cpu_supports_bf16():
        raise SegliteError(
            "--half on CPU runs bf16, which this CPU has no instructions for (AVX512-BF16 or AMX): drop --half"
        )
    return torch.bfloat16


# True once this process has compiled a network: dynamo then reuses the graph for another instance of the same
# architecture in well under a second, which says nothing about what a fresh process pays.
_compiled_in_process = False
FRESH_COMPILE_S = 20.0  # a typical first compile of one of seglite's networks on 2 cores


def compile_model(model: torch.nn.Module, size: tuple[int, int] | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """torch.compile (Inductor, weights frozen as constants): fuses the concat/BN/PReLU/add chains of the ESPNet
    family, same predictions. Compiles on the first call (tens of seconds on 2 cores), once per input shape."""
    import logging

    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # "no CUDA runtime" noise on CPU hosts
    if size is None:
        raise SegliteError("--compile needs a fixed input size: pass --size WxH (weights with a training size set it)")
    import torch._dynamo

    # Every seglite network shares SegmentationNet.forward, so each compiled model (or input shape) counts against
    # dynamo's per-function recompile limit (8), past which it silently runs eager: leave room for many.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    compiled = torch.compile(model, dynamic=False, options={"freezing": True})

    def forward(batch: torch.Tensor) -> torch.Tensor:
        global _compiled_in_process
        try:
            out = compiled(batch)
            _compiled_in_process = True
            return out
        except Exception as exc:  # Inductor raises many types (a missing C++ compiler is the common one)
            raise SegliteError(
                f"--compile failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
                "it needs a C++ compiler (g++ or clang) on PATH: install one or drop --compile"
            ) from exc

    return forward


# The most torch.compile has saved over the faster static backend on any seglite network on CPU (ESPNetv2 s2.0:
# 133 vs 208 ms, ~36 %): the estimate, before compiling, of what a run could gain.
TYPICAL_COMPILE_SAVING = 0.4


BACKEND_TRIAL_FIELDS = ("ms", "agreement", "compile_s", "unavailable")  # one cached entry of backend_choices.json


def compile_could_pay(trial: dict, frames: int | None) -> bool:
    """Whether a run of `frames` lasts long enough that torch.compile, at the best saving seen, could win back a
    typical fresh compile: only then is it worth timing (compiling) at all. A 221-frame video at 175 ms a frame
    could save ~15 s, less than the ~20 s compile, so it runs without the 40 s trial."""
    if frames is None:
        return True
    return frames * min(trial["ms"].values()) / 1000 * TYPICAL_COMPILE_SAVING > FRESH_COMPILE_S


def pick_backend(trial: dict, frames: int | None, compiled_already: bool = False) -> tuple[str, str]:
    """(backend, reason) from `Segmenter._time_backends`' measurements: the fastest backend whose argmax agrees with
    eager on >= 99.9 % of pixels; torch.compile only when the time it saves over `frames` (None: open-ended)
    exceeds its measured compile time, since every new process compiles again (unless `compiled_already`: the
    trial just compiled it in this process)."""
    ms, agreement = trial["ms"], trial["agreement"]
    exact = [name for name in ms if agreement.get(name, 1.0) >= 0.999]
    static = min((name for name in exact if name != "torch.compile"), key=ms.get)
    choice, notes = static, []
    # A gain within timing noise is not worth compiling again in every new process.
    if "torch.compile" in exact and ms["torch.compile"] < 0.97 * ms[static]:
        saved_s = float("inf") if frames is None else frames * (ms[static] - ms["torch.compile"]) / 1000
        if compiled_already or saved_s > trial["compile_s"]:
            choice = "torch.compile"
        else:
            notes.append(
                f"torch.compile would not pay back its {trial['compile_s']:.0f} s compile over {frames} frame(s)"
            )
    measured = ", ".join(f"{name} {ms[name]:.0f} ms" for name in ms)
    if trial.get("compile_s") is not None:
        measured += f" (+{trial['compile_s']:.0f} s to compile{', done' if compiled_already else ''})"
    notes += [f"{name} argmax agreement {100 * agreement[name]:.2f} %" for name in agreement if name not in exact]
    notes += [f"{name} unavailable: {why}" for name, why in trial.get("unavailable", {}).items()]
    return choice, "; ".join([f"measured {measured}", *notes])


class Segmenter:
    """`Segmenter(model=..., weights=...)(image_bgr)` -> uint8 trainId map (255 = ignore/unlabeled)."""

    def __init__(
        self,
        model: str | None = None,
        weights: str | None = None,
        device: str = "auto",
        size: tuple[int, int] | None = None,
        half: bool = False,
        backend: str = "torch",
        int8: bool = False,
        compile: bool = False,
        frames: int | None = None,
    ):
        """`frames`: how many images or frames this segmenter will run, when known. `backend="auto"` picks
        torch.compile only where the time it saves over them pays for compiling (None: an open-ended run)."""
        self.loaded = load_model(model, weights)
        self.device = resolve_device(device)
        if self.device.type == "cpu":
            reuse_freed_memory()
        self.preprocess: Preprocess = self.loaded.preprocess.with_size(size) if size else self.loaded.preprocess
        if self.preprocess.size:
            check_input_fits(self.preprocess.size, self.loaded.model.num_classes, 1, self.device)
        self.dtype = half_dtype(self.device) if half else torch.float32
        # channels_last pays off on CPU (oneDNN) and with fp16 tensor cores; the logits still come out NCHW.
        self.memory_format = torch.channels_last
        self.model = fold_batchnorm(self.loaded.model).to(self.device, self.dtype, memory_format=self.memory_format)
        self.num_known = len(self.loaded.classes)  # output channels past these (the authors' background) -> ignore
        if backend not in ("auto", "torch", "onnx"):
            raise SegliteError(f"--backend {backend!r}: expected auto, torch or onnx")
        if (half or compile) and (backend == "onnx" or int8):
            raise SegliteError("--half and --compile run in PyTorch: leave out --backend onnx / --int8")
        if half or compile:
            backend = "torch.compile" if compile else "torch"
        self._compiled: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._compiled_shape: tuple[int, ...] | None = None
        if compile:
            self._compiled = compile_model(self.model, self.preprocess.size)
        if backend == "onnx" and (self.device.type != "cpu" or self.preprocess.size is None):
            raise SegliteError(
                "--backend onnx runs on CPU at a fixed size: pass --device cpu and --size WxH "
                "(weights with a training size set it themselves)"
            )
        self._runners: dict[int, OnnxRunner] = {}
        self.backend = backend
        self.backend_reason = "requested"
        self.int8 = int8
        if int8:
            self._runners[1] = self._int8_runner()
            self.backend, self.backend_reason = "onnx", "INT8 model accepted by `seglite quantize`"
        elif half or compile:
            self.backend_reason = " + ".join(
                ([str(self.dtype).removeprefix("torch.")] if half else []) + (["torch.compile"] if compile else [])
            )
        elif backend == "auto":
            self.backend, self.backend_reason = self._choose_backend(frames)

    def _int8_runner(self) -> OnnxRunner:
        from seglite.inference.onnx_export import OnnxRunner
        from seglite.inference.quantize import int8_path

        if self.device.type != "cpu" or self.preprocess.size is None:
            raise SegliteError("--int8 runs on CPU at a fixed size: pass --device cpu (and --size WxH if needed)")
        path = int8_path(self.loaded, self.preprocess.size)
        if not path.is_file():
            width, height = self.preprocess.size
            raise SegliteError(
                f"no accepted INT8 model for {self.loaded.source} at {width}x{height}: run `seglite quantize "
                f"--weights {self.loaded.source} --size {width}x{height} --data-root CITYSCAPES_ROOT` first (it keeps "
                "INT8 only where the mIoU drops by less than 1 point), or leave out --int8"
            )
        return OnnxRunner(path)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        """Network logits for a preprocessed batch, on the chosen backend."""
        if self.backend != "onnx":
            with torch.inference_mode():
                return self._torch(batch)
        from seglite.inference.onnx_export import cached_runner

        n = batch.shape[0]
        if self.int8 and n > 1:  # the INT8 model has a static batch of one
            return torch.cat([self.forward(batch[i : i + 1]) for i in range(n)])
        if n not in self._runners:
            self._runners[n] = cached_runner(self.loaded, self.preprocess.size, n)
        return torch.from_numpy(self._runners[n](batch.contiguous().numpy()))

    def network(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits for a batch at any size: the chosen backend where its static export fits, eager PyTorch elsewhere
        (other test scales, sliding-window crops)."""
        if self.backend == "onnx" and self.preprocess.size == (batch.shape[-1], batch.shape[-2]):
            return self.forward(batch.float())
        return self._torch(batch.to(self.dtype).contiguous(memory_format=self.memory_format))

    def _torch(self, batch: torch.Tensor) -> torch.Tensor:
        """The compiled model for the one batch shape it runs first, eager PyTorch for any other (test scales, a last
        partial batch): compiling again for a shape used a few times costs more than it saves."""
        if self._compiled is not None and self._compiled_shape in (None, tuple(batch.shape)):
            self._compiled_shape = tuple(batch.shape)
            return self._compiled(batch)
        return self.model(batch)

    def _choose_backend(self, frames: int | None = None) -> tuple[str, str]:
        """CPU at a fixed size: time eager PyTorch, ONNX Runtime and torch.compile once, keep the fastest that agrees
        with eager (torch.compile only where it pays back its compile time over `frames`).

        The measurements are cached next to the ONNX exports (key: model, weights, size, seglite version), so later
        runs skip the trial and only redo the choice for their own number of frames. torch.compile is not even
        timed for a run too short to pay back any compile; a later, longer run adds it to the cache.
        """
        if self.device.type != "cpu" or self.preprocess.size is None:
            return "torch", "GPU or variable input size"
        import json

        from seglite.inference.onnx_export import weights_fingerprint
        from seglite.zoo.registry import seglite_home

        width, height = self.preprocess.size
        # The runtime speed changes with seglite's own optimisations: a new version measures again.
        fingerprint = weights_fingerprint(self.loaded.model)
        key = f"{self.loaded.model_name}-{fingerprint}-{width}x{height}-seglite{__version__}"
        cache = seglite_home() / "onnx" / "backend_choices.json"
        try:
            choices = json.loads(cache.read_text())
        except (OSError, ValueError):
            choices = {}
        trial = choices.get(key)
        cached = (
            isinstance(trial, dict)
            and set(trial) == set(BACKEND_TRIAL_FIELDS)
            and {"torch", "onnx"} <= set(trial["ms"])
        )
        if not cached:
            trial = self._time_backends(["torch", "onnx"])
        if "torch.compile" not in {*trial["ms"], *trial["unavailable"]} and compile_could_pay(trial, frames):
            cached, measured = False, self._time_backends(["torch.compile"])
            for field in ("ms", "agreement", "unavailable"):
                trial[field].update(measured[field])
            trial["compile_s"] = measured["compile_s"]
        if not cached:
            choices[key] = trial
            try:
                atomic_write_bytes(json.dumps(choices, indent=1).encode(), cache)
            except OSError:  # a read-only home: the trial runs again next time
                pass
        backend, reason = pick_backend(trial, frames, compiled_already=self._compiled is not None)
        if backend != "torch.compile":
            self._compiled = None
        elif self._compiled is None:
            self._compiled = compile_model(self.model, self.preprocess.size)
        self._compiled_shape = None  # the run's own first batch decides the compiled shape
        return backend, reason + (" (cached)" if cached else "")

    def _time_backends(self, names: list[str]) -> dict:
        """Median ms of a 1-image pass per backend, argmax agreement with eager, and torch.compile's compile seconds
        (as a fresh process pays them)."""
        import statistics
        import time

        width, height = self.preprocess.size
        x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(0))
        x = x.contiguous(memory_format=self.memory_format)
        self.backend = "torch"
        reference = self.forward(x).argmax(1)
        timings, agreement, unavailable, compile_s = {}, {}, {}, None
        for name in names:
            self.backend = name
            start = time.perf_counter()
            if name == "torch.compile":
                warm = _compiled_in_process
                try:
                    self._compiled = compile_model(self.model, self.preprocess.size)
                    out = self.forward(x)  # compiles
                except SegliteError as exc:  # no C++ compiler: the other two still run
                    self._compiled, unavailable[name] = None, str(exc).split(";")[0]
                    continue
                compile_s = time.perf_counter() - start
                compile_s = max(compile_s, FRESH_COMPILE_S) if warm else compile_s
            else:
                out = self.forward(x)  # warm-up (and, for onnx, the export)
            if name != "torch":
                agreement[name] = float((out.argmax(1) == reference).float().mean())
            times = []
            for _ in range(5):
                start = time.perf_counter()
                self.forward(x)
                times.append((time.perf_counter() - start) * 1000)
            timings[name] = statistics.median(times)
        return {"ms": timings, "agreement": agreement, "compile_s": compile_s, "unavailable": unavailable}

    @classmethod
    def from_loaded(
        cls, loaded: LoadedWeights, device: str | torch.device = "cpu", size: tuple[int, int] | None = None
    ) -> Segmenter:
        """Wrap an in-memory model (e.g. during training) without reading any file."""
        self = cls.__new__(cls)
        self.loaded = loaded
        self.device = torch.device(device)
        self.preprocess = loaded.preprocess.with_size(size) if size else loaded.preprocess
        self.dtype = torch.float32
        self.memory_format = torch.channels_last
        self.model = fold_batchnorm(loaded.model).to(self.device, memory_format=self.memory_format)
        self.num_known = len(loaded.classes)
        self.backend = "torch"
        self.int8 = False
        self._runners = {}
        self._compiled, self._compiled_shape = None, None
        return self

    @property
    def model_name(self) -> str:
        return self.loaded.model_name

    @property
    def palette_lut(self) -> np.ndarray:
        """The colours of the classes these weights predict, as colorize() takes them."""
        if getattr(self, "_palette_lut", None) is None:
            self._palette_lut = palette_lut(self.loaded.palette)
        return self._palette_lut

    def to_tensor(self, images_bgr: list[np.ndarray]) -> torch.Tensor:
        return self.stack([self.preprocess(image) for image in images_bgr])

    def stack(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """Preprocessed 3xHxW tensors -> a batch on the device, in the model's dtype and memory format."""
        batch = torch.stack(tensors).to(self.device, self.dtype, non_blocking=True)
        return batch.contiguous(memory_format=self.memory_format)

    def logits(self, image_bgr: np.ndarray) -> torch.Tensor:
        """Raw network output (C x h x w) at the network's input size."""
        return self.forward(self.to_tensor([as_bgr_uint8(image_bgr)]))[0].float()

    def labels_from_logits(self, logits: torch.Tensor, out_size: tuple[int, int]) -> np.ndarray:
        """Upsample logits (N x C x h x w) bilinearly to out_size (H, W), argmax, background channels -> 255."""
        if logits.device.type == "cpu":
            labels = np.stack([resize_argmax(frame, out_size) for frame in logits])
        else:
            if tuple(logits.shape[-2:]) != tuple(out_size):
                logits = F.interpolate(logits.float(), size=out_size, mode="bilinear", align_corners=False)
            labels = logits.argmax(1).to(torch.uint8).cpu().numpy()
        if logits.shape[1] > self.num_known:
            labels[labels >= self.num_known] = IGNORE_INDEX
        return labels

    @torch.inference_mode()
    def predict_batch(self, images_bgr: list[np.ndarray]) -> list[np.ndarray]:
        images = [as_bgr_uint8(image) for image in images_bgr]
        shapes = {image.shape[:2] for image in images}
        if self.preprocess.size is None and len(shapes) > 1:
            return [self.predict_batch([image])[0] for image in images]
        logits = self.forward(self.to_tensor(images))
        if len(shapes) == 1:
            return list(self.labels_from_logits(logits, images[0].shape[:2]))
        return [self.labels_from_logits(logits[i : i + 1], image.shape[:2])[0] for i, image in enumerate(images)]

    def __call__(self, image_bgr: np.ndarray) -> np.ndarray:
        return self.predict_batch([image_bgr])[0]

    def predict_video(
        self,
        source: str | int,
        out_dir: str,
        formats: tuple[str, ...] = ("overlay",),
        batch: int = 1,
        alpha: float = 0.5,
    ):
        """Segment a video file or stream into `out_dir` (pipelined; see seglite.inference.video)."""
        from pathlib import Path

        from seglite.inference.video import segment_video

        stem = Path(str(source)).stem if isinstance(source, str) else f"camera{source}"
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return segment_video(self, source, out, stem, formats=formats, batch=batch, alpha=alpha)

    def stream(self, source: str | int, batch: int = 1, realtime: bool = False):
        """Iterate (index, frame, trainId map) over a video or live source; realtime keeps only the newest frames."""
        from seglite.inference.video import iter_frames

        return iter_frames(self, source, batch=batch, realtime=realtime)
