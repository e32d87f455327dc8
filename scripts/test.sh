#!/usr/bin/env bash
# Fresh machine -> test run: creates .venv, installs seglite with its dev extras, lints, runs the default tests and
# prints the ten slowest. Extra arguments go to pytest: `bash scripts/test.sh -m slow` runs the long tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev]"
.venv/bin/ruff check seglite tests scripts
.venv/bin/python -m pytest -q --durations=10 "$@"
