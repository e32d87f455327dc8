"""Weights: seglite's checkpoint format, converters for the authors' files, and the model zoo cache."""

from seglite.zoo.checkpoint import LoadedWeights, load_weights, save_checkpoint
from seglite.zoo.preprocess import Preprocess
from seglite.zoo.registry import ZooEntry, list_zoo, resolve_weights_file

__all__ = [
    "LoadedWeights",
    "Preprocess",
    "ZooEntry",
    "list_zoo",
    "load_weights",
    "resolve_weights_file",
    "save_checkpoint",
]
