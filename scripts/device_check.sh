#!/usr/bin/env bash
# Device check (from the repo root, on a CUDA machine; under 8 minutes on one H200):
#   bash scripts/device_check.sh            # every online and offline trainer a few steps on CUDA in bf16
#                                           # (full and LoRA), PPO / RLOO under FSDP (accelerate launch, one
#                                           # process), KVCacheGenerator vs transformers' model.generate
#   bash scripts/device_check.sh --dry-run  # the same sequence on CPU, 1-2 steps, no FSDP (< 2 minutes)
# Prints one table at the end (trainer, mode, steps, seconds, final score/loss, ok/FAIL); exit 1 on any FAIL.
# The logic lives in scripts/device_check.py. PYTHON overrides the interpreter (default .venv/bin/python).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY="${PYTHON:-.venv/bin/python}"
ARGS=()
DRY=0
for a in "$@"; do
    case "$a" in
        --dry-run) DRY=1; ARGS+=("$a") ;;
        --keep) ARGS+=("$a") ;;
        -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
        *) echo "device_check.sh: unknown argument '$a' (--dry-run, --keep)" >&2; exit 2 ;;
    esac
done
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$DRY" = 1 ]; then
    export CUDA_VISIBLE_DEVICES=""   # the rehearsal runs on CPU even where a GPU exists
fi
echo "== alignkit device check$([ "$DRY" = 1 ] && echo ' (dry run: CPU)') =="
date -u '+date: %Y-%m-%d %H:%M:%S UTC'
echo "git: $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi -L || true
else
    echo "nvidia-smi: not found"
fi
"$PY" -c 'import sys, torch, transformers, accelerate, peft
print(f"python {sys.version.split()[0]}  torch {torch.__version__} (cuda {torch.version.cuda}, available {torch.cuda.is_available()})  "
      f"transformers {transformers.__version__}  accelerate {accelerate.__version__}  peft {peft.__version__}")'
exec "$PY" scripts/device_check.py "${ARGS[@]}"
