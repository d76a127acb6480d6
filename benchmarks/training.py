"""Training suite: SFT, reward-model and DPO optimiser steps, fp32 and bf16.

Standard tiny config (Llama-style, 4 layers, 4 heads, vocab 2048) at hidden 256 and 512; every step sees
16 sequences of 32 prompt + 64 response tokens (SFT: 16 examples; reward model and DPO: 8 pairs, chosen
and rejected in one forward pass), so the three trainers process the same number of sequences. Synthetic
token ids: the work per step does not depend on the text.

Reported: tokens/s (real tokens through the model per second), peak memory of one step in a fresh
subprocess (as in the other suites), and model FLOP utilisation MFU = 6 * N * tokens / time / peak, with N
the non-embedding parameters and peak the matmul throughput measured in this run for the same dtype.

Targets (issue 4): bf16 at least 1.5x the tokens/s of fp32 at hidden 512; DPO peak memory at most 1.2x
that of SFT on the same number of sequences.
"""

from __future__ import annotations

import tempfile
import time

import torch

from benchmarks.common import Table, fmt, peak_rss_mib, time_interleaved

PROMPT, RESPONSE, SEQS = 32, 64, 16
TRAINERS = ("sft", "reward", "dpo")


def _examples(kind: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rand = lambda n: torch.randint(3, 2048, (n,), generator=g).tolist()  # noqa: E731
    if kind == "sft":
        out = []
        for _ in range(4 * SEQS):
            p, r = rand(PROMPT), rand(RESPONSE)
            out.append({"input_ids": p + r, "labels": [-100] * PROMPT + r})
        return out
    return [{"prompt_ids": rand(PROMPT), "chosen_ids": rand(RESPONSE), "rejected_ids": rand(RESPONSE)}
            for _ in range(2 * SEQS)]


def build_trainer(kind: str, dtype: str, hidden: int, out_dir: str):
    from alignkit.models import RewardModel
    from alignkit.models.tiny import build_tiny_llama
    from alignkit.trainers import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer, SFTConfig, SFTTrainer

    model = build_tiny_llama(seed=0, hidden_size=hidden)
    common = dict(output_dir=out_dir, max_steps=10_000, learning_rate=1e-5, progress=False, tensorboard=False,
                  mixed_precision="bf16" if dtype == "bf16" else "no")
    if kind == "sft":
        return SFTTrainer(SFTConfig(batch_size=SEQS, **common), model, _examples("sft"), pad_token_id=0), model
    if kind == "reward":  # the trained module has a scalar head instead of the LM head
        rm = RewardModel.from_causal_lm(model, pad_token_id=0)
        return RewardTrainer(RewardConfig(batch_size=SEQS // 2, **common), rm, _examples("pairs"),
                             pad_token_id=0), rm
    return DPOTrainer(DPOConfig(batch_size=SEQS // 2, **common), model, _examples("pairs"), pad_token_id=0), model


def _step_fn(trainer):
    return trainer.training_step


def memory_probe(kind: str, dtype: str, hidden: int):
    """For ``peak_rss_mib``: build the trainer, take one warm-up step, return the next step to measure."""
    trainer, _ = build_trainer(kind, dtype, hidden, tempfile.mkdtemp())
    step = _step_fn(trainer)
    step()
    return step


def _matmul_gflops(dtype: torch.dtype, n: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def _non_embedding_params(model) -> int:
    """Parameters that do matmul work per token: all but the input embedding table."""
    return sum(p.numel() for name, p in model.named_parameters() if "embed_tokens" not in name)


def run(quick: bool = False) -> dict:
    hiddens = [256] if quick else [256, 512]
    repeats = 2 if quick else 5
    peak = {"fp32": _matmul_gflops(torch.float32), "bf16": _matmul_gflops(torch.bfloat16)}
    tokens = SEQS * (PROMPT + RESPONSE)
    rows = []
    for hidden in hiddens:
        for kind in TRAINERS:
            trainers = {d: build_trainer(kind, d, hidden, tempfile.mkdtemp()) for d in ("fp32", "bf16")}
            timing = time_interleaved({d: _step_fn(t) for d, (t, _) in trainers.items()}, warmup=1, repeats=repeats)
            for dtype, (_, model) in trainers.items():
                secs = timing[dtype]["median_s"]
                mem = None if quick else peak_rss_mib("benchmarks.training:memory_probe",
                                                      {"kind": kind, "dtype": dtype, "hidden": hidden}, repeats=1)
                rows.append({
                    "trainer": kind, "hidden": hidden, "dtype": dtype, "step_s": secs, "tokens_per_s": tokens / secs,
                    "mfu": 6 * _non_embedding_params(model) * tokens / secs / (peak[dtype] * 1e9),
                    "peak_mib": None if mem is None else mem["peak_mib"],
                    "other_busy_fraction": timing[dtype]["other_busy_fraction"],
                })
    targets = []
    for hidden in hiddens:
        by = {(r["trainer"], r["dtype"]): r for r in rows if r["hidden"] == hidden}
        for kind in TRAINERS:
            ratio = by[(kind, "bf16")]["tokens_per_s"] / by[(kind, "fp32")]["tokens_per_s"]
            targets.append({"target": f"{kind} bf16/fp32 tokens/s", "hidden": hidden, "measured": ratio,
                            "threshold": ">= 1.5", "pass": ratio >= 1.5 if hidden == 512 else None})
        if not quick:
            for dtype in ("fp32", "bf16"):
                ratio = by[("dpo", dtype)]["peak_mib"] / by[("sft", dtype)]["peak_mib"]
                targets.append({"target": f"DPO/SFT peak memory ({dtype})", "hidden": hidden, "measured": ratio,
                                "threshold": "<= 1.2", "pass": ratio <= 1.2})
    return {"config": {"sequences": SEQS, "prompt": PROMPT, "response": RESPONSE, "repeats": repeats,
                       "matmul_gflops": peak}, "rows": rows, "targets": targets}


def tables(result: dict) -> list[Table]:
    rows = [[r["trainer"], r["hidden"], r["dtype"], fmt(r["step_s"] * 1000, ".0f"), fmt(r["tokens_per_s"], ".0f"),
             fmt(100 * r["mfu"], ".1f") + "%", fmt(r["peak_mib"], ".0f")] for r in result["rows"]]
    targets = [[t["target"], t["hidden"], fmt(t["measured"], ".2f"), t["threshold"],
                {True: "PASS", False: "FAIL", None: "(info)"}[t["pass"]]] for t in result["targets"]]
    peak = result["config"]["matmul_gflops"]
    return [
        Table("Training steps: 16 sequences of 96 tokens per step", ["trainer", "hidden", "dtype", "ms/step",
              "tokens/s", "MFU", "peak MiB"], rows,
              [f"MFU against this run's matmul peak: fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f} GFLOP/s"]),
        Table("Targets", ["target", "hidden", "measured", "threshold", "result"], targets,
              ["bf16 target applies at hidden 512; the hidden-256 ratio is for information"]),
    ]
