"""``alignkit quickstart``: the seeds' whole pipeline on a built-in task, on a laptop CPU, in minutes.

The task (everything is built here; nothing is downloaded):
  * a small vocabulary of neutral, positive and negative words; prompts are short neutral phrases;
  * the *gold* scorer stands in for human labellers: it prefers replies with more distinct positive words,
    fewer negative words and no repetitions (+1 per distinct positive word, -1 per negative word, -0.5 per
    repeated word, length-normalised); no trainer sees it except through the preference labels it produces;
  * the base model is a tiny Llama whose SFT data are replies drawn uniformly from the vocabulary, so
    the SFT policy is indifferent to sentiment.
Pipeline (seeds 001-003): SFT -> sample pairs from the SFT policy -> the gold scorer labels them by
Bradley-Terry -> reward model -> PPO against the learnt reward with a KL penalty to the SFT policy; DPO on
the same pairs for comparison. A second PPO run without the KL penalty shows reward over-optimisation
(Gao et al. 2022): its learnt reward climbs higher while its gold score falls, because it repeats words
the reward model pays for and the gold scorer penalises repetition. The table reports the gold
score, the learnt reward and the KL to the SFT policy for each model, and a few completions before and
after; ``report.html`` in the output directory shows the same with the training curves of each stage.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .training import option

NEUTRAL = ("the a cat dog bird sun tree house road river day night we they it is was and then here there "
           "walk run look see").split()
POSITIVE = "good great happy bright kind lovely nice warm".split()
NEGATIVE = "bad sad dark cruel awful cold poor ugly".split()


def gold_score(text: str) -> float:
    """The hidden labeller: (#distinct positive - #negative - 0.5 #repeated words) / sqrt(#words); 0 if empty.

    Like a person, it likes kind words but not the same word over and over: "good dog bad great" scores
    (2 - 1 - 0) / sqrt(4) = 0.5, "great great great great" (1 - 0 - 1.5) / sqrt(4) = -0.25. Replies
    sampled from the SFT policy rarely repeat a word, so the preference pairs hardly show the repetition
    term and a reward model learnt from them cannot know it: the gap that reward over-optimisation (PPO
    without its KL penalty, repeating the words the reward model pays for) exploits.
    """
    words = text.split()
    if not words:
        return 0.0
    distinct_positive = len({w for w in words if w in POSITIVE})
    negative = sum(w in NEGATIVE for w in words)
    repeated = len(words) - len(set(words))
    return (distinct_positive - negative - 0.5 * repeated) / math.sqrt(len(words))


def gold_reward(prompts, completions, **_):
    return [gold_score(c) for c in completions]


@dataclass
class QuickstartConfig:
    """Settings of the built-in pipeline (defaults: about 5 minutes on 2 CPU cores)."""

    output_dir: str = option("runs/quickstart", "run directory")
    seed: int = option(0, "seed of everything")
    sft_steps: int = option(150, "SFT optimiser steps")
    pairs: int = option(1024, "preference pairs sampled from the SFT policy and labelled by the gold scorer "
                               "(>= 64: the reward model trains on batches of 32 and holds 10% out)",
                        bounds="[64, inf)")
    reward_steps: int = option(150, "reward-model optimiser steps")
    ppo_steps: int = option(60, "PPO steps")
    dpo_steps: int = option(100, "DPO optimiser steps")
    kl_coef: float = option(0.2, "PPO's KL coefficient (a second PPO run with 0 shows over-optimisation)")
    max_new_tokens: int = option(8, "reply length")
    eval_prompts: int = option(64, "prompts for the final table")

    def validate(self) -> None:
        """Every option in its range (``pairs`` above all: too few leave the reward model no batch)."""
        from .training.config import check_options

        check_options(self)


def _tokenizer():
    from .models.tiny import build_tokenizer

    return build_tokenizer([" ".join(NEUTRAL + POSITIVE + NEGATIVE)] * 2, vocab_size=128, model="word")


def _model(tok, seed):
    from .models.tiny import build_tiny_llama

    return build_tiny_llama(seed=seed, vocab_size=len(tok), hidden_size=64, num_layers=2, num_heads=4,
                            intermediate_size=128, max_position_embeddings=64)


def _prompts(rng, n):
    return [" ".join(rng.choice(NEUTRAL) for _ in range(rng.randint(2, 4))) for _ in range(n)]


def _evaluate(policy, tok, prompts, scorer, reference, max_new_tokens, seed):
    """Mean gold score, mean learnt reward and mean sequence KL(pi || pi_sft), plus sample completions."""
    from .generation import SamplingParams, make_generator
    from .rollout import collect_rollout

    gen = make_generator(policy, tok)
    ro = collect_rollout(prompts, tok, gen, gold_reward, policy, SamplingParams(max_new_tokens=max_new_tokens,
                         seed=seed), reference=reference)
    kl = float(((ro.logprobs - ro.ref_logprobs) * ro.response_mask).sum(-1).mean())
    learnt = float(torch.tensor(scorer(ro.prompts, ro.completions)).mean())
    return {"gold": float(ro.scores.mean()), "learnt_reward": learnt, "kl": kl,
            "samples": list(zip(ro.prompts[:3], ro.completions[:3], strict=True))}


def run_quickstart(cfg: QuickstartConfig, log=print) -> dict:
    """Run the pipeline; returns the table's numbers. See the module docstring."""
    import copy

    from .data import load_rows, tokenize_preferences, tokenize_sft
    from .generation import SamplingParams, make_generator
    from .models import RewardModel
    from .models.reference import make_reference
    from .rewards import RewardModelScorer
    from .rollout import decode_completions
    from .trainers import (
        DPOConfig,
        DPOTrainer,
        PPOConfig,
        PPOTrainer,
        RewardConfig,
        RewardTrainer,
        SFTConfig,
        SFTTrainer,
    )

    start = time.perf_counter()
    out = Path(cfg.output_dir)
    rng = random.Random(cfg.seed)
    torch.manual_seed(cfg.seed)
    tok = _tokenizer()
    vocab = NEUTRAL + POSITIVE + NEGATIVE
    sft_rows = [{"prompt": p, "completion": " " + " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 6)))}
                for p in _prompts(rng, 512)]
    policy = _model(tok, cfg.seed)
    # the pipeline rebuilds everything: a second quickstart in the same output_dir replaces the first
    common = dict(progress=False, tensorboard=True, seed=cfg.seed, overwrite=True)
    offline = dict(common, sample_max_new_tokens=cfg.max_new_tokens)
    log(f"[1/4] SFT: {cfg.sft_steps} steps on {len(sft_rows)} replies of random words")
    SFTTrainer(SFTConfig(output_dir=str(out / "sft"), batch_size=32, max_steps=cfg.sft_steps, learning_rate=3e-3,
                         max_length=32, **offline),
               policy, tokenize_sft(load_rows(sft_rows, format="prompt_completion"), tok, 32), tokenizer=tok).train()
    sft_policy = copy.deepcopy(policy)

    log(f"[2/4] {cfg.pairs} pairs sampled from the SFT policy, labelled by the gold scorer (Bradley-Terry)")
    gen = make_generator(policy, tok)
    prompts = _prompts(rng, cfg.pairs)
    ids = [tok(p)["input_ids"] for p in prompts]
    comp = gen.generate(ids, SamplingParams(max_new_tokens=cfg.max_new_tokens, n=2, seed=cfg.seed))
    texts = decode_completions(tok, comp)
    pairs = []
    for i, p in enumerate(prompts):
        a, b = texts[2 * i].strip(), texts[2 * i + 1].strip()
        if not a or not b or a == b:
            continue
        p_a = 1.0 / (1.0 + math.exp(gold_score(b) - gold_score(a)))
        chosen, rejected = (a, b) if rng.random() < p_a else (b, a)
        pairs.append({"prompt": p, "chosen": " " + chosen, "rejected": " " + rejected})
    pref = tokenize_preferences(load_rows(pairs, format="preference"), tok, 32)
    split = int(0.9 * len(pref))
    log(f"[3/4] reward model: {cfg.reward_steps} steps on {split} pairs ({len(pref) - split} held out)")
    rm = RewardModel.from_causal_lm(copy.deepcopy(sft_policy), pad_token_id=tok.pad_token_id)
    rm_trainer = RewardTrainer(RewardConfig(output_dir=str(out / "reward"), batch_size=32, max_steps=cfg.reward_steps,
                                            learning_rate=1e-3, **offline), rm, pref[:split], pref[split:],
                               tokenizer=tok)
    rm_trainer.train()
    rm_accuracy = rm_trainer.evaluate().get("eval/accuracy", float("nan"))
    scorer = RewardModelScorer(rm, tok)

    log(f"[4/4] PPO against the learnt reward ({cfg.ppo_steps} steps, beta {cfg.kl_coef}, and beta 0); "
        "DPO on the same pairs")
    train_prompts = _prompts(rng, 256)
    ppo = {}
    for name, beta in (("PPO", cfg.kl_coef), ("PPO, no KL", 0.0)):
        ppo[name] = copy.deepcopy(sft_policy)
        PPOTrainer(PPOConfig(output_dir=str(out / ("ppo" if beta else "ppo_no_kl")), max_steps=cfg.ppo_steps,
                             prompts_per_step=16, samples_per_prompt=2, max_new_tokens=cfg.max_new_tokens,
                             learning_rate=3e-3, kl_coef=beta, update_epochs=2, num_minibatches=2, **common),
                   ppo[name], tok, train_prompts, scorer, reference=make_reference(sft_policy)).train()
    dpo_policy = copy.deepcopy(sft_policy)
    DPOTrainer(DPOConfig(output_dir=str(out / "dpo"), batch_size=32, max_steps=cfg.dpo_steps, learning_rate=3e-3,
                         beta=0.1, **offline), dpo_policy, pref[:split], tokenizer=tok).train()

    eval_prompts = _prompts(random.Random(cfg.seed + 1), cfg.eval_prompts)
    reference = make_reference(sft_policy)
    table = {name: _evaluate(model, tok, eval_prompts, scorer, reference, cfg.max_new_tokens, cfg.seed + 2)
             for name, model in (("SFT", sft_policy), *ppo.items(), ("DPO", dpo_policy))}
    result = {"table": table, "reward_model_accuracy": rm_accuracy, "pairs": len(pref),
              "seconds": time.perf_counter() - start}
    log("")
    log(f"{'policy':<12}{'gold score':>12}{'learnt reward':>15}{'KL to SFT':>12}")
    for name, row in table.items():
        log(f"{name:<12}{row['gold']:>12.3f}{row['learnt_reward']:>15.3f}{row['kl']:>12.3f}")
    log(f"reward model held-out accuracy: {rm_accuracy:.2f} on {len(pref) - split} gold-labelled pairs")
    for name in ("SFT", "PPO"):
        log(f"\n{name} samples:")
        for prompt, completion in table[name]["samples"]:
            log(f"  {prompt!r} -> {completion!r}")
    report = _write_report(out, result, rm_accuracy, len(pref) - split)
    log(f"\ndone in {result['seconds']:.0f} s; runs under {out}/; report: {report}")
    return result


STAGES = (("sft", "SFT"), ("reward", "Reward model"), ("ppo", "PPO (KL penalty)"), ("ppo_no_kl", "PPO, no KL"),
          ("dpo", "DPO"))


def _write_report(out: Path, result: dict, rm_accuracy: float, held_out: int) -> Path:
    """``<out>/report.html``: the table, samples before/after, the PPO curves, links to each stage's report."""
    import html

    from .training.report import html_image, html_table, write_report

    table = result["table"]
    scores = [{"policy": name, "gold score": f"{row['gold']:.3f}", "learnt reward": f"{row['learnt_reward']:.3f}",
               "KL to SFT": f"{row['kl']:.3f}"} for name, row in table.items()]
    sections = [("Gold score, learnt reward and KL to the SFT policy",
                 html_table(scores) + f"<p>reward model held-out accuracy {rm_accuracy:.2f} on {held_out} "
                                      "gold-labelled pairs</p>")]
    samples = [{"policy": name, "prompt": p, "completion": c} for name in table for p, c in table[name]["samples"]]
    sections.append(("Sample completions", html_table(samples)))
    for stage, title in STAGES[2:4]:
        for plot in ("score", "kl"):
            if (out / stage / "plots" / f"{plot}.png").exists():
                sections.append((f"{title}: {plot}", html_image(f"{stage}/plots/{plot}.png", f"{title} {plot}")))
    links = "".join(f"<li><a href='{stage}/report.html'>{html.escape(title)}</a></li>" for stage, title in STAGES
                    if (out / stage / "report.html").exists())
    sections.append(("Reports of each stage", f"<ul>{links}</ul>"))
    return write_report(out, title="alignkit quickstart", sections=sections,
                        summary={"seconds": round(result["seconds"], 1), "preference pairs": result["pairs"]})
