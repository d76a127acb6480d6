"""Online suite: seconds per optimiser step of REINFORCE, RLOO, GRPO and PPO, with a per-stage breakdown.

Standard tiny config (Llama-style, 4 layers, hidden 256, 4 heads, vocab 2048), fp32. Every step samples
16 sequences of 32 prompt + 64 new tokens, with no early EOS (``min_new_tokens`` = ``max_new_tokens``):
REINFORCE (batch-mean baseline) and PPO take 16 prompts x 1 sample, RLOO and GRPO 4 prompts x 4 samples,
so every method generates, scores and trains on the same number of tokens. The tokenizer is word-level
over 2044 synthetic words ``w0 .. w2043`` plus the 4 special tokens, so the ids cover the model's vocab
and a prompt of 32 words is 32 tokens. The reward is a substring rule (``alignkit.rewards.contains``), so
scoring costs next to nothing. Settings are the trainers' defaults otherwise: one on-policy optimiser
step per rollout for the REINFORCE family (GRPO: KL in the loss, k3), and for PPO ``update_epochs=4`` x
``num_minibatches=2`` (8 policy + 8 critic optimiser steps on 8 sequences each per rollout).

Baseline, in the same run: the RLOO trainer with a sampler built on ``model.generate`` of transformers
(:class:`TransformersGenerator`, passed as ``generator=``) instead of the default KV-cache engine. It
returns zero sampler log-probs: the rollout recomputes the policy log-probs with a forward pass anyway,
and the sampler's only feed the ``sampler_logprob_drift`` diagnostic, so the baseline does no extra work.

A timed call is one iteration of the real loop, ``trainer.train(stop_after=step + 1)``: rollout (tokenize,
generate, decode, score, policy / reference log-probs, values), advantages, update, KL controller, logging.
The stage times come from the loop's own ``time/*_s`` metrics; the update is timed by wrapping the
trainer's ``update`` in its ``timed("update")`` context (the loop does not time it itself). All five
trainers are timed round-robin (``time_interleaved``); peak memory of one step (after a warm-up step, so
the optimiser state exists) is measured in a fresh subprocess per trainer, as in the other suites.

Targets (issue 5): the RLOO and GRPO steps at most 0.5x the baseline's step; the PPO step at most 2x the
RLOO step.
"""

from __future__ import annotations

import statistics
import tempfile

import torch

from benchmarks.common import NOISY_FRACTION, Table, fmt, peak_rss_mib, time_interleaved

PROMPT_LEN, NEW_TOKENS, SEQS = 32, 64, 16
VOCAB_WORDS = 2044  # + <pad> <s> </s> <unk> = 2048, the tiny model's vocab
NUM_PROMPTS = 64
BASELINE = "rloo-hf"
# name -> (trainer, config overrides, generator); 16 sequences per step for every one of them
METHODS = {
    BASELINE: ("reinforce", {"baseline": "loo", "prompts_per_step": 4, "samples_per_prompt": 4}, "transformers"),
    "reinforce": ("reinforce", {"baseline": "batch", "prompts_per_step": 16, "samples_per_prompt": 1}, "alignkit"),
    "rloo": ("reinforce", {"baseline": "loo", "prompts_per_step": 4, "samples_per_prompt": 4}, "alignkit"),
    "grpo": ("reinforce", {"baseline": "grpo", "kl_penalty": "loss", "kl_estimator": "k3", "prompts_per_step": 4,
                           "samples_per_prompt": 4}, "alignkit"),
    "ppo": ("ppo", {"prompts_per_step": 16, "samples_per_prompt": 1}, "alignkit"),
    # information only: one pass over the rollout, one minibatch (the veRL / OpenRLHF default)
    "ppo-1epoch": ("ppo", {"prompts_per_step": 16, "samples_per_prompt": 1, "update_epochs": 1,
                           "num_minibatches": 1}, "alignkit"),
}
# column -> the loop's metric; "other" (tokenize, decode, metrics, KL controller, logging) is the rest
STAGES = {"generate": "time/generate_s", "score": "time/score_s", "policy_lp": "time/policy_logprobs_s",
          "ref_lp": "time/ref_logprobs_s", "values": "time/values_s", "advantages": "time/advantages_s",
          "update": "time/update_s"}


class TransformersGenerator:
    """A ``Generator`` that samples with ``model.generate`` of transformers (the baseline sampler).

    Prompts are left-padded; ``num_return_sequences = n`` repeats each prompt n times in a row, which is
    the prompt-major layout of :class:`~alignkit.generation.Completions`. A response runs up to and
    including its first EOS; later positions hold the pad id and are masked. ``logprobs`` are zeros: the
    rollout recomputes the policy's log-probs, the sampler's only feed the drift diagnostic.
    """

    def __init__(self, model: torch.nn.Module, eos_token_id: int, pad_token_id: int):
        self.model, self.eos_token_id, self.pad_token_id = model, int(eos_token_id), int(pad_token_id)

    def update_weights(self, model: torch.nn.Module | None = None) -> None:
        """The model is held by reference, so optimiser steps are seen; pass a model to switch objects."""
        if model is not None:
            self.model = model

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], sampling):
        from alignkit.generation import Completions, left_pad

        device = next(self.model.parameters()).device
        ids, mask = left_pad(prompts, self.pad_token_id, device)
        sample = {} if sampling.greedy else {"top_k": sampling.top_k, "top_p": sampling.top_p,
                                             "temperature": sampling.temperature}
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.random.fork_rng(devices=[]):  # seeded like the engine, without moving the global RNG
                if sampling.seed is not None:
                    torch.manual_seed(sampling.seed)
                out = self.model.generate(ids, attention_mask=mask, do_sample=not sampling.greedy, **sample,
                                          max_new_tokens=sampling.max_new_tokens,
                                          min_new_tokens=sampling.min_new_tokens, num_return_sequences=sampling.n,
                                          pad_token_id=self.pad_token_id, eos_token_id=self.eos_token_id)
        finally:
            self.model.train(was_training)
        response = out[:, ids.shape[1]:]
        is_eos = (response == self.eos_token_id).long()
        response_mask = ((is_eos.cumsum(-1) - is_eos) == 0).long()  # up to and including the first EOS
        return Completions(
            prompt_ids=ids.repeat_interleave(sampling.n, 0), prompt_mask=mask.repeat_interleave(sampling.n, 0),
            response_ids=response.masked_fill(response_mask == 0, self.pad_token_id), response_mask=response_mask,
            logprobs=torch.zeros(response.shape, dtype=torch.float32, device=device),
            finished=is_eos.bool().any(-1), group_ids=torch.arange(len(prompts), device=device).repeat_interleave(
                sampling.n))


def _tokenizer():
    from alignkit.models.tiny import build_tokenizer

    tok = build_tokenizer([" ".join(f"w{i}" for i in range(VOCAB_WORDS))], vocab_size=2048, model="word")
    assert len(tok) == 2048, len(tok)
    return tok


def _prompts(seed: int = 0) -> list[str]:
    g = torch.Generator().manual_seed(seed)
    return [" ".join(f"w{i}" for i in torch.randint(0, VOCAB_WORDS, (PROMPT_LEN,), generator=g).tolist())
            for _ in range(NUM_PROMPTS)]


def _time_update(trainer) -> None:
    """Make the loop record ``time/update_s``: run the trainer's ``update`` inside its ``timed`` context."""
    inner = trainer.update

    def update(rollout, batch):
        with trainer.timed("update"):
            return inner(rollout, batch)

    trainer.update = update


def build_trainer(method: str, new_tokens: int, out_dir: str, tokenizer=None, prompts=None):
    from alignkit.models.tiny import build_tiny_llama
    from alignkit.rewards import contains
    from alignkit.trainers import PPOConfig, PPOTrainer, ReinforceConfig, ReinforceTrainer

    kind, overrides, sampler = METHODS[method]
    tokenizer = tokenizer or _tokenizer()
    policy = build_tiny_llama(seed=0)
    config_cls, trainer_cls = (PPOConfig, PPOTrainer) if kind == "ppo" else (ReinforceConfig, ReinforceTrainer)
    config = config_cls(output_dir=out_dir, num_steps=1_000_000, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                        progress=False, tensorboard=False, **overrides)
    generator = None
    if sampler == "transformers":
        generator = TransformersGenerator(policy, tokenizer.eos_token_id, tokenizer.pad_token_id)
    trainer = trainer_cls(config, policy, tokenizer, prompts or _prompts(), contains("w7"), generator=generator)
    _time_update(trainer)
    return trainer


def _step_fn(trainer):
    return lambda: trainer.train(stop_after=trainer.step + 1)


def memory_probe(method: str, new_tokens: int = NEW_TOKENS):
    """For ``peak_rss_mib``: build the trainer, take one warm-up step, return the next step to measure."""
    step = _step_fn(build_trainer(method, new_tokens, tempfile.mkdtemp()))
    step()
    return step


def run(quick: bool = False) -> dict:
    new_tokens = 16 if quick else NEW_TOKENS
    repeats = 2 if quick else 5
    warmup = 1
    tokenizer, prompts = _tokenizer(), _prompts()
    trainers = {m: build_trainer(m, new_tokens, tempfile.mkdtemp(), tokenizer, prompts) for m in METHODS}
    timing = time_interleaved({m: _step_fn(t) for m, t in trainers.items()}, warmup=warmup, repeats=repeats)
    rows = []
    for method, trainer in trainers.items():
        kind, overrides, sampler = METHODS[method]
        history = trainer.history[warmup:]  # one entry per timed call, in the order of times_s
        times = timing[method]["times_s"]
        stages = {name: statistics.median(h[key] for h in history) for name, key in STAGES.items()}
        other = [t - sum(h[key] for key in STAGES.values()) for t, h in zip(times, history, strict=True)]
        mem = None if quick else peak_rss_mib("benchmarks.online:memory_probe",
                                              {"method": method, "new_tokens": new_tokens}, repeats=1)
        rows.append({
            "method": method, "trainer": kind, "generator": sampler, "prompts_per_step": overrides["prompts_per_step"],
            "samples_per_prompt": overrides["samples_per_prompt"], "step_s": timing[method]["median_s"],
            "stages_s": {**stages, "other": statistics.median(other)},
            "stage_times_s": {**{name: [h[key] for h in history] for name, key in STAGES.items()}, "other": other},
            "response_length": statistics.mean(h["response_length"] for h in history),
            "eos_rate": statistics.mean(h["eos_rate"] for h in history),
            "peak_mib": None if mem is None else mem["peak_mib"],
            "timing": timing[method], "other_busy_fraction": timing[method]["other_busy_fraction"],
        })
    by = {r["method"]: r for r in rows}
    targets = []
    for method in ("rloo", "grpo"):
        ratio = by[method]["step_s"] / by[BASELINE]["step_s"]
        targets.append({"target": f"{method} step / rloo-hf step", "measured": ratio, "threshold": "<= 0.5",
                        "pass": ratio <= 0.5})
    ratio = by["ppo"]["step_s"] / by["rloo"]["step_s"]
    targets.append({"target": "ppo step / rloo step", "measured": ratio, "threshold": "<= 2", "pass": ratio <= 2.0})
    ratio = by["ppo-1epoch"]["step_s"] / by["rloo"]["step_s"]
    targets.append({"target": "ppo-1epoch step / rloo step", "measured": ratio, "threshold": "-", "pass": None})
    gen = by[BASELINE]["stages_s"]["generate"] / by["rloo"]["stages_s"]["generate"]
    targets.append({"target": "generate stage: rloo-hf / rloo", "measured": gen, "threshold": "-", "pass": None})
    ppo = {**METHODS["ppo"][1], "update_epochs": 4, "num_minibatches": 2}
    return {"config": {"model": "llama 4L h256 4 heads vocab 2048 fp32", "prompt_len": PROMPT_LEN,
                       "new_tokens": new_tokens, "sequences_per_step": SEQS, "repeats": repeats, "warmup": warmup,
                       "reward": "contains('w7')", "methods": {m: v[1] for m, v in METHODS.items()}, "ppo": ppo,
                       "baseline_sampler_logprobs": "zeros (the rollout recomputes policy log-probs)"},
            "rows": rows, "targets": targets}


def tables(result: dict) -> list[Table]:
    cfg = result["config"]
    rows = []
    for r in result["rows"]:
        s = r["stages_s"]
        rows.append([r["method"], r["generator"], f"{r['prompts_per_step']}x{r['samples_per_prompt']}",
                     fmt(r["step_s"], ".3f") + ("*" if (r["other_busy_fraction"] or 0) > NOISY_FRACTION else ""),
                     *(fmt(1000 * s[k], ".0f") for k in (*STAGES, "other")), fmt(r["peak_mib"], ".0f")])
    targets = [[t["target"], fmt(t["measured"], ".2f"), t["threshold"],
                {True: "PASS", False: "FAIL", None: "(info)"}[t["pass"]]] for t in result["targets"]]
    return [
        Table(f"Online RL steps: {cfg['sequences_per_step']} sequences of {cfg['prompt_len']} prompt + "
              f"{cfg['new_tokens']} new tokens per step (stage columns: median ms)",
              ["method", "generator", "prompts x n", "s/step", "generate", "score", "policy lp", "ref lp", "values",
               "advantages", "update", "other", "peak MiB"], rows,
              ["rloo-hf: the RLOO trainer sampling with transformers' model.generate (the baseline)",
               "update: policy optimiser step(s), PPO's critic included (4 epochs x 2 minibatches); other: tokenize, "
               "decode, metrics, logging", "* timings flagged: other processes used > 10% of the CPUs"]),
        Table("Targets", ["target", "measured", "threshold", "result"], targets),
    ]
