#!/usr/bin/env bash
# Fresh machine -> main job: installs seglite into .venv, then shows what it does.
# Real street frames and the authors' published checkpoints are used when present
# (zoo cache in $SEGLITE_HOME, or ../shared/realdata next to this checkout).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e .
exec .venv/bin/python scripts/demo.py "$@"
