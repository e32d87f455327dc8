"""ONNX export with static shapes (the fast path for ONNX Runtime on CPU)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import warnings
from contextlib import nullcontext

import cv2
import numpy as np
import onnx
import torch
from torch import nn

from seglite.errors import SegliteError
from seglite.files import atomic_write_bytes
from seglite.inference.sources import quiet_stderr
from seglite.models.base import SegmentationNet, without_final_upsample
from seglite.sharing import cpu_shared

OPSET = 17


def export_onnx(
    model: nn.Module,
    size: tuple[int, int],
    path: str | os.PathLike | None = None,
    batch: int = 1,
    metadata: dict | None = None,
    dynamic: bool = False,
    final_upsample_outside: bool = False,
) -> bytes:
    """Export at a fixed N x 3 x H x W (size is W, H); returns the model bytes and writes `path` if given.

    `metadata` (e.g. the preprocessing record) is stored as JSON strings in the model's metadata_props.
    `final_upsample_outside` leaves a seglite net's last half-pixel bilinear upsampling out of the graph and records
    its size as metadata `final_upsample` for `OnnxRunner`, which does it faster; graphs for other tools keep it.
    """
    model = model.eval()
    final_upsample_outside = (
        final_upsample_outside
        and not dynamic
        and isinstance(model, SegmentationNet)
        and size[0] % model.stride == 0
        and size[1] % model.stride == 0
    )
    param = next(model.parameters())
    dummy = torch.zeros(batch, 3, size[1], size[0], device=param.device, dtype=param.dtype)
    buffer = io.BytesIO()
    dynamic_axes = {"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    leaving_out = without_final_upsample() if final_upsample_outside else nullcontext([])
    with warnings.catch_warnings(), torch.no_grad(), leaving_out as left_out, quiet_stderr():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                model,
                (dummy,),
                buffer,
                input_names=["image"],
                output_names=["logits"],
                opset_version=OPSET,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
                dynamo=False,
            )
        except Exception as exc:  # the exporter raises many types; the user needs the model and the cause
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            name = getattr(model, "model_name", "model")
            raise SegliteError(f"ONNX export of {name} at {size[0]}x{size[1]} failed: {cause}") from exc
    if len(left_out) > 1:  # the trace runs once: more than one upsampling is not one final step, keep them all
        return export_onnx(model, size, path, batch, metadata, dynamic)
    if left_out:
        metadata = {**(metadata or {}), "final_upsample": list(left_out[0].size)}
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    data = proto.SerializeToString()
    if path is not None:
        atomic_write_bytes(data, path)
    return data


def ort_session(model_bytes_or_path: bytes | str | os.PathLike, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if cpu_shared():  # other programs keep cores busy (seglite.sharing): spinning would burn their share
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model_bytes_or_path if isinstance(model_bytes_or_path, bytes) else str(model_bytes_or_path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


_opencv_threads_lock = threading.Lock()


def upsample_planes(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """N x C x h x w -> N x C x H x W, bilinear with half-pixel centres (F.interpolate's align_corners=False).

    OpenCV's resize uses the same formula and edge clamp; one plane at a time into the output, on the calling thread
    only: ONNX Runtime's worker still spins right after a run, and OpenCV's own threads would wait on it (2 cores).
    """
    height, width = size
    out = np.empty(logits.shape[:2] + (height, width), np.float32)
    with _opencv_threads_lock:  # OpenCV's thread count is process-wide: one save/restore at a time
        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            for image, planes in zip(logits, out, strict=True):
                for plane, target in zip(image, planes, strict=True):
                    cv2.resize(plane, (width, height), dst=target, interpolation=cv2.INTER_LINEAR)
        finally:
            cv2.setNumThreads(threads)
    return out


class OnnxRunner:
    """ONNX Runtime session of a seglite export, plus the final upsampling its export left out (if it did)."""

    def __init__(self, model_bytes_or_path: bytes | str | os.PathLike, threads: int | None = None):
        self.session = ort_session(model_bytes_or_path, threads)
        final = self.session.get_modelmeta().custom_metadata_map.get("final_upsample")
        self.final_size: tuple[int, int] | None = tuple(json.loads(final)) if final else None

    def __call__(self, images: np.ndarray) -> np.ndarray:
        logits = self.session.run(None, {"image": images})[0]
        return logits if self.final_size is None else upsample_planes(logits, self.final_size)


def weights_fingerprint(model: nn.Module) -> str:
    """Short hash of a model's tensors: the cache key part that changes when the weights do."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_key(loaded, size: tuple[int, int], batch: int, tag: str) -> str:
    """The name of a cached conversion: model, weights, input size, batch and what `tag` adds (precision, version)."""
    return f"{loaded.model_name}-{weights_fingerprint(loaded.model)}-{size[0]}x{size[1]}-b{batch}-{tag}"


def cached_runner(loaded, size: tuple[int, int], batch: int = 1, threads: int | None = None) -> OnnxRunner:
    """ORT runner on a static-shape export, built on first use and cached by model, weights, size and batch."""
    from seglite import __version__
    from seglite.zoo.registry import seglite_home

    # The exported graph is seglite's code too (e.g. the DeepLab eval head): a new version exports again.
    key = cache_key(loaded, size, batch, f"fp32-{__version__}")
    path = seglite_home() / "onnx" / f"{key}.onnx"
    if not path.is_file():
        metadata = {
            "model": loaded.model_name,
            "preprocess": loaded.preprocess.with_size(size).to_dict(),
            "classes": list(loaded.classes),
        }
        try:
            export_onnx(loaded.model, size, path, batch=batch, metadata=metadata, final_upsample_outside=True)
        except OSError:  # read-only cache: keep the export in memory
            data = export_onnx(loaded.model, size, batch=batch, metadata=metadata, final_upsample_outside=True)
            return OnnxRunner(data, threads)
    return OnnxRunner(path, threads)
