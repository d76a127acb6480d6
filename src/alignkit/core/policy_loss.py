"""Policy-gradient losses. Each returns ``(loss, metrics)``; minimise the loss.

Metric vocabulary (see docs/metrics.md): ``policy_loss``, ``entropy``, ``clipfrac``, ``approx_kl``,
``ratio_mean``, ``ratio_min``, ``ratio_max``, ``dual_clipfrac``. Metrics are detached Python floats.
"""

from __future__ import annotations

import torch

from .kl import kl_estimate
from .masked import LossAggregation, aggregate_loss, masked_mean

__all__ = ["reinforce_loss", "ppo_clip_loss"]


def _with_entropy_bonus(
    loss: torch.Tensor,
    metrics: dict[str, float],
    entropy: torch.Tensor | None,
    entropy_coef: float,
    mask: torch.Tensor,
    agg: LossAggregation,
    normalizer,
) -> torch.Tensor:
    """loss - entropy_coef * agg(entropy): the entropy bonus of the PPO objective (seed 001, L_entropy)."""
    metrics["policy_loss"] = float(loss.detach())
    if entropy is None:
        if entropy_coef != 0.0:
            raise ValueError("entropy_coef is non-zero but no entropy tensor was given")
        return loss
    metrics["entropy"] = float(masked_mean(entropy.detach(), mask))
    if entropy_coef == 0.0:
        return loss
    return loss - entropy_coef * aggregate_loss(entropy, mask, agg, normalizer)


def reinforce_loss(
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    agg: LossAggregation = "seq-mean-token-sum",
    normalizer: float | None = None,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """REINFORCE surrogate: L = agg( -A_t * log pi(a_t | s_t) ).

    Seed 003 ("Estimating the gradient - REINFORCE"): grad E[r] ~ 1/n sum_i r(x, y_i) grad log pi(y_i|x),
    with log pi(y|x) = sum_t log pi(a_t|s_t). With a sequence advantage broadcast to every token and the
    default ``seq-mean-token-sum`` aggregation this is exactly that estimator.

    Args:
        logprobs: ``[B, T]`` log pi(a_t|s_t) under the current policy (with grad).
        advantages: ``[B, T]`` advantages (treated as constants; a ``[B]`` tensor is broadcast over tokens).
        mask: ``[B, T]`` response mask.
        agg: loss aggregation mode (see :func:`alignkit.core.masked.aggregate_loss`).
        normalizer: global denominator for gradient accumulation.
        entropy: optional ``[B, T]`` per-token entropy for the bonus; entropy_coef its weight.
    Returns:
        (loss, metrics)
    """
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    per_token = -advantages.detach() * logprobs
    loss = aggregate_loss(per_token, mask, agg, normalizer)
    metrics: dict[str, float] = {}
    loss = _with_entropy_bonus(loss, metrics, entropy, entropy_coef, mask, agg, normalizer)
    return loss, metrics


def ppo_clip_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_eps: float = 0.2,
    clip_eps_high: float | None = None,
    dual_clip: float | None = None,
    agg: LossAggregation = "token-mean",
    normalizer: float | None = None,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """PPO-clip surrogate (Schulman et al. 2017, eq. 7; seed 000 "PPO-CLIP", seed 002 "L^CLIP").

        rho_t = exp(log pi(a_t|s_t) - log pi_old(a_t|s_t))          (importance ratio; pi_old detached)
        L_t   = max( -A_t rho_t, -A_t clip(rho_t, 1 - eps_low, 1 + eps_high) )
    Dual clip (Ye et al. 2020, "Mastering Complex Control in MOBA Games", eq. 5): for A_t < 0 the loss is
    further capped at -c * A_t (c > 1), so a huge ratio on a bad action cannot blow up the update.

    At rho = 1 (the first minibatch of an epoch) the gradient equals REINFORCE's: d rho / d theta =
    grad log pi.

    Args:
        logprobs: ``[B, T]`` current log-probs (with grad).
        old_logprobs: ``[B, T]`` log-probs of the policy that sampled (detached here).
        advantages: ``[B, T]`` (or ``[B]``, broadcast) advantages, constants.
        mask: ``[B, T]`` response mask.
        clip_eps: epsilon of the clip (lower side, and upper side unless clip_eps_high is given).
        clip_eps_high: a different upper epsilon ("clip-higher", DAPO); None = clip_eps.
        dual_clip: the constant c > 1 of dual clipping, or None to disable.
        agg, normalizer: loss aggregation (see :func:`aggregate_loss`).
        entropy, entropy_coef: optional entropy bonus.
    Returns:
        (loss, metrics) with clipfrac (fraction of real tokens where the clipped branch is active),
        approx_kl (k3 estimate of KL(pi_old || pi) from pi_old's samples), ratio mean/min/max.
    """
    if clip_eps <= 0:
        raise ValueError(f"clip_eps must be > 0, got {clip_eps}")
    eps_high = clip_eps if clip_eps_high is None else clip_eps_high
    if dual_clip is not None and dual_clip <= 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    if advantages.dim() == 1:
        advantages = advantages[:, None].expand_as(logprobs)
    advantages = advantages.detach()
    log_ratio = logprobs - old_logprobs.detach()
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + eps_high)
    per_token = torch.maximum(unclipped, clipped)
    m = mask.bool()
    metrics: dict[str, float] = {}
    if dual_clip is not None:
        capped = torch.minimum(per_token, -advantages * dual_clip)
        dual_active = (advantages < 0) & (per_token > capped) & m
        per_token = torch.where(advantages < 0, capped, per_token)
        metrics["dual_clipfrac"] = float(masked_mean(dual_active.float(), mask))
    loss = aggregate_loss(per_token, mask, agg, normalizer)
    with torch.no_grad():
        metrics["clipfrac"] = float(masked_mean((clipped > unclipped).float(), mask))
        # k3 with samples from pi_old: E_old[(rho - 1) - log rho] = KL(pi_old || pi).
        metrics["approx_kl"] = float(masked_mean(kl_estimate(old_logprobs.detach(), logprobs.detach(), "k3"), mask))
        real_ratio = ratio.detach()[m]
        if real_ratio.numel():
            metrics["ratio_mean"] = float(real_ratio.mean())
            metrics["ratio_min"] = float(real_ratio.min())
            metrics["ratio_max"] = float(real_ratio.max())
    loss = _with_entropy_bonus(loss, metrics, entropy, entropy_coef, mask, agg, normalizer)
    return loss, metrics
