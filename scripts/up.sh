#!/usr/bin/env bash
# README command 1: install, then start the embedded default cluster and show it.
# Extra arguments go to `fabric up` (e.g. --nodes 7 --dir ./big).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/fabric up "$@"
echo "the cluster keeps running in the background; stop it with: .venv/bin/fabric down"
