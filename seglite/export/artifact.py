"""Open an exported artifact as LoadedWeights: the runtime becomes the network, the record gives the rest."""

from __future__ import annotations

from pathlib import Path

from seglite.errors import CheckpointError, InputError
from seglite.export.base import ArtifactNet, find_artifact, quiet_converter, read_record, runtime_threads
from seglite.zoo.checkpoint import LoadedWeights
from seglite.zoo.preprocess import Preprocess


def open_artifact(weights: str | Path, model: str | None = None, threads: int | None = None) -> LoadedWeights:
    """`weights`: an artifact folder, a file inside one, or a seglite .onnx file (see find_artifact); `threads`: see
    runtime_threads."""
    from seglite.export import get_format

    path = find_artifact(weights)
    if path is None:
        raise CheckpointError(f"{weights}: not an exported seglite model")
    record = read_record(path)
    if model is not None and model != record["model"]:
        raise CheckpointError(
            f"{path}: holds an export of {record['model']}, not {model}; pass --model {record['model']}"
        )
    fmt = get_format(record["format"])
    if (why := fmt.missing()) is not None:
        raise InputError(why.replace(f"--format {fmt.name}", f"running {path}"))
    if fmt.runs_here_note:
        raise InputError(f"{path}: {fmt.runs_here_note}")
    folder = path if path.is_dir() else path.parent
    with quiet_converter():  # the runtimes' own start-up logging (ExecuTorch's cpuinfo and thread pool lines)
        runner = fmt.load(folder if path.is_dir() else path, record, runtime_threads(threads))
    dataset = record.get("dataset") or None
    return LoadedWeights(
        ArtifactNet(runner, record, path).eval(),
        record["model"],
        tuple(record["classes"]),
        Preprocess.from_dict(record["preprocess"]),
        str(path),
        {"artifact": record["format"], "precision": record.get("precision", "fp32")},
        dataset=dataset,
    )
