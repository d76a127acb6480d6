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
    """Settings of the built-in pipeline (defaults: 43 s on an idle 2-core Intel Xeon with AMX, 2026-12-06)."""

    output_dir: str = option("runs/quickstart", "run directory")
    seed: int = option(0, "seed of everything")
    sft_steps: int = option(150, "SFT optimiser steps")
    pairs: int = option(1024, "preference pairs sampled from the SFT policy and labelled by the gold scorer "
                               "(>= 64: the reward model trains on batches of 32 and holds 10% out)",
                        bounds="[64, inf)")
    reward_steps: int = option(150, "reward-model optimiser steps")
    ppo_steps: int = option(60, "PPO steps")
    dpo_steps: int = option(100, "DPO optimiser steps")
    kl_coef: float = option(0.2, "PPO's KL coefficient (a second PPO run with 0 shows over-optimisation)",
                            bounds="(0, inf)")
    dpo_beta: float = option(0.1, "DPO's beta", bounds="(0, inf)")
    frontier: bool = option(True, "also train PPO at kl_coef/4 and 2.5 kl_coef and DPO at dpo_beta/4 and 4 "
                                   "dpo_beta, for the reward-KL frontier (false: about half the time)")
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


def _evaluate(policy, tok, prompts, scorer, reference, max_new_tokens, seed, samples=4):
    """Mean gold score, mean learnt reward and mean sequence KL(pi || pi_sft) of ``samples`` completions for each
    prompt (the same seed at every call: common random numbers across policies), plus three completions."""
    from .generation import SamplingParams, make_generator
    from .rollout import collect_rollout

    gen = make_generator(policy, tok)
    ro = collect_rollout(prompts, tok, gen, gold_reward, policy, SamplingParams(max_new_tokens=max_new_tokens,
                         n=samples, seed=seed), reference=reference)
    kl = float(((ro.logprobs - ro.ref_logprobs) * ro.response_mask).sum(-1).mean())
    learnt = float(torch.tensor(scorer(ro.prompts, ro.completions)).mean())
    shown = range(0, min(3 * samples, len(ro.completions)), samples)  # the first sample of the first 3 prompts
    return {"gold": float(ro.scores.mean()), "learnt_reward": learnt, "kl": kl,
            "samples": [(ro.prompts[i], ro.completions[i]) for i in shown]}


def _best_of_n_frontier(policy, tok, prompts, scorer, max_new_tokens, seed, largest_n=64):
    """Best-of-n from ``policy`` for n = 1, 2, 4, ..., ``largest_n``, picked by the learnt reward (one pool of
    ``largest_n`` samples per prompt, see :func:`alignkit.training.frontier.best_of_n_points`)."""
    from .generation import SamplingParams, make_generator
    from .rollout import sample_and_score
    from .training.frontier import best_of_n_points

    sampled = sample_and_score(make_generator(policy, tok), tok, [tok(p)["input_ids"] for p in prompts],
                               SamplingParams(max_new_tokens=max_new_tokens, n=largest_n, seed=seed), prompts,
                               reward_fn=scorer)
    shape = (len(prompts), largest_n)
    learnt = sampled.raw_scores.double().reshape(shape)
    gold = torch.tensor(gold_reward(None, sampled.texts), dtype=torch.float64).reshape(shape)
    ns = [2 ** k for k in range(int(math.log2(largest_n)) + 1)]
    return best_of_n_points(learnt, gold, ns)


def _train_with_checkpoints(trainer, steps, evaluate, run, method, start_point) -> tuple[list[dict], dict]:
    """Train to ``steps`` in :data:`FRONTIER_CHECKPOINTS` segments (``train(stop_after=...)`` continues the same
    run), evaluating after each; returns the run's frontier points (the first: the SFT policy it starts from)
    and the evaluation of the final policy."""
    every = max(1, math.ceil(steps / FRONTIER_CHECKPOINTS))
    points = [{**start_point, "run": run, "method": method, "step": 0}]
    for stop in [*range(every, steps, every), steps]:
        trainer.train(stop_after=stop if stop < steps else None)
        row = evaluate()
        points.append({"run": run, "method": method, "step": stop, "kl": row["kl"], "gold": row["gold"],
                       "reward": row["learnt_reward"]})
    return points, row


FRONTIER_CHECKPOINTS = 6  # evaluations along each PPO and DPO run (plus the SFT start)


def _run_dir(method: str, beta: float, headline: float) -> str:
    """The run's directory under the quickstart's: ``ppo`` / ``dpo`` for the configured beta, ``ppo_no_kl``,
    ``ppo_beta0.05``..."""
    if beta == headline:
        return method
    return f"{method}_no_kl" if beta == 0 else f"{method}_beta{beta:g}"


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

    eval_prompts = _prompts(random.Random(cfg.seed + 1), cfg.eval_prompts)
    reference = make_reference(sft_policy)

    def evaluator(model):
        return lambda: _evaluate(model, tok, eval_prompts, scorer, reference, cfg.max_new_tokens, cfg.seed + 2)

    sft_row = evaluator(sft_policy)()
    start_point = {"kl": 0.0, "gold": sft_row["gold"], "reward": sft_row["learnt_reward"]}
    ppo_betas = (cfg.kl_coef / 4, cfg.kl_coef, cfg.kl_coef * 2.5, 0.0) if cfg.frontier else (cfg.kl_coef, 0.0)
    dpo_betas = (cfg.dpo_beta / 4, cfg.dpo_beta, cfg.dpo_beta * 4) if cfg.frontier else (cfg.dpo_beta,)
    log(f"[4/4] PPO against the learnt reward ({cfg.ppo_steps} steps at beta "
        f"{', '.join(f'{b:g}' for b in ppo_betas)}), DPO on the same pairs (beta "
        f"{', '.join(f'{b:g}' for b in dpo_betas)}), Best-of-N up to 64: the reward-KL frontier")
    train_prompts = _prompts(rng, 256)
    table, frontier, runs = {"SFT": sft_row}, [], {"SFT": "sft", "Reward model": "reward"}
    for beta in ppo_betas:
        name = f"PPO β={beta:g}" if beta else "PPO, no KL"
        runs[name] = _run_dir("ppo", beta, cfg.kl_coef)
        policy = copy.deepcopy(sft_policy)
        trainer = PPOTrainer(PPOConfig(output_dir=str(out / runs[name]), max_steps=cfg.ppo_steps, prompts_per_step=16,
                                       samples_per_prompt=2, max_new_tokens=cfg.max_new_tokens, learning_rate=3e-3,
                                       kl_coef=beta, update_epochs=2, num_minibatches=2, chat_template="off",
                                       **common),  # the task's prompts are bare words, as in its SFT rows
                             policy, tok, train_prompts, scorer, reference=make_reference(sft_policy))
        points, table[name] = _train_with_checkpoints(trainer, cfg.ppo_steps, evaluator(policy), name,
                                                      "PPO" if beta else "PPO, no KL", start_point)
        frontier += points
    for beta in dpo_betas:
        name = f"DPO β={beta:g}"
        runs[name] = _run_dir("dpo", beta, cfg.dpo_beta)
        policy = copy.deepcopy(sft_policy)
        trainer = DPOTrainer(DPOConfig(output_dir=str(out / runs[name]), batch_size=32, max_steps=cfg.dpo_steps,
                                       learning_rate=3e-3, beta=beta, **offline), policy, pref[:split], tokenizer=tok)
        points, table[name] = _train_with_checkpoints(trainer, cfg.dpo_steps, evaluator(policy), name, "DPO",
                                                      start_point)
        frontier += points
    frontier += _best_of_n_frontier(sft_policy, tok, eval_prompts, scorer, cfg.max_new_tokens, cfg.seed + 3)
    result = {"table": table, "frontier": frontier, "runs": runs, "reward_model_accuracy": rm_accuracy,
              "pairs": len(pref), "seconds": time.perf_counter() - start}
    log("")
    log(f"{'policy':<16}{'gold score':>12}{'learnt reward':>15}{'KL to SFT':>12}")
    for name, row in table.items():
        log(f"{name:<16}{row['gold']:>12.3f}{row['learnt_reward']:>15.3f}{row['kl']:>12.3f}")
    log(f"reward model held-out accuracy: {rm_accuracy:.2f} on {len(pref) - split} gold-labelled pairs")
    for name in ("SFT", f"PPO β={cfg.kl_coef:g}"):
        log(f"\n{name} samples:")
        for prompt, completion in table[name]["samples"]:
            log(f"  {prompt!r} -> {completion!r}")
    report = _write_report(out, result, rm_accuracy, len(pref) - split)
    log(f"\ndone in {result['seconds']:.0f} s; runs under {out}/; report: {report}")
    return result


def _checkpoint_records(frontier: list[dict], run: str) -> list[dict]:
    """A run's frontier points as metrics records ``{"step", "eval/gold", "eval/learnt_reward", "eval/kl"}``."""
    return [{"step": p["step"], "eval/gold": p["gold"], "eval/learnt_reward": p["reward"], "eval/kl": p["kl"]}
            for p in frontier if p["run"] == run]


def _write_report(out: Path, result: dict, rm_accuracy: float, held_out: int) -> Path:
    """``<out>/report.html``: the reward-KL frontier, the table, samples, the PPO and DPO curves on shared axes,
    links to each run's report. ``frontier.jsonl`` holds the frontier's points."""
    import html
    import json

    from .training.frontier import plot_frontier
    from .training.report import html_image, html_table, plot_comparison, read_metrics, write_report

    table = result["table"]
    with (out / "frontier.jsonl").open("w") as f:
        f.writelines(json.dumps(point) + "\n" for point in result["frontier"])
    plot_frontier(result["frontier"], out / "plots" / "frontier.png",
                  title="Gold score and learnt reward against KL to the SFT policy")
    sections = [("The reward-KL frontier",
                 "<p>Each curve is one run, a marker per checkpoint from the SFT policy (KL 0) on; Best-of-N picks "
                 "the reply the reward model likes best among n samples of the SFT policy (KL: the analytic bound "
                 "log n - (n-1)/n). Left, the hidden gold scorer; right, the learnt reward the runs optimise. "
                 "Where a curve keeps rising on the right while it falls on the left, the policy is "
                 "over-optimising the reward model (Gao et al. 2022).</p>"
                 + html_image("plots/frontier.png", "reward-KL frontier"))]
    scores = [{"policy": name, "gold score": f"{row['gold']:.3f}", "learnt reward": f"{row['learnt_reward']:.3f}",
               "KL to SFT (nats)": f"{row['kl']:.3f}"} for name, row in table.items()]
    sections.append(("Final policies: gold score, learnt reward and KL to the SFT policy",
                     html_table(scores) + f"<p>reward model held-out accuracy {rm_accuracy:.2f} on {held_out} "
                                          "gold-labelled pairs</p>"))
    samples = [{"policy": name, "prompt": p, "completion": c} for name in table for p, c in table[name]["samples"]]
    sections.append(("Sample completions", html_table(samples)))
    curves = {"PPO runs": ("PPO", "eval/gold", "eval/learnt_reward", "eval/kl", "score", "kl", "response_length"),
              "DPO runs": ("DPO", "eval/gold", "eval/learnt_reward", "eval/kl", "loss", "rewards/accuracy",
                           "rewards/margin")}
    for title, (method, *keys) in curves.items():
        series = {name: read_metrics(out / d / "metrics.jsonl") + _checkpoint_records(result["frontier"], name)
                  for name, d in result["runs"].items() if name.startswith(method)}
        png = plot_comparison(series, keys, out / "plots" / f"{method.lower()}_runs.png",
                              title=f"{title}: held-out evaluation at each checkpoint (eval/) and training metrics")
        if png is not None:
            sections.append((f"{title} on shared axes", html_image(png.relative_to(out).as_posix(), title)))
    links = "".join(f"<li><a href='{d}/report.html'>{html.escape(name)}</a></li>" for name, d in result["runs"].items()
                    if (out / d / "report.html").exists())
    sections.append(("Reports of each run", f"<ul>{links}</ul>"))
    return write_report(out, title="alignkit quickstart", sections=sections,
                        summary={"seconds": round(result["seconds"], 1), "preference pairs": result["pairs"]})
