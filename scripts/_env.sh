# Sourced by test.sh and quickstart.sh: create (or reuse) .venv, install torch first, then alignkit.
# ALIGNKIT_TORCH overrides the torch requirement (e.g. a CUDA build on a GPU machine).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
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
"$VPY" -m pip install --quiet -e ".[${ALIGNKIT_EXTRAS:-dev}]"
