"""Long-sequence suite: peak memory of one reward-model and one DPO step at ``max_length`` 1024 (issue 18, item 8).

Work: the ``alignkit model tiny`` shape (Llama, 4 layers, hidden 256, 4 heads, vocab 2048, 4.2M parameters),
batch 16 pairs (32 sequences), prompts of 256-511 tokens and responses of 128 tokens up to the 1,024 limit,
right-padded to the longest row of the batch, fp32 unless the variant says otherwise. Synthetic token ids.

Variants, each in a fresh subprocess (peak resident memory of two steps after a warm-up one, above the
process's size before them, glibc's mmap threshold fixed so that freed blocks are returned, see
``benchmarks.common``; the step time is half the two steps' wall time):

* ``before``: the code before issue 18, patched back in: the padding mask is passed to the model (its SDPA
  attention builds a [B, 1, T, T] mask and takes its unfused path), DPO copies the ``[B, T-1, V]`` slice of
  the logits (``logits[:, :-1]``) before scoring it, and the whole batch is one forward/backward pass;
* ``one pass``: right-padded batches run under the causal mask alone (``models.forward.causal_mask_or_none``)
  and the logits are scored in place (``models.forward.next_tokens``), the batch still one pass
  (``max_micro_batch_tokens=0``);
* ``default``: as a user gets it: also the token budget (``max_micro_batch_tokens`` 8,192), which cuts a
  batch of long rows into micro-batches with the same gradient, so the trunk's activations (about 24 KB of
  fp32 per token per layer for the backward pass, a sequence of 1,024 tokens through 4 layers) are held for
  8,192 tokens at a time instead of the batch's 32,768;
* ``default + gradient_checkpointing``, ``default + bf16``: the two options that cut the rest.
"""

from __future__ import annotations

import tempfile

import torch

from benchmarks.common import FIXED_MMAP, Table, fmt, peak_rss_mib

PAIRS = 16
VARIANTS = ("before", "one pass", "default", "default + gradient_checkpointing", "default + bf16")


def _pairs(max_length: int, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)

    def draw(low: int, high: int) -> int:
        return int(torch.randint(low, high, (1,), generator=g))

    rows = []
    for _ in range(2 * PAIRS):
        prompt = draw(max_length // 4, max_length // 2)
        lengths = [draw(max_length // 8, max_length - prompt) for _ in range(2)]
        ids = [torch.randint(3, 2048, (n,), generator=g).tolist() for n in (prompt, *lengths)]
        rows.append({"prompt_ids": ids[0], "chosen_ids": ids[1], "rejected_ids": ids[2]})
    return rows


def _restore_the_code_before() -> None:
    """Patch in the code before the change: the mask always passed, DPO's logits slice copied."""
    import alignkit.models.forward as forward
    import alignkit.models.heads as heads
    import alignkit.trainers.dpo as dpo
    from alignkit.core.logprobs import token_logprobs

    heads.causal_mask_or_none = lambda mask: mask

    def sequence_logprobs(model, input_ids, attention_mask, loss_mask):
        logits = forward.model_logits(model, input_ids, attention_mask)
        logp = token_logprobs(logits[:, :-1], input_ids[:, 1:])
        return (logp * loss_mask[:, 1:]).sum(-1)

    dpo.sequence_logprobs = sequence_logprobs


def build_trainer(kind: str, variant: str, max_length: int):
    from alignkit.models import RewardModel
    from alignkit.models.tiny import build_tiny_llama
    from alignkit.trainers import DPOConfig, DPOTrainer, RewardConfig, RewardTrainer

    if variant == "before":
        _restore_the_code_before()
    model = build_tiny_llama(seed=0, hidden_size=256, max_position_embeddings=max_length)
    common = dict(output_dir=tempfile.mkdtemp(), max_steps=10_000, learning_rate=1e-5, progress=False,
                  tensorboard=False, batch_size=PAIRS, max_length=max_length,
                  max_micro_batch_tokens=0 if variant in ("before", "one pass") else 8192,
                  gradient_checkpointing=variant.endswith("gradient_checkpointing"),
                  mixed_precision="bf16" if variant.endswith("bf16") else "no")
    if kind == "reward":
        rm = RewardModel.from_causal_lm(model, pad_token_id=0)
        return RewardTrainer(RewardConfig(**common), rm, _pairs(max_length), pad_token_id=0)
    return DPOTrainer(DPOConfig(**common), model, _pairs(max_length), pad_token_id=0)


def memory_probe(kind: str, variant: str, max_length: int):
    """For ``peak_rss_mib``: build the trainer, take one warm-up step, return the next two steps."""
    trainer = build_trainer(kind, variant, max_length)
    trainer.training_step()
    return lambda: [trainer.training_step() for _ in range(2)]


def run(quick: bool = False) -> dict:
    max_length = 256 if quick else 1024
    rows = []
    for kind in ("reward", "dpo"):
        for variant in VARIANTS:
            mem = peak_rss_mib("benchmarks.training_long:memory_probe",
                               {"kind": kind, "variant": variant, "max_length": max_length}, repeats=1,
                               timeout_s=900, env=FIXED_MMAP)
            rows.append({"trainer": kind, "variant": variant, "peak_mib": mem["peak_mib"],
                         "step_s": mem["readings"][0]["call_s"] / 2})
    targets = []
    for kind in ("reward", "dpo"):
        by = {r["variant"]: r for r in rows if r["trainer"] == kind}
        for variant, threshold in (("one pass", None), ("default", 0.5), ("default + gradient_checkpointing", 0.5),
                                   ("default + bf16", None)):
            ratio = by[variant]["peak_mib"] / by["before"]["peak_mib"]
            targets.append({"target": f"{kind}: peak {variant} / before", "measured": ratio,
                            "threshold": "(info)" if threshold is None else f"<= {threshold}",
                            "pass": None if threshold is None else ratio <= threshold})
        ratio = by["default"]["step_s"] / by["one pass"]["step_s"]
        targets.append({"target": f"{kind}: step time default / one pass", "measured": ratio,
                        "threshold": "<= 1.1", "pass": ratio <= 1.1})
    return {"config": {"pairs": PAIRS, "max_length": max_length, "model": "tiny (4 layers, hidden 256, vocab 2048)"},
            "rows": rows, "targets": targets}


def tables(result: dict) -> list[Table]:
    cfg = result["config"]
    rows = [[r["trainer"], r["variant"], fmt(r["peak_mib"], ".0f"), fmt(r.get("step_s"), ".2f")]
            for r in result["rows"]]
    verdict = {True: "PASS", False: "FAIL", None: ""}
    targets = [[t["target"], fmt(t["measured"], ".2f"), t["threshold"], verdict[t["pass"]]]
               for t in result["targets"]]
    return [Table(f"Peak memory of one step: {cfg['pairs']} pairs, max_length {cfg['max_length']}, {cfg['model']}",
                  ["trainer", "variant", "peak MiB", "s/step"], rows,
                  ["peak resident memory of two steps after a warm-up one, above the process before them (fixed "
                   "mmap threshold); s/step: their wall time / 2"]),
            Table("Targets", ["target", "measured", "threshold", "result"], targets)]
