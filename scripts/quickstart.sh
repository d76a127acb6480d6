#!/usr/bin/env bash
# Create (or reuse) .venv, install torch and alignkit, and run the built-in pipeline:
# SFT -> reward model from gold-labelled pairs -> PPO (and DPO), a few minutes on a laptop CPU.
#   bash scripts/quickstart.sh                  # defaults
#   bash scripts/quickstart.sh ppo_steps=100    # key=value options (alignkit quickstart --help)
ALIGNKIT_EXTRAS="${ALIGNKIT_EXTRAS:-tensorboard}"
source "$(dirname "$0")/_env.sh"
exec .venv/bin/alignkit quickstart "$@"
