"""Real result 3: DPO on HH-RLHF (harmless-base) pairs with SmolLM2-135M-Instruct, trained by ``alignkit dpo``
with LoRA; measured by held-out implicit-reward accuracy and by the reward model's win rate of DPO completions
against the starting model's (the SFT model's) completions.

Data: the split of ``reward_model.py`` (same seed, same 320 held-out pairs, never trained on by either).
Training: sigmoid DPO, beta ``--beta``, LoRA r=16, bf16 autocast, ``--max-steps`` steps of ``--batch-size``
pairs, rows cut to ``--max-length`` tokens (``truncation: fit``), the reference = the policy with its adapter
disabled, computed per batch.

Measured:
* held-out implicit-reward accuracy: the fraction of held-out pairs with beta log(pi/pi_ref)(chosen) >
  beta log(pi/pi_ref)(rejected) (``eval/rewards/accuracy``), at the end of training;
* win rate: for ``--win-prompts`` held-out prompts (the last 128 tokens of each transcript up to its final
  ``Assistant:``), one greedy completion of ``--new-tokens`` tokens from the DPO policy and one from the
  starting model, each cut at a following ``Human:`` turn; the reward model of ``reward_model.py``
  (``runs/real/reward_model/final``, trained with EOS appended, so scored the same way) scores both; a win is
  a higher score, a tie counts one half.

    python examples/real/dpo_hh.py                        # needs runs/real/reward_model/final (reward_model.py)
    python examples/real/dpo_hh.py --max-steps 2 --held-out 16 --win-prompts 4 --output-dir runs/real/dpo_smoke

Writes ``runs/real/dpo/`` and ``docs/results/dpo.json``.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from alignkit.cli import main as alignkit
from common import command_line, hh_split, load_trained, metrics, smollm2_checkpoint, write_jsonl, write_result

REWARD_MODEL = "runs/real/reward_model/final"
PROMPT_TOKENS = 128


def completions(model_dir: str, base_dir: str, prompts: list[str], new_tokens: int) -> list[str]:
    """Greedy completions of a checkpoint (or of a LoRA adapter directory over ``base_dir``), each cut at the
    next ``Human:`` turn."""
    from alignkit.generation import SamplingParams, make_generator
    from alignkit.rollout import decode_completions, tokenize_prompts

    tok, model = load_trained(model_dir, base_dir)
    ids, _ = tokenize_prompts(tok, prompts, max_prompt_length=PROMPT_TOKENS, prompt_truncation="left")
    engine = make_generator(model, tok)
    texts = []
    for start in range(0, len(ids), 16):
        with torch.no_grad():
            comp = engine.generate(ids[start:start + 16], SamplingParams(max_new_tokens=new_tokens, greedy=True))
        texts += decode_completions(tok, comp)
    return [t.split("\n\nHuman:")[0].split("\nHuman:")[0] for t in texts]


def win_rate(prompts: list[str], policy: list[str], baseline: list[str], max_length: int) -> dict:
    from alignkit.models import load_reward_model, load_tokenizer
    from alignkit.rewards import RewardModelScorer

    scorer = RewardModelScorer(load_reward_model(REWARD_MODEL).eval(), load_tokenizer(REWARD_MODEL), batch_size=16,
                               max_length=max_length, truncation="left", append_eos=True, normalize=False)
    with torch.no_grad():
        a, b = scorer(prompts, policy), scorer(prompts, baseline)
    wins = sum(1.0 if x > y else 0.5 if x == y else 0.0 for x, y in zip(a, b, strict=True))
    return {"win_rate": wins / len(a), "mean_reward_dpo": sum(a) / len(a), "mean_reward_sft": sum(b) / len(b)}


def run(args) -> dict:
    if not os.path.isdir(REWARD_MODEL):
        raise SystemExit(f"{REWARD_MODEL} is missing: run python examples/real/reward_model.py first")
    base = smollm2_checkpoint()
    train, held = hh_split(args.seed, args.held_out)
    used = train[: args.max_steps * args.batch_size]  # exactly the pairs trained on
    train_file = write_jsonl(f"runs/real/data/hh_dpo_train_seed{args.seed}_{len(used)}.jsonl", used)
    eval_file = write_jsonl(f"runs/real/data/hh_held_out_seed{args.seed}_{len(held)}.jsonl", held)
    out = args.output_dir
    settings = [
        "--config", "configs/dpo.yaml", f"model={base}", f"train_file={train_file}", f"eval_file={eval_file}",
        f"output_dir={out}", f"seed={args.seed}", "lora=true", "lora_r=16", "lora_alpha=32",
        f"learning_rate={args.learning_rate}", f"beta={args.beta}", "mixed_precision=bf16",
        f"max_length={args.max_length}", f"max_prompt_length={args.max_length * 2 // 3}",
        f"batch_size={args.batch_size}", f"max_steps={args.max_steps}", f"eval_steps={args.max_steps}",
        "precompute_ref_logprobs=false", "warmup_steps=5", "num_samples=0", "progress=false", "tensorboard=false",
        "overwrite=true",
    ]
    start = time.perf_counter()
    code = alignkit(["dpo", *settings])
    if code:
        raise SystemExit(code)
    train_seconds = time.perf_counter() - start
    logged = metrics(out)
    evals = [r for r in logged if "eval/rewards/accuracy" in r]
    train_acc = [r["rewards/accuracy"] for r in logged if "rewards/accuracy" in r]

    from alignkit.data import load_rows

    prompts = [r["prompt"] for r in load_rows(held[: args.win_prompts], format="hh_rlhf")]
    start = time.perf_counter()
    dpo_texts = completions(f"{out}/final", base, prompts, args.new_tokens)
    sft_texts = completions(base, base, prompts, args.new_tokens)
    wins = win_rate(prompts, dpo_texts, sft_texts, max_length=192)
    examples = [{"prompt": p[-300:], "dpo": d, "sft": s} for p, d, s in zip(prompts[:3], dpo_texts, sft_texts,
                                                                             strict=False)]
    return {
        "task": "DPO (sigmoid, LoRA r=16), HH-RLHF harmless-base, SmolLM2-135M-Instruct",
        "command": command_line("dpo_hh.py", args, skip=("output_dir",)),
        "alignkit_settings": settings,
        "train_pairs_used": len(used), "held_out_pairs": len(held),
        "held_out_implicit_reward_accuracy": evals[-1]["eval/rewards/accuracy"] if evals else None,
        "held_out_eval": evals[-1] if evals else None,
        "train_implicit_reward_accuracy_last_10_steps": sum(train_acc[-10:]) / max(1, len(train_acc[-10:])),
        "win_rate_vs_sft": {**wins, "prompts": len(prompts), "new_tokens": args.new_tokens, "decoding": "greedy",
                            "reward_model": REWARD_MODEL},
        "example_completions": examples,
        "train_seconds": round(train_seconds, 1), "win_rate_seconds": round(time.perf_counter() - start, 1),
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--held-out", type=int, default=320)
    p.add_argument("--max-length", type=int, default=192, help="prompt + response tokens (prompts: 2/3 of it)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-steps", type=int, default=48)
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--beta", type=float, default=0.1)
    p.add_argument("--win-prompts", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=48)
    p.add_argument("--output-dir", default="runs/real/dpo")
    return p.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    result = run(args)
    write_result("dpo" if args.output_dir == "runs/real/dpo" else "dpo_smoke", result)
    print({k: result[k] for k in ("held_out_implicit_reward_accuracy", "win_rate_vs_sft")})
