"""Real result 2: GRPO with a verifiable reward on SmolLM2-135M-Instruct: small-number addition.

Task: "What is a + b?" for a, b in 0..12 (169 problems), a user turn after the system prompt "Answer with
only the number." rendered by the model's chat template; reward 1 when the completion's last number (or a
``#### N`` / ``\\boxed{N}``) is a + b (:mod:`arithmetic_reward`). A seeded split holds out ``--held-out``
problems (never trained on). Before and after training, held-out accuracy is measured on those problems
with ``--eval-samples`` samples each at temperature 1 (the training distribution) and greedily.

Training: ``alignkit reinforce`` with ``baseline=grpo`` (group-normalised advantages), LoRA, bf16 autocast,
``--steps`` steps of ``--prompts`` prompts x ``--group`` samples, 48 new tokens.

    python examples/real/grpo_arithmetic.py --seeds 0 1 2      # target: +10 points held-out, 3 seeds
    python examples/real/grpo_arithmetic.py --seeds 0 --steps 2 --held-out 8 --eval-samples 1 --tag smoke

Writes ``runs/real/grpo_arithmetic/seed*/`` and ``docs/results/grpo_arithmetic[_TAG].json``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch
from arithmetic_reward import reward

from alignkit.cli import main as alignkit
from common import command_line, load_trained, smollm2_checkpoint, write_jsonl, write_result

SYSTEM_PROMPT = "Answer with only the number."
MAX_NEW_TOKENS = 48


def problems(seed: int, n_held_out: int) -> tuple[list[dict], list[dict]]:
    rows = [{"prompt": f"What is {a} + {b}?", "answer": str(a + b)} for a in range(13) for b in range(13)]
    random.Random(seed).shuffle(rows)
    return rows[n_held_out:], rows[:n_held_out]


def accuracy(model_dir: str, base_dir: str, rows: list[dict], samples: int, seed: int) -> dict:
    """Held-out accuracy of a checkpoint (or a LoRA adapter directory over ``base_dir``): sampled at T = 1
    (``samples`` per problem) and greedy."""
    from alignkit.generation import SamplingParams, make_generator
    from alignkit.rollout import decode_completions, tokenize_prompts

    tok, model = load_trained(model_dir, base_dir)
    prompts = [r["prompt"] for r in rows]
    ids, _ = tokenize_prompts(tok, prompts, chat_template="on", system_prompt=SYSTEM_PROMPT)
    engine = make_generator(model, tok)
    out = {}
    for name, temperature, n in (("sampled", 1.0, samples), ("greedy", 1e-6, 1)):
        with torch.no_grad():
            comp = engine.generate(ids, SamplingParams(max_new_tokens=MAX_NEW_TOKENS, n=n, temperature=temperature,
                                                       seed=10_000 + seed))
        texts = decode_completions(tok, comp)
        scores = reward([p for p in prompts for _ in range(n)], texts, answer=[r["answer"] for r in rows
                                                                                for _ in range(n)])
        out[name] = sum(scores) / len(scores)
    return out


def run_seed(seed: int, args, base: str) -> dict:
    train, held = problems(seed, args.held_out)
    out = f"runs/real/grpo_arithmetic{'_' + args.tag if args.tag else ''}/seed{seed}"
    prompts_file = write_jsonl(f"{out}_prompts.jsonl", train)
    before = accuracy(base, base, held, args.eval_samples, seed)
    settings = [
        f"model={base}", f"prompts_file={prompts_file}", f"output_dir={out}", f"seed={seed}",
        "reward_fn=arithmetic_reward:reward", "baseline=grpo", f"samples_per_prompt={args.group}",
        f"prompts_per_step={args.prompts}", f"max_steps={args.steps}", f"max_new_tokens={MAX_NEW_TOKENS}",
        "chat_template=on", f"system_prompt={SYSTEM_PROMPT}", "lora=true", "lora_r=16", "lora_alpha=32",
        f"learning_rate={args.learning_rate}", "kl_coef=0.0", "mixed_precision=bf16", "num_samples=4",
        "progress=false", "tensorboard=false", "overwrite=true",
    ]
    start = time.perf_counter()
    code = alignkit(["reinforce", *settings])
    if code:
        raise SystemExit(code)
    seconds = time.perf_counter() - start
    after = accuracy(f"{out}/final", base, held, args.eval_samples, seed)
    return {"seed": seed, "before": before, "after": after, "train_seconds": round(seconds, 1),
            "alignkit_settings": settings}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--prompts", type=int, default=4)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--held-out", type=int, default=69)
    p.add_argument("--eval-samples", type=int, default=4)
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)
    base = smollm2_checkpoint()
    command = command_line("grpo_arithmetic.py", args)
    runs = []
    for seed in args.seeds:  # the result file is rewritten after every seed: a cut session keeps finished seeds
        runs.append(run_seed(seed, args, base))
        gain = [r["after"]["sampled"] - r["before"]["sampled"] for r in runs]
        write_result("grpo_arithmetic" + (f"_{args.tag}" if args.tag else ""), {
            "task": "GRPO (LoRA), a + b for a, b in 0..12, SmolLM2-135M-Instruct, chat template",
            "command": command,
            "runs": runs,
            "seeds_finished": len(runs),
            "sampled_accuracy_gain_mean": statistics.mean(gain),
            "target": "+0.10 held-out accuracy (absolute), over 3 seeds",
        })
        print(runs[-1]["seed"], runs[-1]["before"], "->", runs[-1]["after"], flush=True)


if __name__ == "__main__":
    main()
