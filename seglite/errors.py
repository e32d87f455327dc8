"""User-facing errors: each carries a one-line message the CLI prints without a traceback."""

from __future__ import annotations


class SegliteError(Exception):
    """Base class for every mistake a user can make (bad path, bad name, bad file). The CLI exits with
    `exit_code`: 2 for user errors, 1 for failures of the machine (disk full, codec), 130 for interrupts."""

    exit_code = 2


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


class OutputError(SegliteError):
    """An output could not be written completely (disk full, codec failure): not the user's mistake."""

    exit_code = 1


class Interrupted(SegliteError):
    """Ctrl-C or SIGTERM: the message says what was kept."""

    exit_code = 130
