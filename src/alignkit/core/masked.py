"""Masked reductions, whitening and loss aggregation.

Every tensor of per-token quantities in an RL batch is padded; ``mask`` is 1 (or True) at real tokens and
0 at padding. These helpers never let padded positions influence a result.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = [
    "masked_sum",
    "masked_mean",
    "masked_var",
    "whiten",
    "aggregate_loss",
    "LOSS_AGGREGATION_MODES",
    "LossAggregation",
]

LossAggregation = Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"]
LOSS_AGGREGATION_MODES: tuple[str, ...] = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def _as_weights(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(x)
    if mask.shape != x.shape:
        mask = mask.expand_as(x)
    return mask.to(x.dtype)


def masked_sum(x: torch.Tensor, mask: torch.Tensor | None = None, dim: int | None = None) -> torch.Tensor:
    """sum_i mask_i * x_i over ``dim`` (all dims if None). ``x, mask``: same shape ``[...]``.

    Padded entries are replaced by 0 before summing, so a NaN or inf there does not leak into the sum.
    """
    w = _as_weights(x, mask)
    vals = torch.where(w > 0, x, torch.zeros((), dtype=x.dtype, device=x.device)) * w
    return vals.sum() if dim is None else vals.sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None, dim: int | None = None) -> torch.Tensor:
    """sum(mask * x) / sum(mask) over ``dim``. A row with no real entries gives 0 (not NaN)."""
    w = _as_weights(x, mask)
    total = masked_sum(x, w, dim)
    count = w.sum() if dim is None else w.sum(dim)
    return total / count.clamp(min=1.0) if mask is not None else total / count


def masked_var(
    x: torch.Tensor, mask: torch.Tensor | None = None, unbiased: bool = True
) -> torch.Tensor:
    """Variance of the real entries of ``x`` (a scalar).

    unbiased=True divides by n - 1 (Bessel's correction, as ``torch.var``); False divides by n
    (OpenAI lm-human-preferences' ``whiten`` uses the biased estimate).
    """
    w = _as_weights(x, mask)
    mean = masked_mean(x, w)
    var = masked_mean((x - mean) ** 2, w)
    if unbiased:
        n = w.sum()
        if n <= 1:
            raise ValueError(f"unbiased variance needs at least 2 real entries, got {int(n)}")
        var = var * n / (n - 1)
    return var


def whiten(
    x: torch.Tensor,
    mask: torch.Tensor | None = None,
    shift_mean: bool = True,
    unbiased: bool = True,
    eps: float = 1e-8,
    min_std: float = 0.0,
) -> torch.Tensor:
    """Normalise ``x`` to unit variance over its real entries: (x - mu) / sqrt(var + eps) [+ mu].

    Args:
        x: ``[...]`` values (advantages, or per-token rewards).
        mask: ``[...]`` 1 at real entries; padded entries of the output are 0.
        shift_mean: if False the mean is added back, so only the scale changes. PPO implementations whiten
            *rewards* with shift_mean=False (shifting would change the sign of rewards and hence the
            incentive to end early or late) and *advantages* with shift_mean=True.
        unbiased: Bessel's correction for the variance (OpenAI lm-human-preferences uses biased).
        eps: added to the variance.
        min_std: below this standard deviation ``x`` is numerical noise (e.g. KL noise of 1e-6 under all-equal
            scores) and the result is 0. Scaled to unit variance the noise would be a full-size training signal;
            left unscaled it would still be one, through Adam, whose step does not depend on the gradient's
            scale (measured on the tiny model: clip fraction 0.52 at the first PPO step with all-zero scores).

    Returns:
        ``[...]`` whitened values, 0 at padded positions.
    """
    w = _as_weights(x, mask)
    mean = masked_mean(x, w)
    var = masked_var(x, w, unbiased=unbiased)
    if min_std > 0 and float(var) < min_std**2:
        return torch.zeros_like(x)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * w if mask is not None else out


def aggregate_loss(
    loss: torch.Tensor,
    mask: torch.Tensor,
    mode: LossAggregation = "token-mean",
    normalizer: float | torch.Tensor | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss ``[B, T]`` to a scalar.

    Modes (the silent divergence between frameworks, named here; see DESIGN.md):
      - ``token-mean``: sum_{b,t} m*l / sum_{b,t} m. Every token weighs the same (PPO in most RLHF
        codebases, DAPO).
      - ``seq-mean-token-mean``: mean_b [ sum_t m*l / sum_t m ]. Every sequence weighs the same, so
        tokens of short responses weigh more (original GRPO).
      - ``seq-mean-token-sum``: mean_b [ sum_t m*l ]. Sum over tokens, mean over sequences (the REINFORCE
        estimator of seed 003: reward times the *sum* of token log-probs, averaged over samples).

    Args:
        loss: ``[B, T]`` per-token losses.
        mask: ``[B, T]`` 1 at response tokens.
        mode: one of :data:`LOSS_AGGREGATION_MODES`.
        normalizer: for gradient accumulation. When a global batch is split into micro-batches, pass the
            *global* denominator (total real tokens for token-mean, total sequences for the seq-mean modes)
            and *sum* the micro-batch losses: the result equals the loss of the whole batch exactly, even
            when micro-batches hold uneven token counts. None uses this batch's own denominator.

    Returns:
        scalar loss.
    """
    if loss.dim() != 2 or loss.shape != mask.shape:
        raise ValueError(f"loss and mask must both be [B, T]; got {tuple(loss.shape)} and {tuple(mask.shape)}")
    w = mask.to(loss.dtype)
    if mode == "token-mean":
        denom = w.sum() if normalizer is None else normalizer
        return masked_sum(loss, w) / torch.as_tensor(denom, dtype=loss.dtype).clamp(min=1.0)
    if mode == "seq-mean-token-mean":
        per_seq = masked_sum(loss, w, dim=-1) / w.sum(-1).clamp(min=1.0)
    elif mode == "seq-mean-token-sum":
        per_seq = masked_sum(loss, w, dim=-1)
    else:
        raise ValueError(f"unknown loss aggregation mode {mode!r}; choose one of {LOSS_AGGREGATION_MODES}")
    denom = loss.shape[0] if normalizer is None else normalizer
    return per_seq.sum() / denom
