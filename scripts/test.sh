#!/usr/bin/env bash
# Fresh machine -> test run: creates .venv, installs seglite with its dev, docs and export extras, lints, builds the docs
# (strict: a broken link or reference fails), runs the default tests and prints the ten slowest. Extra arguments go
# to pytest: `bash scripts/test.sh -m slow` runs the long tests, `-m export` the deployment converters.
set -euo pipefail
cd "$(dirname "$0")/.."
# The ARM64 test of the native kernel needs a cross-compiler and qemu-user, the `predict --show` window tests a
# virtual display (Xvfb): installed where this runs as root with apt (a CI container); elsewhere those tests say they
# skipped and why.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null && ! { command -v qemu-aarch64 && command -v Xvfb; } >/dev/null; then
  (apt-get update -q && apt-get install -y -q gcc-aarch64-linux-gnu qemu-user xvfb) >/dev/null 2>&1 || true
fi
python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e ".[dev,docs,export]"
.venv/bin/ruff check seglite tests scripts
site="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet -d "$site"
rm -rf "$site"
.venv/bin/python -m pytest -q --durations=10 "$@"
