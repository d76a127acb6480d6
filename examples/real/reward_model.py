"""Real result 1: a Bradley-Terry reward model on HH-RLHF (harmless-base) with the SmolLM2-135M-Instruct
backbone, trained by ``alignkit reward`` with LoRA, and its pairwise accuracy on held-out pairs.

Data: ``../shared/data/hh-rlhf-harmless-base-test.jsonl.gz`` (2,312 pairs, full transcripts), split by a
seeded shuffle into ``--held-out`` pairs (default 320; never trained on) and the rest for training. Rows
over ``max_length`` tokens are cut (``truncation: fit``, the preset's default) and counted, never dropped.
Held-out accuracy (``eval/accuracy``: the fraction of pairs with r(chosen) > r(rejected)) is measured every
``--eval-steps`` optimiser steps and at the end: that is the curve.

    python examples/real/reward_model.py                 # one pass, 124 steps: ~22 min on 2 idle CPU cores
    python examples/real/reward_model.py --max-steps 2 --held-out 16 --output-dir runs/real/rm_smoke  # a smoke run

Writes ``runs/real/reward_model/`` (the run directory: metrics, report.html, final/) and
``docs/results/reward_model.json`` (the curve, the settings, the machine).
"""

from __future__ import annotations

import argparse
import time

from alignkit.cli import main as alignkit
from common import command_line, hh_split, metrics, smollm2_checkpoint, write_jsonl, write_result


def run(args) -> dict:
    model = smollm2_checkpoint()
    train, held = hh_split(args.seed, args.held_out)
    data = "runs/real/data"
    train_file = write_jsonl(f"{data}/hh_train_seed{args.seed}.jsonl", train)
    eval_file = write_jsonl(f"{data}/hh_held_out_seed{args.seed}.jsonl", held)
    out = args.output_dir
    settings = [
        "--config", "configs/reward.yaml", f"model={model}", f"train_file={train_file}", f"eval_file={eval_file}",
        f"output_dir={out}", f"seed={args.seed}", "lora=true", "lora_r=16", "lora_alpha=32",
        f"learning_rate={args.learning_rate}", "mixed_precision=bf16", f"max_length={args.max_length}",
        f"max_prompt_length={args.max_length * 2 // 3}",
        f"batch_size={args.batch_size}", f"eval_steps={args.eval_steps}", "num_samples=0", "progress=false",
        "tensorboard=false", f"max_steps={args.max_steps}", "warmup_steps=5", "overwrite=true",
    ]
    start = time.perf_counter()
    code = alignkit(["reward", *settings])
    if code:
        raise SystemExit(code)
    seconds = time.perf_counter() - start
    rows = metrics(out)
    curve = [{"step": r["step"], "accuracy": r["eval/accuracy"], "loss": r["eval/loss"]}
             for r in rows if "eval/accuracy" in r]
    train_acc = [r["accuracy"] for r in rows if "accuracy" in r]
    examples = int(next(r["data/examples"] for r in rows if "data/examples" in r))  # after skipped rows
    result = {
        "task": "Bradley-Terry reward model, HH-RLHF harmless-base, SmolLM2-135M-Instruct backbone (LoRA r=16)",
        "command": command_line("reward_model.py", args, skip=("output_dir",)),
        "alignkit_settings": settings,
        "train_pairs_available": len(train), "held_out_pairs": len(held),
        "train_pairs_used": min(args.max_steps * args.batch_size, examples) if args.max_steps else examples,
        "held_out_accuracy_curve": curve,
        "final_held_out_accuracy": curve[-1]["accuracy"] if curve else None,
        "train_accuracy_last_10_steps": sum(train_acc[-10:]) / max(1, len(train_acc[-10:])),
        "target": ">= 0.60 held-out accuracy on >= 300 pairs",
        "wall_seconds": round(seconds, 1),
    }
    return result


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out", type=int, default=320)
    p.add_argument("--max-length", type=int, default=192, help="prompt + response tokens (prompts: 2/3 of it)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--learning-rate", type=float, default=5e-4)
    p.add_argument("--eval-steps", type=int, default=31)
    p.add_argument("--max-steps", type=int, default=0, help="0 = one pass over the training pairs")
    p.add_argument("--output-dir", default="runs/real/reward_model")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    result = run(args)
    write_result("reward_model" if args.output_dir == "runs/real/reward_model" else "reward_model_smoke", result)
    print(result["held_out_accuracy_curve"])
