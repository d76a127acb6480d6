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
The stage times come from the loop's own ``time/*_s`` metrics (``time/update_s`` included; the refresh
of the sampler's weights, ``time/sync_weights_s``, falls in "other"). All trainers are timed round-robin
(``time_interleaved``); peak memory of one step (after a warm-up step, so the optimiser state exists) is
measured in a fresh subprocess per trainer, as in the other suites.

Mixed precision: ``rloo-bf16`` and ``ppo-bf16`` are ``rloo`` and ``ppo`` with ``mixed_precision="bf16"``
(forwards under bf16 autocast, fp32 weights and optimiser; sampling from a bf16 copy of the policy that the
loop refreshes after every update), timed in the same round-robin.

LoRA memory: PPO on a larger model (Llama 8 layers, hidden 512, 8 heads, vocab 2048, fp32; same rollout
shape), full vs ``lora=True, lora_r=8``. With LoRA the reference is the policy with its adapters disabled
(no copy) and the critic is a LoRA'd copy of the base model (trunk frozen; adapters and value head
trained), so the frozen weights carry no gradients or AdamW moments. Each is measured in a fresh
subprocess (``peak_rss_mib``) after one warm-up step: "peak RSS" is the process's whole resident peak
during the measured step (``VmHWM``: interpreter and libraries, weights, optimiser state, activations);
the same peak less the resident size after the imports (before any model was built) is shown beside it.

Data parallel: RLOO (4 prompts x 4 samples = 16 sequences per step, the same global batch) as
2 processes x 1 thread (``torchrun --standalone --nproc_per_node 2``, gloo, ``OMP_NUM_THREADS=1``) against
1 process x 2 threads (``OMP_NUM_THREADS=2``), both run by :mod:`benchmarks._online_ddp` in fresh
subprocesses: one warm-up step, then the median of the timed steps.

``--quick`` (a smoke test, not a measurement): 16 new tokens, 2 timed rounds, the LoRA memory row on the
standard tiny model instead of hidden 512 x 8 layers, one timed data-parallel step.

Targets (issue 5): the RLOO and GRPO steps at most 0.5x the baseline's step; the PPO step at most 2x the
RLOO step.

Targets (issue 13): the bf16 step at most 0.7x the fp32 step, for RLOO and for PPO; PPO's peak RSS with
LoRA (r 8) at most 0.6x full PPO's (8 layers, hidden 512). Reported, no target: the step time of
2 processes x 1 thread over 1 process x 2 threads.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from benchmarks.common import (
    FIXED_MMAP,
    NOISY_FRACTION,
    REPO_ROOT,
    Table,
    _child_env,
    fmt,
    peak_rss_mib,
    time_interleaved,
)

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
    # issue 13: bf16 autocast + sampling from a bf16 copy of the policy
    "rloo-bf16": ("reinforce", {"baseline": "loo", "prompts_per_step": 4, "samples_per_prompt": 4,
                                "mixed_precision": "bf16"}, "alignkit"),
    "ppo-bf16": ("ppo", {"prompts_per_step": 16, "samples_per_prompt": 1, "mixed_precision": "bf16"}, "alignkit"),
}
BF16_PAIRS = {"rloo": "rloo-bf16", "ppo": "ppo-bf16"}  # fp32 method -> its bf16 twin
BF16_TARGET = 0.7
# LoRA memory row: PPO on this larger model, full vs LoRA
LORA_MODEL = {"hidden_size": 512, "num_layers": 8, "num_heads": 8}
LORA_MODEL_QUICK = {}  # --quick: the standard tiny model (a smoke test of the row, not its measurement)
LORA_OVERRIDES = {"lora": True, "lora_r": 8}
LORA_TARGET = 0.6
# data-parallel row: this method, 2 processes x 1 thread vs 1 process x 2 threads
DDP_METHOD, DDP_PROCESSES = "rloo", 2
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


def build_trainer(method: str, new_tokens: int, out_dir: str, tokenizer=None, prompts=None,
                  model_kwargs: dict | None = None, extra: dict | None = None):
    """The trainer of ``METHODS[method]``; ``model_kwargs`` change the tiny Llama (default: the standard tiny
    config), ``extra`` adds config overrides (e.g. ``lora``)."""
    from alignkit.models.tiny import build_tiny_llama
    from alignkit.rewards import contains
    from alignkit.trainers import PPOConfig, PPOTrainer, ReinforceConfig, ReinforceTrainer

    kind, overrides, sampler = METHODS[method]
    tokenizer = tokenizer or _tokenizer()
    policy = build_tiny_llama(seed=0, **(model_kwargs or {}))
    config_cls, trainer_cls = (PPOConfig, PPOTrainer) if kind == "ppo" else (ReinforceConfig, ReinforceTrainer)
    config = config_cls(output_dir=out_dir, max_steps=1_000_000, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                        progress=False, tensorboard=False, **{**overrides, **(extra or {})})
    generator = None
    if sampler == "transformers":
        generator = TransformersGenerator(policy, tokenizer.eos_token_id, tokenizer.pad_token_id)
    return trainer_cls(config, policy, tokenizer, prompts or _prompts(), contains("w7"), generator=generator)


def _step_fn(trainer):
    return lambda: trainer.train(stop_after=trainer.step + 1)


def memory_probe(method: str, new_tokens: int = NEW_TOKENS):
    """For ``peak_rss_mib``: build the trainer, take one warm-up step, return the next step to measure."""
    step = _step_fn(build_trainer(method, new_tokens, tempfile.mkdtemp()))
    step()
    return step


def _rss_kib() -> int | None:
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration, ValueError):
        return None


def lora_memory_probe(lora: bool, new_tokens: int = NEW_TOKENS, quick: bool = False):
    """For ``peak_rss_mib``: PPO on the LoRA row's model, full or LoRA; one warm-up step, then the step to
    measure. The callable carries ``rss_imports_kib``, the resident size before any model was built."""
    import peft  # noqa: F401 - imported before the baseline reading, like the rest
    import transformers  # noqa: F401

    import alignkit.trainers  # noqa: F401

    tokenizer, prompts = _tokenizer(), _prompts()
    before = _rss_kib()
    trainer = build_trainer("ppo", new_tokens, tempfile.mkdtemp(), tokenizer, prompts,
                            model_kwargs=LORA_MODEL_QUICK if quick else LORA_MODEL,
                            extra=LORA_OVERRIDES if lora else None)
    step = _step_fn(trainer)
    step()

    def measured():
        return step()

    measured.rss_imports_kib = before
    return measured




def _lora_memory(new_tokens: int, quick: bool = False) -> dict:
    """Full vs LoRA PPO peak memory, each in a fresh subprocess, with glibc's default allocator settings and
    with a fixed 128 KiB mmap threshold; ``{"full": {...}, "lora": {...}, "full, mmap 128k": ...}`` in MiB."""
    out = {}
    runs = (("full", False, None), ("lora", True, None), ("full, mmap 128k", False, FIXED_MMAP),
            ("lora, mmap 128k", True, FIXED_MMAP))
    for name, lora, env in runs:
        mem = peak_rss_mib("benchmarks.online:lora_memory_probe",
                           {"lora": lora, "new_tokens": new_tokens, "quick": quick}, repeats=1, timeout_s=600, env=env)
        r = mem["readings"][0]
        out[name] = {"peak_rss_mib": r["hwm_after_kib"] / 1024.0,
                     "above_imports_mib": (r["hwm_after_kib"] - r["rss_imports_kib"]) / 1024.0,
                     "step_peak_mib": mem["peak_mib"], "rss_before_step_mib": r["rss_before_kib"] / 1024.0,
                     "rss_imports_mib": r["rss_imports_kib"] / 1024.0, "method": mem["method"]}
    return out


def _torchrun() -> str:
    exe = Path(sys.executable).parent / "torchrun"
    return str(exe) if exe.exists() else (shutil.which("torchrun") or "torchrun")


def _ddp_run(processes: int, threads: int, new_tokens: int, steps: int, timeout_s: float = 900) -> dict:
    """Seconds per RLOO step with ``processes`` x ``threads`` (a fresh ``_online_ddp`` run)."""
    work = tempfile.mkdtemp()
    result = os.path.join(work, "result.json")
    args = json.dumps({"method": DDP_METHOD, "new_tokens": new_tokens, "steps": steps,
                       "out_dir": os.path.join(work, "run"), "result": result})
    env = {**_child_env(), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    launch = ([_torchrun(), "--standalone", "--nproc_per_node", str(processes), "-m"] if processes > 1
              else [sys.executable, "-m"])
    proc = subprocess.run([*launch, "benchmarks._online_ddp", args], cwd=REPO_ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout_s, check=False)
    if proc.returncode != 0 or not os.path.exists(result):
        raise RuntimeError(f"{processes} x {threads} run failed (exit {proc.returncode}):\n"
                           f"{proc.stdout[-1500:]}\n{proc.stderr[-3000:]}")
    with open(result) as f:
        out = json.load(f)
    shutil.rmtree(work, ignore_errors=True)
    return {**out, "median_s": statistics.median(out["step_times_s"]), "processes": processes,
            "threads": threads}


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
    del trainers  # free the suite's models before the subprocess measurements
    # issue 13 (a): bf16 over fp32, same run
    for fp32, bf16 in BF16_PAIRS.items():
        ratio = by[bf16]["step_s"] / by[fp32]["step_s"]
        targets.append({"target": f"{bf16} step / {fp32} step", "measured": ratio, "threshold": f"<= {BF16_TARGET}",
                        "pass": ratio <= BF16_TARGET, "issue": 13})
    # issue 13 (b): LoRA PPO peak memory over full PPO's, on the larger model
    lora_memory = _lora_memory(new_tokens, quick)
    ratio = lora_memory["lora"]["peak_rss_mib"] / lora_memory["full"]["peak_rss_mib"]
    targets.append({"target": f"ppo lora peak RSS / ppo full ({'h256 4L, quick' if quick else 'h512 8L'})",
                    "measured": ratio,
                    "threshold": f"<= {LORA_TARGET}", "pass": ratio <= LORA_TARGET, "issue": 13})
    ratio = lora_memory["lora"]["above_imports_mib"] / lora_memory["full"]["above_imports_mib"]
    targets.append({"target": "  same, less the RSS after imports", "measured": ratio, "threshold": "-",
                    "pass": None, "issue": 13})
    ratio = lora_memory["lora, mmap 128k"]["peak_rss_mib"] / lora_memory["full, mmap 128k"]["peak_rss_mib"]
    targets.append({"target": "  same, fixed 128 KiB mmap threshold", "measured": ratio, "threshold": "-",
                    "pass": None, "issue": 13})
    # issue 13 (c): 2 processes x 1 thread over 1 process x 2 threads, same global batch
    ddp_steps = 1 if quick else 5
    ddp = {"1x2": _ddp_run(1, 2, new_tokens, ddp_steps), f"{DDP_PROCESSES}x1": _ddp_run(DDP_PROCESSES, 1, new_tokens,
                                                                                      ddp_steps)}
    ratio = ddp[f"{DDP_PROCESSES}x1"]["median_s"] / ddp["1x2"]["median_s"]
    targets.append({"target": f"{DDP_METHOD}: {DDP_PROCESSES} proc x 1 thread / 1 proc x 2 threads",
                    "measured": ratio, "threshold": "-", "pass": None, "issue": 13})
    ppo = {**METHODS["ppo"][1], "update_epochs": 4, "num_minibatches": 2}
    return {"config": {"model": "llama 4L h256 4 heads vocab 2048 fp32", "prompt_len": PROMPT_LEN,
                       "new_tokens": new_tokens, "sequences_per_step": SEQS, "repeats": repeats, "warmup": warmup,
                       "reward": "contains('w7')", "methods": {m: v[1] for m, v in METHODS.items()}, "ppo": ppo,
                       "baseline_sampler_logprobs": "zeros (the rollout recomputes policy log-probs)",
                       "lora_memory": {"model": "llama " + ("4L h256 4 heads (quick)" if quick else "8L h512 8 heads")
                                       + " vocab 2048 fp32", **LORA_OVERRIDES,
                                       "trainer": "ppo"},
                       "ddp": {"method": DDP_METHOD, "steps": ddp_steps, "warmup": 1, "backend": "gloo (CPU)"}},
            "rows": rows, "targets": targets, "lora_memory": lora_memory, "ddp": ddp}


def tables(result: dict) -> list[Table]:
    cfg = result["config"]
    rows = []
    for r in result["rows"]:
        s = r["stages_s"]
        rows.append([r["method"], r["generator"], f"{r['prompts_per_step']}x{r['samples_per_prompt']}",
                     fmt(r["step_s"], ".3f") + ("*" if (r["other_busy_fraction"] or 0) > NOISY_FRACTION else ""),
                     *(fmt(1000 * s[k], ".0f") for k in (*STAGES, "other")), fmt(r["peak_mib"], ".0f")])
    targets = [[t["target"], fmt(t["measured"], ".2f"), t["threshold"],
                {True: "PASS", False: "FAIL", None: "(info)"}[t["pass"]], f"#{t.get('issue', 5)}"]
               for t in result["targets"]]
    memory = [[name, fmt(m["peak_rss_mib"], ".0f"), fmt(m["above_imports_mib"], ".0f"), fmt(m["step_peak_mib"], ".0f"),
               fmt(m["rss_before_step_mib"], ".0f")] for name, m in result["lora_memory"].items()]
    ddp = [[name, str(d["processes"]), str(d["threads"]), fmt(d["median_s"], ".3f"),
            " ".join(fmt(t, ".3f") for t in d["step_times_s"])] for name, d in result["ddp"].items()]
    return [
        Table(f"Online RL steps: {cfg['sequences_per_step']} sequences of {cfg['prompt_len']} prompt + "
              f"{cfg['new_tokens']} new tokens per step (stage columns: median ms)",
              ["method", "generator", "prompts x n", "s/step", "generate", "score", "policy lp", "ref lp", "values",
               "advantages", "update", "other", "peak MiB"], rows,
              ["rloo-hf: the RLOO trainer sampling with transformers' model.generate (the baseline)",
               "update: policy optimiser step(s), PPO's critic included (4 epochs x 2 minibatches); other: tokenize, "
               "decode, metrics, logging", "* timings flagged: other processes used > 10% of the CPUs"]),
        Table(f"PPO memory, full vs LoRA (r 8): {cfg['lora_memory']['model']} (MiB, fresh subprocess each)",
              ["ppo", "peak RSS", "less imports", "step peak", "RSS before step"], memory,
              ["peak RSS: the process's resident peak during one step after a warm-up step (VmHWM); less imports: "
               "minus the RSS after the imports, before any model existed",
               "step peak: the step's peak above what the process held before it; RSS before step: weights, "
               "reference, critic, optimiser state (and what the allocator kept from the warm-up step)",
               "mmap 128k: MALLOC_MMAP_THRESHOLD_=131072 (glibc returns freed blocks of 128 KiB and more at once)"]),
        Table(f"Data parallel, {cfg['ddp']['method']} ({cfg['sequences_per_step']} sequences per step in all)",
              ["run", "processes", "threads each", "s/step", "step times"], ddp,
              ["2x1: torchrun --standalone --nproc_per_node 2 (gloo); 1x2: one process; OMP_NUM_THREADS set to "
               "the threads each"]),
        Table("Targets", ["target", "measured", "threshold", "result", "issue"], targets),
    ]
