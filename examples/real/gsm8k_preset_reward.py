"""Does a real instruct model earn reward under the GSM8K presets? SmolLM2-135M-Instruct, ``configs/grpo_gsm8k.yaml``.

The preset's own prompt path and reward, nothing tuned: each test question becomes a user turn after the
preset's system prompt (asking for ``#### <number>``), rendered by the model's chat template; the preset's
group size (``samples_per_prompt``) of samples per question at T = 1, up to the preset's ``max_new_tokens``;
scored by the preset's reward function (``#### N`` or ``\\boxed{N}`` equal to the reference answer).

Reported: the mean reward, the share of completions that write ``####`` at all, and the share of groups
(one question's samples) with a non-zero reward spread -- the groups from which GRPO gets a gradient.

    python examples/real/gsm8k_preset_reward.py                 # 32 questions x 8 samples
    python examples/real/gsm8k_preset_reward.py --questions 2 --max-new-tokens 16 --tag smoke

Writes ``docs/results/gsm8k_preset_reward[_TAG].json``.
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml

from common import REPO, SHARED_DATA, command_line, load_trained, smollm2_checkpoint, write_result

PRESET = "configs/grpo_gsm8k.yaml"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--questions", type=int, default=32, help="the first N questions of gsm8k-test.jsonl")
    p.add_argument("--max-new-tokens", type=int, default=0, help="0 = the preset's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    args = p.parse_args(argv)

    from alignkit.data import load_rows
    from alignkit.generation import SamplingParams, make_generator
    from alignkit.rewards import resolve_reward_fn
    from alignkit.rollout import decode_completions, tokenize_prompts

    preset = yaml.safe_load((REPO / PRESET).read_text())
    group = preset["samples_per_prompt"]
    new_tokens = args.max_new_tokens or preset["max_new_tokens"]
    reward = resolve_reward_fn(preset["reward_fn"])
    rows = load_rows(SHARED_DATA / "gsm8k-test.jsonl", max_rows=args.questions)
    base = smollm2_checkpoint()
    tok, model = load_trained(base, base)
    prompts = [r["prompt"] for r in rows]
    ids, _ = tokenize_prompts(tok, prompts, chat_template=preset["chat_template"],
                              system_prompt=preset["system_prompt"])
    engine = make_generator(model, tok)
    start, texts = time.perf_counter(), []
    for i in range(0, len(ids), 4):
        with torch.no_grad():
            comp = engine.generate(ids[i:i + 4], SamplingParams(max_new_tokens=new_tokens, n=group, temperature=1.0,
                                                                seed=args.seed, first_prompt_index=i))
        texts += decode_completions(tok, comp)
    scores = reward([p for p in prompts for _ in range(group)], texts,
                    answer=[r["answer"] for r in rows for _ in range(group)])
    groups = [scores[i:i + group] for i in range(0, len(scores), group)]
    correct = [{"question": prompts[i // group][:200], "completion": texts[i]} for i, s in enumerate(scores) if s > 0]
    result = {
        "task": "GSM8K test questions under configs/grpo_gsm8k.yaml's prompt and reward, SmolLM2-135M-Instruct",
        "command": command_line("gsm8k_preset_reward.py", args),
        "questions": len(prompts), "samples_per_question": group, "max_new_tokens": new_tokens,
        "mean_reward": sum(scores) / len(scores), "completions_rewarded": int(sum(s > 0 for s in scores)),
        "completions": len(scores),
        "share_writing_####": sum("####" in t for t in texts) / len(texts),
        "groups_with_reward_spread": sum(max(g) > min(g) for g in groups) / len(groups),
        "rewarded_examples": correct[:3], "generate_seconds": round(time.perf_counter() - start, 1),
    }
    write_result("gsm8k_preset_reward" + (f"_{args.tag}" if args.tag else ""), result)
    print({k: result[k] for k in ("mean_reward", "completions_rewarded", "completions", "share_writing_####",
                                  "groups_with_reward_spread")})


if __name__ == "__main__":
    main()
