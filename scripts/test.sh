#!/usr/bin/env bash
# README command 2: install everything the tests need, lint, type-check, run the suite.
# Extra arguments go to pytest (e.g. -k raft, or tests/unit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --with-test-tools
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
# The architecture (pyproject.toml, [tool.importlinter]): the core imports no I/O or nodes.
.venv/bin/lint-imports --no-cache --no-logo
# pytest exits 5 when it collected no test: with `set -e` that fails the run, as it should.
# One worker per core, a test file at a time on each (module fixtures are built once);
# most tests wait on node processes, so two files at once take far less than twice one.
.venv/bin/python -m pytest -q -p no:cacheprovider -n auto --dist loadfile "$@"
