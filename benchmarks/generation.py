"""Generation suite: the default engine against ``model.generate`` of transformers.

Standard tiny config (Llama-style, 4 layers, hidden 256, 4 heads, vocab 2048), prompts of 32 tokens,
64 new tokens, multinomial sampling at T = 1 with no top-k/top-p, no early EOS (``min_new_tokens`` =
``max_new_tokens`` for both), batch 16 and 64, fp32 and bf16. Both run on the same model object in the
same process, timed round-robin (``time_interleaved``); peak memory of one call is measured in a fresh
subprocess per candidate (``peak_rss_mib``), above the model and inputs already held.

Target (issue 3): the engine at >= 2x the tokens/s of ``model.generate`` at batch 16 and 64, with peak
memory no higher.
"""

from __future__ import annotations

import torch

from benchmarks.common import Table, fmt, peak_rss_mib, time_interleaved

PROMPT_LEN = 32
NEW_TOKENS = 64
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def _setup(batch: int, dtype: str, prompt_len: int = PROMPT_LEN):
    from alignkit.generation.base import left_pad
    from alignkit.models.tiny import build_tiny_llama

    model = build_tiny_llama(seed=0).to(DTYPES[dtype])
    g = torch.Generator().manual_seed(batch)
    prompts = [torch.randint(3, 2048, (prompt_len,), generator=g).tolist() for _ in range(batch)]
    ids, mask = left_pad(prompts, 0)
    return model, prompts, ids, mask


def _candidates(model, prompts, ids, mask, new_tokens: int):
    from alignkit.generation import KVCacheGenerator, SamplingParams

    engine = KVCacheGenerator(model, eos_token_id=2, pad_token_id=0)
    sampling = SamplingParams(max_new_tokens=new_tokens, min_new_tokens=new_tokens)

    @torch.no_grad()
    def hf_generate():
        return model.generate(ids, attention_mask=mask, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                              max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0,
                              eos_token_id=2)

    def alignkit_engine():
        return engine.generate(prompts, sampling)

    return {"transformers.generate": hf_generate, "alignkit": alignkit_engine}


def memory_probe(batch: int, dtype: str, candidate: str, new_tokens: int = NEW_TOKENS):
    """For ``peak_rss_mib``: warm up, build inputs, return the one call to measure."""
    torch.set_num_threads(torch.get_num_threads())
    model, prompts, ids, mask = _setup(batch, dtype)
    fns = _candidates(model, prompts, ids, mask, new_tokens)
    small = _candidates(model, prompts[:2], ids[:2], mask[:2], 2)
    small[candidate]()  # warm-up: thread pool, allocator, lazy imports
    return fns[candidate]


def run(quick: bool = False) -> dict:
    batches = [16] if quick else [16, 64]
    dtypes = ["fp32"] if quick else ["fp32", "bf16"]
    new_tokens = 16 if quick else NEW_TOKENS
    repeats = 2 if quick else 7
    rows = []
    for dtype in dtypes:
        for batch in batches:
            model, prompts, ids, mask = _setup(batch, dtype)
            fns = _candidates(model, prompts, ids, mask, new_tokens)
            timing = time_interleaved(fns, warmup=1, repeats=repeats)
            mem = {} if quick else {
                name: peak_rss_mib("benchmarks.generation:memory_probe",
                                   {"batch": batch, "dtype": dtype, "candidate": name}, repeats=2)
                for name in fns
            }
            tokens = batch * new_tokens
            base, ours = timing["transformers.generate"], timing["alignkit"]
            row = {
                "dtype": dtype, "batch": batch, "prompt_len": PROMPT_LEN, "new_tokens": new_tokens,
                "hf_tokens_per_s": tokens / base["median_s"], "alignkit_tokens_per_s": tokens / ours["median_s"],
                "speedup": base["median_s"] / ours["median_s"],
                "hf_peak_mib": mem.get("transformers.generate", {}).get("peak_mib"),
                "alignkit_peak_mib": mem.get("alignkit", {}).get("peak_mib"),
                "timing": timing, "other_busy_fraction": ours["other_busy_fraction"],
            }
            if mem:
                row["memory_ratio"] = row["alignkit_peak_mib"] / max(row["hf_peak_mib"], 1e-9)
            row["target_speedup_2x"] = row["speedup"] >= 2.0
            row["target_memory_not_higher"] = None if not mem else row["alignkit_peak_mib"] <= row["hf_peak_mib"]
            rows.append(row)
    return {"config": {"model": "llama 4L h256 4 heads vocab 2048", "prompt_len": PROMPT_LEN,
                       "new_tokens": new_tokens, "repeats": repeats}, "rows": rows}


def tables(result: dict) -> list[Table]:
    rows = [[r["dtype"], r["batch"], fmt(r["hf_tokens_per_s"], ".0f"), fmt(r["alignkit_tokens_per_s"], ".0f"),
             fmt(r["speedup"], ".2f") + "x", fmt(r["hf_peak_mib"], ".1f"), fmt(r["alignkit_peak_mib"], ".1f"),
             "pass" if r["target_speedup_2x"] and r["target_memory_not_higher"] is not False else "FAIL"]
            for r in result["rows"]]
    return [Table("Sampling throughput: alignkit engine vs transformers.generate (same model, same run)",
                  ["dtype", "batch", "hf tok/s", "alignkit tok/s", "speedup", "hf peak MiB", "alignkit peak MiB",
                   "target"], rows,
                  ["target: speedup >= 2x and peak memory no higher; peak = one call's RSS above model+inputs"])]
