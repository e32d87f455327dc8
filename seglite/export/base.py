"""The contract every deployment format keeps, the artifact record (seglite.yaml) and the network that runs an
artifact inside seglite (ArtifactNet: numpy in, numpy out, one frame at a time, at the exported size only)."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from seglite.errors import CheckpointError, InputError

METADATA_FILE = "seglite.yaml"
ARTIFACT_TAG = "seglite-artifact-v1"

Runner = Callable[[np.ndarray], np.ndarray]  # 1x3xHxW float32 -> 1xCxHxW float32 logits


@dataclass
class ExportRequest:
    """What an exporter gets: the eval-mode network, an example input at the export size, the precision asked for,
    calibration inputs for INT8 (preprocessed 1x3xHxW arrays of real frames) and the folder to fill."""

    net: nn.Module
    example: torch.Tensor
    precision: str
    calibration: list[np.ndarray]
    folder: Path
    threads: int | None = None
    dynamic: bool = False  # a dynamic batch axis (ONNX only)
    record: dict = field(default_factory=dict)  # the artifact record, for formats that embed it in the file


class Format:
    """One deployment runtime. `export` fills request.folder and returns the model file's name; `load` returns a
    Runner for an artifact of this format. `modules` are the Python packages it needs (an extra), checked first."""

    name = "?"
    title = "?"
    model_file = "?"  # the file (or folder) in the artifact that the runtime opens
    precisions: tuple[str, ...] = ("fp32",)
    modules: tuple[str, ...] = ()
    extra = "export"
    portable = False  # True: export the plain form of fused layers (seglite.models.base.portable_graph)
    matrix_pooling = False  # True: also adaptive pooling as matmuls (portable_graph's matrix_pooling)
    runs_here_note = ""  # non-empty: why this machine cannot run the artifact (CoreML off Apple, TensorRT without CUDA)

    def missing(self) -> str | None:
        """Why this format cannot be used here (a missing package, no GPU), or None."""
        absent = [m for m in self.modules if importlib.util.find_spec(m) is None]
        if absent:
            return (
                f"--format {self.name} needs {', '.join(absent)}: pip install 'seglite[{self.extra}]' "
                "(or leave this format out)"
            )
        return None

    def check_precision(self, precision: str) -> None:
        if precision not in self.precisions:
            raise InputError(
                f"--format {self.name} exports {', '.join(self.precisions)}, not {precision}: "
                f"pass --precision {self.precisions[0]}"
            )

    def export(self, request: ExportRequest) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, folder: Path, record: dict, threads: int) -> Runner:  # pragma: no cover
        raise NotImplementedError


def runtime_threads(threads: int | None) -> int:
    """The threads an artifact's runtime runs on: --threads, else PyTorch's count (OMP_NUM_THREADS, or the share
    seglite.sharing gave this process on a busy CPU or under torchrun), as eager PyTorch would; never a runtime's
    own default, so every row of a benchmark runs on the same threads."""
    return threads or torch.get_num_threads()


@contextlib.contextmanager
def quiet_converter():
    """Silence a converter's Python warnings and the C++ logging it writes straight to file descriptors 1 and 2
    (pnnx, TFLite, XNNPACK); if it fails, the last lines of that log go into the error. A converter that fails
    because Ctrl-C (or SIGTERM) interrupted it is stopped as interrupted, not reported as a failed conversion."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as log, warnings.catch_warnings(), _noticing_stops() as stops:
        warnings.simplefilter("ignore")
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except Exception as exc:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            if stops:  # OpenVINO's converter catches the KeyboardInterrupt and reports "unconverted ops"
                raise KeyboardInterrupt from None
            log.seek(0)
            tail = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()][-3:]
            if tail:
                exc.add_note("converter log: " + " | ".join(tail))
            raise
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


@contextlib.contextmanager
def _noticing_stops():
    """Ctrl-C and SIGTERM still raise KeyboardInterrupt, and are also remembered in the list this yields (a library
    that catches the KeyboardInterrupt cannot hide them)."""
    stops: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # signal handlers belong to the main thread
        yield stops
        return

    def stop(signum, _frame) -> None:
        stops.append(signum)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stops
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def write_record(folder: Path, record: dict) -> None:
    (folder / METADATA_FILE).write_text(
        "# seglite exported model: what it predicts and how to feed it (read by `seglite predict/eval/bench`)\n"
        + yaml.safe_dump(record, sort_keys=False, width=120)
    )


def read_record(path: Path) -> dict:
    """The artifact record of a folder (seglite.yaml) or of a single .onnx file (its metadata_props)."""
    if path.is_dir():
        try:
            record = yaml.safe_load((path / METADATA_FILE).read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise CheckpointError(f"{path / METADATA_FILE}: not readable ({exc})") from None
    else:
        record = onnx_record(path)
    required = ("format", "model", "classes", "preprocess", "input_shape", "num_outputs")
    if not isinstance(record, dict) or any(key not in record for key in required):
        raise CheckpointError(
            f"{path}: not a seglite export (its record lacks {', '.join(k for k in required if k not in (record or {}))}"
            "); export it again with `seglite export`"
        )
    return record


def onnx_record(path: Path) -> dict | None:
    """The record a seglite .onnx file carries in its metadata (older exports: rebuilt from their fields)."""
    import onnx

    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # onnx raises DecodeError and others on foreign bytes
        return None
    props = {entry.key: entry.value for entry in proto.metadata_props}
    if "seglite" in props:
        return json.loads(props["seglite"])
    if "model" not in props or "preprocess" not in props:
        return None
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    return {
        "format": "onnx",
        "precision": json.loads(props.get("precision", '"fp32"')),
        "model": json.loads(props["model"]),
        "classes": json.loads(props["classes"]),
        "preprocess": json.loads(props["preprocess"]),
        "input_shape": dims,
        "num_outputs": proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value,
        "model_file": path.name,
    }


def find_artifact(weights: str | Path | None) -> Path | None:
    """The artifact `--weights` names (a folder with seglite.yaml, a file inside one, or a seglite .onnx file),
    or None for anything else (a checkpoint, a zoo name)."""
    if weights is None:
        return None
    from seglite.zoo.registry import run_checkpoint

    path = Path(weights)
    if path.is_dir():
        if (path / METADATA_FILE).is_file():
            return path
        if run_checkpoint(path) is not None:  # a training run: its checkpoint
            return None
        raise InputError(
            f"--weights {path}: a folder without {METADATA_FILE} or a training run's best.pt/last.pt; pass a "
            "checkpoint file, a zoo name, a run folder or a folder written by `seglite export`"
        )
    if path.is_file():
        if (path.parent / METADATA_FILE).is_file():
            return path.parent
        if path.suffix == ".onnx":
            return path
    return None


class ArtifactNet(nn.Module):
    """An exported model as the network of LoadedWeights: the Segmenter's eager path runs it like any network. It
    serves only the exported input size (static shapes are what edge runtimes run fast), one frame per call."""

    def __init__(self, runner: Runner, record: dict, path: Path):
        super().__init__()
        self.runner, self.record, self.path = runner, record, path
        # One call at a time: LiteRT's interpreter, OpenVINO's infer request and ExecuTorch's method are not
        # thread-safe, and predict/eval streams call from several threads (their reading and labels still overlap).
        self._one_call = threading.Lock()
        self.num_classes = int(record["num_outputs"])
        self.input_shape = tuple(int(v) for v in record["input_shape"])
        self.model_name = record["model"]

    def __deepcopy__(self, memo: dict) -> ArtifactNet:
        return self  # a runtime session: nothing to fold or copy (the Segmenter copies networks to rewrite them)

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        if tuple(batch.shape[1:]) != self.input_shape[1:]:
            height, width = self.input_shape[2:]
            raise InputError(
                f"{self.path} was exported for {width}x{height} inputs, not {batch.shape[-1]}x{batch.shape[-2]}: "
                "leave out --size, --scales and --window, or export again with --size"
            )
        frames = batch.detach().float().cpu().contiguous().numpy()
        with self._one_call:
            outputs = [np.asarray(self.runner(frames[i : i + 1]), dtype=np.float32) for i in range(len(frames))]
        return torch.from_numpy(np.concatenate(outputs) if len(outputs) > 1 else outputs[0])
