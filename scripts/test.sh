#!/usr/bin/env bash
# Create (or reuse) .venv, install torch first and then alignkit with its dev extra, run the tests.
#   bash scripts/test.sh            # the whole suite
#   bash scripts/test.sh -k gae     # extra arguments go to pytest
# ALIGNKIT_TORCH overrides the torch requirement (e.g. a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${ALIGNKIT_TORCH:-torch==2.13.0}"

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
VPY=.venv/bin/python
# Torch first: with torch already present, pip will not pull the multi-GB CUDA wheels for `torch>=2.2`.
if ! "$VPY" -c "import torch" >/dev/null 2>&1; then
    "$VPY" -m pip install --quiet --upgrade pip
    "$VPY" -m pip install --quiet "$TORCH_SPEC"
fi
"$VPY" -m pip install --quiet -e ".[dev]"
exec "$VPY" -m pytest "$@"
