"""KL divergence to the reference policy: per-token estimators, KL-shaped rewards, beta controllers.

The regularised objective of seeds 000 and 003 is
    E_{y ~ pi} [ r(x, y) - beta * log pi(y|x) / pi_ref(y|x) ],
and log pi(y|x) = sum_t log pi(a_t | s_t), so the penalty splits into per-token terms.

Per-token estimators of KL(pi || pi_ref) from a token sampled from pi, with log-ratio
l = log pi(a) - log pi_ref(a) and ratio rho = pi_ref(a) / pi(a) = exp(-l) (Schulman 2020,
"Approximating KL Divergence", http://joschu.net/blog/kl-approx.html):
    k1 = l                        unbiased, high variance, can be negative
    k2 = l^2 / 2                  biased, low variance, >= 0
    k3 = (rho - 1) - log rho      unbiased, low variance, >= 0   ( = exp(-l) - 1 + l )
"""

from __future__ import annotations

import math
from typing import Literal

import torch

__all__ = [
    "KL_ESTIMATORS",
    "KLEstimator",
    "kl_estimate",
    "kl_shaped_rewards",
    "kl_penalised_rewards",
    "FixedKLController",
    "AdaptiveKLController",
]

KLEstimator = Literal["k1", "k2", "k3"]
# log-ratio l = log pi - log pi_ref  ->  per-token estimate
_ESTIMATORS = {
    "k1": lambda log_ratio: log_ratio,
    "k2": lambda log_ratio: 0.5 * log_ratio**2,
    "k3": lambda log_ratio: torch.expm1(-log_ratio) + log_ratio,
}
KL_ESTIMATORS: tuple[str, ...] = tuple(_ESTIMATORS)


def kl_estimate(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    kind: KLEstimator = "k1",
    clamp: float | None = None,
) -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) at tokens sampled from pi.

    Args:
        logprobs: ``[...]`` log pi(a_t | s_t) of the sampled tokens.
        ref_logprobs: ``[...]`` log pi_ref(a_t | s_t) of the same tokens.
        kind: ``k1`` (l), ``k2`` (l^2/2) or ``k3`` (exp(-l) - 1 + l); see the module docstring.
        clamp: if given, clip the log-ratio to [-clamp, clamp] before the estimator (k3 explodes as
            exp(-l) when pi_ref >> pi; veRL's "low_var_kl" clamps the *result* to [-10, 10] instead).
    Returns:
        ``[...]`` per-token estimates (differentiable w.r.t. both inputs).
    """
    log_ratio = logprobs - ref_logprobs
    if clamp is not None:
        log_ratio = log_ratio.clamp(-clamp, clamp)
    if kind not in _ESTIMATORS:
        raise ValueError(f"unknown KL estimator {kind!r}; choose one of {KL_ESTIMATORS}")
    return _ESTIMATORS[kind](log_ratio)


def kl_shaped_rewards(
    scores: torch.Tensor,
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    beta: float,
    kind: KLEstimator = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards r_t = -beta * KL_t, with the sequence score added at the last response token.

    This is the r_s of seed 000 split over tokens (Ziegler et al. 2019; Ouyang et al. 2022):
        r_t = -beta * (log pi(a_t|s_t) - log pi_ref(a_t|s_t))  +  1[t = last] * r(x, y).

    Args:
        scores: ``[B]`` sequence-level scores r(x, y).
        logprobs, ref_logprobs: ``[B, T]`` of the sampled response tokens (treated as constants).
        mask: ``[B, T]`` 1 at response tokens (each row needs at least one).
        beta: KL coefficient >= 0.
        kind: per-token estimator (k1 is the textbook choice).
    Returns:
        ``(rewards, non_score_rewards)``, both ``[B, T]``; the second is the KL part alone, 0 at padding.
    """
    if logprobs.shape != ref_logprobs.shape:
        raise ValueError("logprobs, ref_logprobs and mask must share one [B, T] shape")
    return kl_penalised_rewards(scores, kl_estimate(logprobs.detach(), ref_logprobs.detach(), kind), mask, beta)


def kl_penalised_rewards(
    scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`kl_shaped_rewards` from a per-token KL estimate already computed (e.g. once per rollout).

    Args:
        scores: ``[B]``; kl: ``[B, T]`` per-token KL estimates (constants); mask: ``[B, T]``; beta >= 0.
    Returns:
        ``(rewards, non_score_rewards)``, both ``[B, T]``: r_t = -beta * KL_t + 1[t = last] * score.
    """
    if kl.shape != mask.shape:
        raise ValueError("logprobs, ref_logprobs and mask must share one [B, T] shape")
    if scores.shape != kl.shape[:1]:
        raise ValueError(f"scores must be [B] = [{kl.shape[0]}], got {tuple(scores.shape)}")
    m = mask.to(kl.dtype)
    lengths = m.sum(-1)
    if (lengths == 0).any():
        raise ValueError(f"response {int((lengths == 0).nonzero()[0])} has no tokens; cannot place its score")
    non_score = -beta * kl.detach() * m
    rewards = non_score.clone()
    positions = torch.arange(mask.shape[-1], device=mask.device).expand_as(m)
    last = torch.where(mask.bool(), positions, torch.zeros_like(positions)).max(-1).values
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores.to(rewards.dtype)
    return rewards, non_score


class FixedKLController:
    """A constant KL coefficient. Same interface as :class:`AdaptiveKLController`."""

    def __init__(self, beta: float):
        if beta < 0 or not math.isfinite(beta):
            raise ValueError(f"beta must be a finite number >= 0, got {beta}")
        self.value = float(beta)

    def update(self, current_kl: float, n_steps: int) -> float:
        """No-op; returns the (unchanged) coefficient."""
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController:
    """Proportional controller that steers the observed KL towards a target.

    Ziegler et al. 2019 ("Fine-Tuning Language Models from Human Preferences", section 2.2):
        e_t    = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta  <- beta * (1 + K_beta * e_t),   with K_beta = n_steps / horizon
    where n_steps is the number of samples (episodes) the KL was measured over.
    """

    def __init__(self, init_beta: float, target: float, horizon: int):
        if init_beta < 0 or not math.isfinite(init_beta):
            raise ValueError(f"init_beta must be a finite number >= 0, got {init_beta}")
        if not target > 0:
            raise ValueError(f"target KL must be > 0, got {target}")
        if not horizon > 0:
            raise ValueError(f"horizon must be > 0, got {horizon}")
        self.value = float(init_beta)
        self.target = float(target)
        self.horizon = int(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Update beta from the mean sequence KL of the last batch; returns the new beta."""
        current_kl = float(current_kl)
        if not math.isfinite(current_kl):
            raise ValueError(f"KL must be finite to update the controller, got {current_kl}")
        error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def state_dict(self) -> dict:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = int(state["horizon"])
