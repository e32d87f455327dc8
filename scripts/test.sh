#!/usr/bin/env bash
# Fresh machine -> test run: creates .venv, installs seglite with its dev extras, runs the default tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev]"
.venv/bin/ruff check seglite tests scripts
.venv/bin/python -m pytest -q "$@"
