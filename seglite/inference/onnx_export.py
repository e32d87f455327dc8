"""ONNX export with static shapes (the fast path for ONNX Runtime on CPU)."""

from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from seglite.errors import SegliteError

OPSET = 17


def export_onnx(
    model: nn.Module,
    size: tuple[int, int],
    path: str | os.PathLike | None = None,
    batch: int = 1,
    metadata: dict | None = None,
    dynamic: bool = False,
) -> bytes:
    """Export at a fixed N x 3 x H x W (size is W, H); returns the model bytes and writes `path` if given.

    `metadata` (e.g. the preprocessing record) is stored as JSON strings in the model's metadata_props.
    """
    model = model.eval()
    param = next(model.parameters())
    dummy = torch.zeros(batch, 3, size[1], size[0], device=param.device, dtype=param.dtype)
    buffer = io.BytesIO()
    dynamic_axes = {"image": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings(), torch.no_grad():
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
            raise SegliteError(f"ONNX export of {getattr(model, 'model_name', 'model')} failed: {exc}") from exc
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    data = proto.SerializeToString()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return data


def ort_session(model_bytes_or_path: bytes | str | os.PathLike, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    source = model_bytes_or_path if isinstance(model_bytes_or_path, bytes) else str(model_bytes_or_path)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
