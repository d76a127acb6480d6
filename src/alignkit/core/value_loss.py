"""Critic losses and diagnostics (seed 003 "Learning the Value function"; seed 001 "L_VF")."""

from __future__ import annotations

import torch

from .masked import LossAggregation, aggregate_loss, masked_mean, masked_var

__all__ = ["value_loss", "explained_variance"]


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    old_values: torch.Tensor | None = None,
    clip_range: float | None = None,
    agg: LossAggregation = "token-mean",
    normalizer: float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Squared-error regression of V(s_t) onto the return R_t, optionally clipped.

        L_t = 1/2 (V_t - R_t)^2                                            (seed 001: 1/2 ||V - R||^2)
    clipped (PPO2 / OpenAI baselines; Ziegler et al. 2019):
        V_clip = V_old + clip(V - V_old, -c, c)
        L_t    = 1/2 max((V_t - R_t)^2, (V_clip - R_t)^2)

    Args:
        values: ``[B, T]`` current predictions (with grad).
        returns: ``[B, T]`` targets (detached here).
        mask: ``[B, T]``.
        old_values: ``[B, T]`` predictions at rollout time; needed with ``clip_range``.
        clip_range: c > 0, or None for the plain squared error.
        agg, normalizer: loss aggregation.
    Returns:
        (loss, metrics): value_loss, vf_clipfrac (if clipped), value_mean, explained_variance.
    """
    returns = returns.detach()
    err = (values - returns) ** 2
    metrics: dict[str, float] = {}
    if clip_range is not None:
        if old_values is None:
            raise ValueError("clip_range needs old_values (the critic's predictions at rollout time)")
        if clip_range <= 0:
            raise ValueError(f"clip_range must be > 0, got {clip_range}")
        old_values = old_values.detach()
        v_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
        err_clipped = (v_clipped - returns) ** 2
        # the clipped branch is active only where the clip moved the value (inside the range old + (V - old)
        # may round to a different float than V, and a comparison on that rounding is noise)
        active = (err_clipped > err) & ((values - old_values).abs() > clip_range)
        metrics["vf_clipfrac"] = float(masked_mean(active.float().detach(), mask))
        err = torch.maximum(err, err_clipped)
    loss = 0.5 * aggregate_loss(err, mask, agg, normalizer)
    metrics["value_loss"] = float(loss.detach())
    metrics["value_mean"] = float(masked_mean(values.detach(), mask))
    metrics["explained_variance"] = float(explained_variance(values.detach(), returns, mask))
    return loss, metrics


def explained_variance(
    values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """1 - Var[R - V] / Var[R] over real entries (biased variances). ``[...] -> scalar``.

    1 is a perfect critic, 0 is no better than predicting the mean, negative is worse than that.
    Returns NaN when the returns have zero variance (the quantity is undefined there).
    """
    var_r = masked_var(returns, mask, unbiased=False)
    var_err = masked_var(returns - values, mask, unbiased=False)
    if var_r == 0:
        return torch.tensor(float("nan"), device=values.device)
    return 1.0 - var_err / var_r
