"""The `seglite` command: one small module per verb (or verb group) over the Python API."""

from __future__ import annotations

import signal
import sys

import typer

# isort: off
# Importing a verb's module registers it; `seglite --help` lists the verbs in this order.
from seglite.cli import predict, train, evaluate, bench, export, data, weights, info  # noqa: F401

# isort: on
from seglite.cli.common import ERROR_LABEL, _state, app, err_console
from seglite.errors import SegliteError
from seglite.files import write_failure


def _stop_as_ctrl_c(signum, frame) -> None:
    raise KeyboardInterrupt


def main() -> None:
    """Entry point: user mistakes end in one line on stderr and a non-zero exit, never a traceback."""
    # SIGTERM (a cluster's pre-emption, `timeout`, `docker stop`) stops a run as Ctrl-C does: what was written is
    # kept under a name that says so, and the exit code is 130; by default Python would die on the spot, leaving
    # its temporary files. (Training handles both signals itself, between iterations.)
    signal.signal(signal.SIGTERM, _stop_as_ctrl_c)
    try:
        code = app(standalone_mode=False)
    except SegliteError as exc:
        if _state["debug"]:
            raise
        label = "interrupted" if exc.exit_code == 130 else ERROR_LABEL
        err_console.print(label, str(exc), highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a write or read that no command wrapped: still one line, and the right exit code
        if _state["debug"]:
            raise
        failure = write_failure(exc, exc.filename or "a file", kept="see `seglite --debug` for where")
        err_console.print(ERROR_LABEL, str(failure), highlight=False, soft_wrap=True)
        sys.exit(failure.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted")
        sys.exit(130)
    except typer.TyperException as exc:  # usage errors: typer prints its own "Usage: ... Error: ..." text
        show = getattr(exc, "show", None)
        if show is None:
            raise
        show()
        sys.exit(getattr(exc, "exit_code", 2))
    # Typer turns Ctrl-C into Exit(130), which click returns rather than raises when standalone_mode is off.
    if isinstance(code, int) and code:
        if code == 130:
            err_console.print("interrupted")
        sys.exit(code)


def __getattr__(name: str):
    """`click_app`: the click command behind the typer app, for the docs' generated CLI reference."""
    if name == "click_app":
        return typer.main.get_command(app)
    raise AttributeError(name)
