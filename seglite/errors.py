"""User-facing errors: each carries a one-line message the CLI prints without a traceback."""

from __future__ import annotations


class SegliteError(Exception):
    """Base class for every mistake a user can make (bad path, bad name, bad file)."""


class UnknownModelError(SegliteError):
    pass


class CheckpointError(SegliteError):
    pass


class ConfigError(SegliteError):
    pass


class DataError(SegliteError):
    pass


class InputError(SegliteError):
    pass


class DeviceError(SegliteError):
    pass
