"""The ``core`` suite: this machine's matmul throughput, and chunked vs naive token log-probs.

1. Square matmul ``n x n @ n x n`` in fp32 and bf16 (``2 n^3`` flops): GFLOP/s and the bf16/fp32 ratio.
2. :func:`alignkit.core.logprobs.token_logprobs` (chunked) against
   :func:`alignkit.core.logprobs.naive_token_logprobs` (``log_softmax(...).gather(...)``) on fp32 logits
   ``[rows, V]``: median time (interleaved, see :func:`benchmarks.common.time_interleaved`), peak memory
   (fresh subprocess, peak resident size before/after one call, see :func:`benchmarks.common.peak_rss_mib`)
   and max abs difference (also against a float64 reference), for the forward pass under
   ``torch.no_grad()`` and for forward + backward of the sum.

The issue's acceptance targets are checked on the forward pass at the largest vocab (V = 131072; the
``--quick`` run has smaller sizes and checks them at its largest V, which is not the issue's setting).
"""

from __future__ import annotations

import torch

from alignkit.core.logprobs import DEFAULT_CHUNK_ELEMENTS, naive_token_logprobs, token_logprobs
from benchmarks.common import NOISY_FRACTION, Table, fmt, peak_rss_mib, time_interleaved

FULL = {"matmul_n": 2048, "matmul_repeats": 10, "rows": 512, "vocabs": [32768, 131072],
        "fwd_repeats": 7, "fwdbwd_repeats": 5, "mem_repeats": 2}
QUICK = {"matmul_n": 1024, "matmul_repeats": 3, "rows": 512, "vocabs": [8192, 32768],
         "fwd_repeats": 3, "fwdbwd_repeats": 2, "mem_repeats": 1}

FUNCS = {"naive": naive_token_logprobs, "chunked": token_logprobs}
MODES = ("forward", "forward+backward")
# (key, description, threshold): measured value must be <= threshold.
TARGETS = (("mem_ratio", "peak memory chunked/naive (forward)", 0.25),
           ("max_abs_diff", "max |chunked - naive| (forward values)", 1e-5),
           ("time_ratio", "time chunked/naive (forward)", 1.2))


def _inputs(rows: int, vocab: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard-normal fp32 logits ``[rows, vocab]`` and uniformly random token ids (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, vocab, generator=gen)
    tokens = torch.randint(0, vocab, (rows,), generator=gen)
    return logits, tokens


def _call(fn, logits: torch.Tensor, tokens: torch.Tensor, mode: str):
    """One measured call: forward under no_grad, or forward + backward of the sum (returns the grad)."""
    if mode == "forward":
        with torch.no_grad():
            return fn(logits, tokens)
    logits.grad = None
    fn(logits, tokens).sum().backward()
    return logits.grad


def mem_case(func: str, vocab: int, rows: int, mode: str):
    """Memory-probe entry point (runs in the child): warm up, build inputs, return the call to measure."""
    fn = FUNCS[func]
    small, small_tokens = _inputs(16, 4096, seed=1)  # big enough to start the intra-op thread pool
    _call(fn, small.requires_grad_(mode != "forward"), small_tokens, mode)
    del small, small_tokens
    logits, tokens = _inputs(rows, vocab)
    logits.requires_grad_(mode != "forward")
    return lambda: _call(fn, logits, tokens, mode)


def bench_matmul(n: int, repeats: int) -> dict:
    """GFLOP/s of an ``n x n`` matmul in fp32 and bf16 (median of ``repeats``, interleaved)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    mats = {"fp32": (a, b), "bf16": (a.bfloat16(), b.bfloat16())}
    stats = time_interleaved({k: (lambda x=x, y=y: x @ y) for k, (x, y) in mats.items()}, 2, repeats)
    rows = [{"dtype": k, "n": n, "flops": 2 * n**3, **v, "gflops": 2 * n**3 / v["median_s"] / 1e9}
            for k, v in stats.items()]
    return {"rows": rows, "bf16_over_fp32": rows[1]["gflops"] / rows[0]["gflops"]}


def _time_and_compare(rows: int, vocab: int, mode: str, repeats: int) -> tuple[dict, dict]:
    """Interleaved timings of naive and chunked, and how far their outputs are apart.

    ``max_abs_diff`` is between chunked and naive (log-probs, or logits' grads for forward+backward); for
    the forward pass also each one's error against a float64 ``log_softmax`` reference, which tells which
    of the two fp32 results is off when they differ.
    """
    logits, tokens = _inputs(rows, vocab)
    logits.requires_grad_(mode != "forward")
    outs = {k: _call(fn, logits, tokens, mode).clone() for k, fn in FUNCS.items()}
    accuracy = {"max_abs_diff": (outs["chunked"] - outs["naive"]).abs().max().item()}
    if mode == "forward":
        ref = torch.log_softmax(logits.double(), -1).gather(-1, tokens[:, None]).squeeze(-1)
        accuracy.update({f"{k}_max_abs_err_fp64": (out.double() - ref).abs().max().item()
                         for k, out in outs.items()})
    del outs
    calls = {k: (lambda fn=fn: _call(fn, logits, tokens, mode)) for k, fn in FUNCS.items()}
    return time_interleaved(calls, warmup=1, repeats=repeats), accuracy


def bench_logprobs(rows: int, vocab: int, mode: str, repeats: int, mem_repeats: int) -> dict:
    """Time, peak memory and max abs difference of chunked vs naive at one (vocab, mode)."""
    stats, accuracy = _time_and_compare(rows, vocab, mode, repeats)
    for k in FUNCS:
        case = {"func": k, "vocab": vocab, "rows": rows, "mode": mode}
        mem = peak_rss_mib("benchmarks.core:mem_case", case, repeats=mem_repeats)
        stats[k].update(peak_mib=mem["peak_mib"], peak_samples_mib=mem["samples_mib"], mem_method=mem["method"])
    naive, chunked = stats["naive"], stats["chunked"]
    return {
        "vocab": vocab, "rows": rows, "mode": mode, "logits_mib": rows * vocab * 4 / 2**20,
        "chunk_rows": max(1, DEFAULT_CHUNK_ELEMENTS // vocab), "naive": naive, "chunked": chunked,
        "time_ratio": chunked["median_s"] / naive["median_s"],
        "time_ratio_of_mins": chunked["min_s"] / naive["min_s"],
        "timing_noisy": (naive["other_busy_fraction"] or 0.0) > NOISY_FRACTION,
        "mem_ratio": chunked["peak_mib"] / naive["peak_mib"] if naive["peak_mib"] > 0 else None,
        "diff_of": "values" if mode == "forward" else "grad", **accuracy,
    }


def check_targets(logprob_rows: list[dict], vocab: int) -> list[dict]:
    """The issue's acceptance targets, on the forward row at ``vocab``."""
    row = next(r for r in logprob_rows if r["vocab"] == vocab and r["mode"] == "forward")
    return [{"name": name, "metric": key, "vocab": vocab, "mode": "forward", "measured": row[key],
             "op": "<=", "threshold": thr, "passed": row[key] is not None and row[key] <= thr,
             "noisy": key == "time_ratio" and row["timing_noisy"]}
            for key, name, thr in TARGETS]


def run(quick: bool = False) -> dict:
    """Run the suite; returns JSON-ready results (config, matmul, logprobs, targets)."""
    cfg = QUICK if quick else FULL
    matmul = bench_matmul(cfg["matmul_n"], cfg["matmul_repeats"])
    logprobs = []
    for vocab in cfg["vocabs"]:
        for mode in MODES:
            repeats = cfg["fwd_repeats"] if mode == "forward" else cfg["fwdbwd_repeats"]
            logprobs.append(bench_logprobs(cfg["rows"], vocab, mode, repeats, cfg["mem_repeats"]))
    target_vocab = max(cfg["vocabs"])
    return {"config": {**cfg, "logits_std": 1.0, "target_vocab": target_vocab, "issue_target_vocab": 131072},
            "matmul": matmul, "logprobs": logprobs, "targets": check_targets(logprobs, target_vocab)}


_DIFF_SUFFIX = {"values": "", "grad": " (grad)"}


def _noisy(row: dict) -> str:
    """Marker for a timing taken while other processes were busy."""
    return " *" if row["timing_noisy"] else "  "


def tables(result: dict) -> list[Table]:
    """Matmul, log-probs, accuracy and targets tables for printing."""
    mm = result["matmul"]
    t1 = Table("Matmul throughput (square, 2*n^3 flops, median)", ["dtype", "n", "ms", "GFLOP/s"],
               [[r["dtype"], r["n"], fmt(r["median_s"] * 1e3, ".1f"), fmt(r["gflops"], ".0f")]
                for r in mm["rows"]],
               [f"bf16/fp32 throughput ratio: {mm['bf16_over_fp32']:.2f}"])
    lp = result["logprobs"]
    lp_notes = ["ratios are chunked/naive, measured in the same run (time: interleaved medians)",
                "MiB: peak resident size above the inputs, one call in a fresh subprocess (min of runs)"]
    if any(r["timing_noisy"] for r in lp):
        lp_notes.append(f"* other processes used > {NOISY_FRACTION:.0%} of the CPUs during these timings: "
                        "unreliable")
    t2 = Table(f"token_logprobs (chunked) vs naive log_softmax+gather, {lp[0]['rows']} tokens, fp32 logits",
               ["V", "mode", "naive ms", "chunked ms", "time ratio", "naive MiB", "chunked MiB", "mem ratio",
                "max|diff|"],
               [[r["vocab"], r["mode"], fmt(r["naive"]["median_s"] * 1e3, ".1f"),
                 fmt(r["chunked"]["median_s"] * 1e3, ".1f"), fmt(r["time_ratio"], ".3f") + _noisy(r),
                 fmt(r["naive"]["peak_mib"], ".1f"), fmt(r["chunked"]["peak_mib"], ".1f"),
                 fmt(r["mem_ratio"], ".3f"), fmt(r["max_abs_diff"], ".2e") + _DIFF_SUFFIX[r["diff_of"]]]
                for r in lp],
               lp_notes)
    cfg = result["config"]
    notes = [] if cfg["target_vocab"] == cfg["issue_target_vocab"] else [
        f"quick run: checked at V={cfg['target_vocab']}, not the issue's V={cfg['issue_target_vocab']}"]
    if any(t["noisy"] for t in result["targets"]):
        notes.append("* timed while other processes were busy: rerun on an idle machine before trusting it")
    t3 = Table("Acceptance targets", ["target", "V", "measured", "threshold", "result"],
               [[t["name"], t["vocab"], fmt(t["measured"], ".3g"), f"{t['op']} {t['threshold']:g}",
                 ("PASS" if t["passed"] else "FAIL") + (" *" if t["noisy"] else "")]
                for t in result["targets"]], notes)
    fwd = [r for r in lp if r["mode"] == "forward"]
    t4 = Table("Accuracy of the forward log-probs (max abs difference)",
               ["V", "chunked vs naive", "naive vs fp64", "chunked vs fp64"],
               [[r["vocab"], fmt(r["max_abs_diff"], ".2e"), fmt(r["naive_max_abs_err_fp64"], ".2e"),
                 fmt(r["chunked_max_abs_err_fp64"], ".2e")] for r in fwd],
               [f"logits ~ N(0, {cfg['logits_std']:g}^2), tokens uniform; fp64 = float64 log_softmax reference"])
    return [t1, t2, t4, t3]
