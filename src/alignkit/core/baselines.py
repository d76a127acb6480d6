"""Baselines for sequence-level rewards: the variance-reduction step of seed 003.

Each sample i has a scalar score s_i and belongs to a group g(i) (the prompt it answers; several samples
per prompt). All functions return advantages A_i of shape ``[N]``:

    none               A_i = s_i
    batch mean         A_i = s_i - mean_j s_j                               (seed 003, "per batch")
    prompt mean        A_i = s_i - mean_{j in g(i)} s_j                     (seed 003, "per prompt")
    leave-one-out      A_i = s_i - mean_{j in g(i), j != i} s_j             (RLOO; Kool et al. 2019,
                                                                             Ahmadian et al. 2024)
                          = n/(n-1) * (s_i - mean_{j in g(i)} s_j)
    group-normalised   A_i = (s_i - mean_g) / (std_g + eps)                 (GRPO; Shao et al. 2024);
                       with scale=False only the mean is removed (Dr. GRPO, Liu et al. 2025).

Leave-one-out keeps the estimator unbiased (the baseline does not depend on the sample itself); the
prompt mean is biased by a factor (n-1)/n. Groups are given as integer ids and may have different sizes.
"""

from __future__ import annotations

import torch

__all__ = [
    "batch_mean_baseline",
    "prompt_mean_baseline",
    "leave_one_out_baseline",
    "group_normalized_advantages",
    "compute_baseline_advantages",
    "BASELINES",
]


def _check_scores(scores: torch.Tensor) -> None:
    if scores.dim() != 1:
        raise ValueError(f"scores must be a 1-D tensor [N], got shape {tuple(scores.shape)}")
    bad = ~torch.isfinite(scores)
    if bad.any():
        idx = int(bad.nonzero()[0])
        raise ValueError(f"score at index {idx} is not finite ({scores[idx].item()})")


def _group_stats(scores: torch.Tensor, group_ids: torch.Tensor):
    """Per-sample group sum, count and the dense group index. Each ``[N]``."""
    if group_ids.shape != scores.shape:
        raise ValueError(f"group_ids {tuple(group_ids.shape)} must match scores {tuple(scores.shape)}")
    _, dense = torch.unique(group_ids, return_inverse=True)
    num_groups = int(dense.max()) + 1 if dense.numel() else 0
    sums = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device).index_add_(0, dense, scores)
    counts = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device).index_add_(
        0, dense, torch.ones_like(scores)
    )
    return sums[dense], counts[dense], dense, num_groups


def batch_mean_baseline(scores: torch.Tensor) -> torch.Tensor:
    """A_i = s_i - mean(s). ``scores [N] -> [N]``."""
    _check_scores(scores)
    return scores - scores.mean()


def prompt_mean_baseline(scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """A_i = s_i - mean of the scores of the same prompt. ``scores, group_ids [N] -> [N]``."""
    _check_scores(scores)
    sums, counts, _, _ = _group_stats(scores, group_ids)
    return scores - sums / counts


def leave_one_out_baseline(scores: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """RLOO: A_i = s_i - (sum_g - s_i) / (n_g - 1). Every group needs at least 2 samples.

    ``scores, group_ids [N] -> [N]``.
    """
    _check_scores(scores)
    sums, counts, dense, _ = _group_stats(scores, group_ids)
    if (counts < 2).any():
        i = int((counts < 2).nonzero()[0])
        raise ValueError(
            f"leave-one-out needs >= 2 samples per prompt; sample {i} (group {int(group_ids[i])}) is alone"
        )
    return scores - (sums - scores) / (counts - 1)


def group_normalized_advantages(
    scores: torch.Tensor,
    group_ids: torch.Tensor,
    scale: bool = True,
    unbiased: bool = True,
    eps: float = 1e-6,
) -> torch.Tensor:
    """GRPO: A_i = (s_i - mean_g) / (std_g + eps), or s_i - mean_g with ``scale=False``.

    Args:
        scores, group_ids: ``[N]``.
        scale: divide by the group's standard deviation (GRPO) or not (Dr. GRPO).
        unbiased: Bessel-corrected std (``torch.std``'s default, as TRL and veRL use).
        eps: added to the std. A group of one sample gets advantage 0 (its std is taken as 1).
    Returns:
        ``[N]`` advantages.
    """
    _check_scores(scores)
    sums, counts, dense, num_groups = _group_stats(scores, group_ids)
    centred = scores - sums / counts
    if not scale:
        return centred
    sq = torch.zeros(num_groups, dtype=scores.dtype, device=scores.device).index_add_(0, dense, centred**2)[dense]
    denom = (counts - 1) if unbiased else counts
    std = torch.where(counts > 1, torch.sqrt(sq / denom.clamp(min=1)), torch.ones_like(sq))
    return centred / (std + eps)


def _no_baseline(scores: torch.Tensor) -> torch.Tensor:
    _check_scores(scores)
    return scores.clone()


# name -> (function, needs group ids). One table, one dispatch path.
_BASELINE_TABLE = {
    "none": (lambda s, g: _no_baseline(s), False),
    "batch": (lambda s, g: batch_mean_baseline(s), False),
    "prompt": (prompt_mean_baseline, True),
    "loo": (leave_one_out_baseline, True),
    "grpo": (lambda s, g: group_normalized_advantages(s, g, scale=True), True),
    "grpo-noscale": (lambda s, g: group_normalized_advantages(s, g, scale=False), True),
}
BASELINES: tuple[str, ...] = tuple(_BASELINE_TABLE)


def compute_baseline_advantages(
    scores: torch.Tensor, group_ids: torch.Tensor | None, baseline: str
) -> torch.Tensor:
    """Advantages ``[N]`` for the baseline named ``baseline`` (one of :data:`BASELINES`).

    ``group_ids [N]`` (which prompt each sample answers) is required for the per-prompt baselines.
    """
    if baseline not in _BASELINE_TABLE:
        raise ValueError(f"unknown baseline {baseline!r}; choose one of {BASELINES}")
    fn, needs_groups = _BASELINE_TABLE[baseline]
    if needs_groups and group_ids is None:
        raise ValueError(f"baseline {baseline!r} needs group_ids (which prompt each sample answers)")
    return fn(scores, group_ids)
