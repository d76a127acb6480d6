#!/usr/bin/env bash
# Create (or reuse) .venv, install torch first and then alignkit with its dev extra, run the tests.
#   bash scripts/test.sh            # the whole suite
#   bash scripts/test.sh -k gae     # extra arguments go to pytest
source "$(dirname "$0")/_env.sh"
exec "$VPY" -m pytest "$@"
