"""Best-of-N sampling (rejection sampling) and its SFT dataset for rejection-sampling fine-tuning.

Variant (seed 003 "Best-of-N policy"; Stiennon et al. 2020, appendix; Nakano et al. 2021; RAFT, Dong et al.
2023; expert iteration):
  * for each prompt x, sample y_1..y_n ~ pi(.|x) i.i.d. from the policy (any ``Generator``), score them
    with any reward function r(x, y) (through ``call_reward_fn``: a NaN, an inf or a non-number is an
    error naming the prompt), and keep argmax_i r(x, y_i); **ties go to the first** of the tied samples;
  * nothing is trained here: the policy "pi_bon" is the sampling procedure itself. Its chosen completions
    can be written as ``{"prompt", "completion"}`` rows (:meth:`BestOfNResult.write_jsonl`) and fed to the
    SFT trainer: one round of rejection-sampling fine-tuning (RAFT / expert iteration);
  * **win rate**: each prompt gets one extra, independent sample y_0 ~ pi(.|x) (drawn in the same
    ``generate`` call as the n others, as sample n+1, and never a candidate for the best), and
        win_rate = mean_x [ 1{r(best) > r(y_0)} + 1/2 * 1{r(best) = r(y_0)} ]
    (ties count 1/2). Using one of the n candidates instead would bias it: the best is at least as good as
    each of them by construction. For a continuous reward (no ties) the n+1 scores are exchangeable, so
    P(max of n > one more) = n / (n+1) exactly, whatever pi and r are (:func:`continuous_win_rate`);
    ``measure_win_rate=False`` skips the extra sample (1/(n+1) of the generation and scoring cost);
  * **KL**: KL(pi_bon || pi) <= log n - (n-1)/n (:func:`kl_bound`; Stiennon et al. 2020 give it as the KL
    for continuous rewards; Beirami et al. 2024 prove it is an upper bound that holds with equality only
    when no completion has appreciable probability, i.e. no ties; with ties the true KL is smaller);
  * sampling noise is keyed by (seed, global prompt index, sample index) (``SamplingParams.
    first_prompt_index``), so the samples depend neither on ``batch_size`` nor on the number of processes;
  * several processes (``accelerate launch`` / ``torchrun``; ``rank`` and ``world_size``): each samples and
    scores a contiguous share of the prompts, and the shares are gathered, so every process returns the
    result one process would.

Stages, timed in ``BestOfNResult.stats`` as in :mod:`alignkit.rollout`: tokenize -> generate -> decode ->
score -> select.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..generation.base import Generator
from ..rollout import check_prompt_columns, lap, sample_and_score, tokenize_prompts
from ..training.config import ProgressConfig, SamplingConfig, SeedConfig, check_options, option
from ..training.distributed import gather_objects, process_share

__all__ = ["BestOfNConfig", "BestOfNResult", "best_of_n", "continuous_win_rate", "kl_bound"]


def kl_bound(n: int) -> float:
    """KL(pi_bon || pi) <= log n - (n-1)/n, the KL of the best-of-n policy from the sampling policy (nats).

    Stiennon et al. 2020 (appendix) give it as the KL; Beirami et al. 2024 prove it is an upper bound, tight
    when the rewards of different completions never tie. n = 1 gives 0: best-of-1 *is* the policy.

    >>> kl_bound(1), round(kl_bound(2), 4), round(kl_bound(4), 4)
    (0.0, 0.1931, 0.6363)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return math.log(n) - (n - 1) / n


def continuous_win_rate(n: int) -> float:
    """n / (n+1): P(best of n i.i.d. samples beats one more sample) when the reward has no ties.

    Of n+1 exchangeable, almost surely distinct scores, the extra one is the largest with probability
    1/(n+1); otherwise the best of the n wins.

    >>> continuous_win_rate(1), continuous_win_rate(4)
    (0.5, 0.8)
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    return n / (n + 1)


@dataclass
class BestOfNConfig(SeedConfig, SamplingConfig, ProgressConfig):
    """Best-of-N sampling settings (validated on construction; sampling fields from ``SamplingConfig``)."""

    n: int = option(4, "completions sampled per prompt; the best-scoring one is kept")
    batch_size: int = option(16, "prompts per generate call (each yields n samples, n+1 with the win rate)")
    measure_win_rate: bool = option(True, "draw one extra independent sample per prompt to measure the win rate")
    output_path: str = option("", "write the chosen completions here as SFT JSONL rows ('' = do not write)")

    def __post_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(f"n (completions per prompt) must be an integer >= 1, got {self.n!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size (prompts per generate call) must be >= 1, got {self.batch_size}")
        if self.max_prompt_length < 0:
            raise ValueError(f"max_prompt_length must be >= 0 (0 = no limit), got {self.max_prompt_length}")
        check_options(self)  # prompt_truncation, chat_template
        self.sampling_params(self.samples_per_prompt)  # validates max/min_new_tokens, temperature, top_k, top_p

    @property
    def samples_per_prompt(self) -> int:
        """n, plus the independent sample when the win rate is measured."""
        return self.n + int(self.measure_win_rate)


@dataclass
class BestOfNResult:
    """The chosen completion per prompt, every score, and the win rate / KL report. P prompts.

    Attributes:
        n: candidates per prompt.
        prompts: the P prompt strings.
        completions: ``P`` chosen (best-scoring) completions.
        scores: ``[P]`` their scores.
        best_index: ``[P]`` which of the n candidates was chosen (the first on ties).
        finished: ``[P]`` bool, the chosen completion ended with EOS (False: cut at max_new_tokens).
        all_completions: ``P`` lists of the n candidates.
        all_scores: ``[P, n]`` the candidates' scores.
        single_completions, single_scores: ``P`` independent extra samples and ``[P]`` their scores
            (None when the win rate was not measured).
        stats: per-stage seconds (``time/*_s``) and counts.
    """

    n: int
    prompts: list[str]
    completions: list[str]
    scores: torch.Tensor
    best_index: torch.Tensor
    finished: torch.Tensor
    all_completions: list[list[str]]
    all_scores: torch.Tensor
    single_completions: list[str] | None = None
    single_scores: torch.Tensor | None = None
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def wins(self) -> torch.Tensor | None:
        """``[P]`` 1 where the best beats the independent sample, 1/2 on a tie, 0 where it loses."""
        if self.single_scores is None:
            return None
        return (self.scores > self.single_scores).float() + 0.5 * (self.scores == self.single_scores).float()

    @property
    def win_rate(self) -> float | None:
        """Measured P(best of n beats one independent sample), ties counted 1/2 (None if not measured)."""
        wins = self.wins
        return None if wins is None else float(wins.mean())

    @property
    def kl_bound(self) -> float:
        """log n - (n-1)/n: the bound on KL(pi_bon || pi) in nats (:func:`kl_bound`)."""
        return kl_bound(self.n)

    @property
    def mean_best_score(self) -> float:
        return float(self.scores.mean())

    @property
    def mean_single_score(self) -> float | None:
        """Mean score of the independent samples: the policy's own expected reward (None if not measured)."""
        return None if self.single_scores is None else float(self.single_scores.mean())

    @property
    def mean_sample_score(self) -> float:
        """Mean score over all n candidates: another estimate of the policy's expected reward."""
        return float(self.all_scores.mean())

    def summary(self) -> dict[str, float]:
        """Flat metrics for a log: the report of issue 5 plus the stage times."""
        out = {
            "n": float(self.n),
            "prompts": float(len(self.prompts)),
            "kl_bound": self.kl_bound,
            "mean_best_score": self.mean_best_score,
            "mean_sample_score": self.mean_sample_score,
            "best_eos_rate": float(self.finished.float().mean()),
        }
        if self.single_scores is not None:
            out.update({
                "win_rate": self.win_rate,
                "win_rate_continuous": continuous_win_rate(self.n),
                "mean_single_score": self.mean_single_score,
            })
        return {**out, **self.stats}

    def to_sft_rows(self) -> list[dict[str, Any]]:
        """``{"prompt", "completion", "score"}`` rows, loadable by ``load_rows(format="prompt_completion")``.

        A chosen completion that is empty or whitespace only (EOS sampled first) cannot be an SFT row
        (``load_rows`` rejects it): it is left out and counted in ``stats["sft_rows_skipped_empty"]``
        by :meth:`write_jsonl`.
        """
        return [
            {"prompt": p, "completion": c, "score": float(s)}
            for p, c, s in zip(self.prompts, self.completions, self.scores.tolist(), strict=True)
            if c.strip()
        ]

    def write_jsonl(self, path: str | os.PathLike) -> int:
        """Write :meth:`to_sft_rows` as JSON Lines (atomically: a temporary file, then a rename).

        Returns the number of rows written; the empty completions left out are counted in
        ``stats["sft_rows_skipped_empty"]``.
        """
        rows = self.to_sft_rows()
        self.stats["sft_rows_skipped_empty"] = float(len(self.prompts) - len(rows))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        return len(rows)


def best_of_n(
    prompts: Sequence[str],
    tokenizer,
    generator: Generator,
    reward_fn: Callable[..., Sequence[float]],
    config: BestOfNConfig,
    columns: dict[str, Sequence] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> BestOfNResult:
    """Sample ``config.n`` completions per prompt, score them and keep the best (module docstring).

    Args:
        prompts: P prompt strings.
        tokenizer: a transformers tokenizer (encodes the prompts, decodes completions skipping special tokens).
        generator: any :class:`~alignkit.generation.Generator`.
        reward_fn: ``(prompts, completions, **columns) -> list[float]``; its output is validated, and a bad
            value raises :class:`~alignkit.rewards.InvalidRewardError` whose ``index`` (and message) is the
            index of the prompt in ``prompts``.
        config: :class:`BestOfNConfig`.
        columns: extra per-prompt dataset columns (lists of length P), repeated per sample for the reward.
        rank, world_size: this process and the number of processes (an initialised ``torch.distributed``
            group when > 1): each samples and scores prompts ``[rank * k, (rank + 1) * k)`` with k = ceil(P / N),
            and every process gets the whole result.
    Returns:
        :class:`BestOfNResult`; the SFT rows are also written to ``config.output_path`` (by rank 0) when set.
    """
    prompts = list(prompts)
    if not prompts:
        raise ValueError("no prompts given")
    columns = check_prompt_columns(columns, len(prompts))
    n, m = config.n, config.samples_per_prompt
    stats = {"time/tokenize_s": 0.0, "time/generate_s": 0.0, "time/decode_s": 0.0, "time/score_s": 0.0}

    t = time.perf_counter()
    prompt_ids, n_truncated = tokenize_prompts(tokenizer, prompts, **config.prompt_kwargs())
    stats["prompts_truncated"] = float(n_truncated)
    lap(stats, "time/tokenize_s", t)

    mine = process_share(len(prompts), rank, world_size)
    texts: list[list[str]] = []  # [P][m]
    scores, finished = [], []  # [b, m] per batch
    starts = range(mine.start, mine.stop, config.batch_size)
    if config.progress and rank == 0 and len(starts) > 1:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"best-of-{n}: sample and score {len(mine)} prompts (this process)",
                      unit="batch", dynamic_ncols=True)
    for start in starts:
        rows = list(range(start, min(start + config.batch_size, mine.stop)))
        sampling = config.sampling_params(m, seed=config.seed, first_prompt_index=start)
        batch = sample_and_score(generator, tokenizer, [prompt_ids[i] for i in rows], sampling, prompts, rows=rows,
                                 reward_fn=reward_fn, columns=columns, stats=stats)
        texts.extend(batch.texts[k * m : (k + 1) * m] for k in range(len(rows)))
        scores.append(batch.raw_scores.view(len(rows), m))
        finished.append(batch.completions.finished.cpu().bool().view(len(rows), m))
    t = time.perf_counter()

    all_scores_m = torch.cat(scores) if scores else torch.zeros(0, m)  # [P (this share), m]
    finished_m = torch.cat(finished) if finished else torch.zeros(0, m, dtype=torch.bool)
    if world_size > 1:
        parts = gather_objects((texts, all_scores_m, finished_m, stats), world_size)
        texts = [row for part in parts for row in part[0]]
        all_scores_m = torch.cat([part[1] for part in parts])
        finished_m = torch.cat([part[2] for part in parts])
        for key in stats:  # the slowest process's time per stage
            stats[key] = max(part[3][key] for part in parts)
    candidates = all_scores_m[:, :n]
    best = candidates.argmax(dim=1)  # torch.argmax returns the first maximal index: ties go to the first
    rows_p = torch.arange(len(prompts))
    result = BestOfNResult(
        n=n,
        prompts=prompts,
        completions=[texts[i][j] for i, j in enumerate(best.tolist())],
        scores=candidates[rows_p, best],
        best_index=best,
        finished=finished_m[rows_p, best],
        all_completions=[row[:n] for row in texts],
        all_scores=candidates.clone(),
        single_completions=[row[n] for row in texts] if config.measure_win_rate else None,
        single_scores=all_scores_m[:, n].clone() if config.measure_win_rate else None,
        stats=stats,
    )
    lap(stats, "time/select_s", t)
    if config.output_path and rank == 0:
        result.write_jsonl(config.output_path)
    return result
