"""Preference losses: Bradley-Terry reward modelling and DPO with its common variants.

Bradley-Terry (seed 001): P(y_w > y_l | x) = sigma(r(x, y_w) - r(x, y_l)); the reward model minimises
    L_BT = -log sigma(r_w - r_l - m)                      (m: optional margin, Llama 2 section 3.2.2)

DPO (Rafailov et al. 2023; seed 001/002): the optimum of the KL-regularised objective is
pi*(y|x) = pi_ref(y|x) exp(r(x,y)/beta) / Z(x), so r(x,y) = beta log pi*(y|x)/pi_ref(y|x) + beta log Z(x).
Substituting into Bradley-Terry, Z cancels; with h = [log pi(y_w) - log pi_ref(y_w)]
                                                      - [log pi(y_l) - log pi_ref(y_l)]:
    sigmoid   L = -log sigma(beta h)                                              (DPO, eq. 7)
    conservative (label smoothing eps, cDPO; Mitchell 2023):
              L = -(1 - eps) log sigma(beta h) - eps log sigma(-beta h)
    ipo       L = (h - 1 / (2 beta))^2                    (Azar et al. 2023, eq. 17 with tau = beta)
    hinge     L = max(0, 1 - beta h)                      (SLiC, Zhao et al. 2023)

Implicit rewards (DPO section 5): r_hat(x, y) = beta (log pi(y|x) - log pi_ref(y|x)).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

__all__ = ["bradley_terry_loss", "dpo_loss", "DPO_LOSS_TYPES"]


def _pair_metrics(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, float]:
    chosen, rejected = chosen.detach().float(), rejected.detach().float()
    return {
        "rewards_chosen": float(chosen.mean()),
        "rewards_rejected": float(rejected.mean()),
        "rewards_accuracy": float((chosen > rejected).float().mean()),
        "rewards_margin": float((chosen - rejected).mean()),
    }


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | float | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean of -log sigma(r_w - r_l - margin) over pairs.

    Args:
        chosen_rewards, rejected_rewards: ``[N]`` scalar rewards of the preferred / dispreferred response.
        margin: ``[N]`` or scalar; how much better the chosen response is rated (0 if None).
    Returns:
        (loss, metrics): loss, rewards_chosen, rewards_rejected, rewards_accuracy, rewards_margin.
    """
    if chosen_rewards.shape != rejected_rewards.shape:
        raise ValueError(
            f"chosen {tuple(chosen_rewards.shape)} and rejected {tuple(rejected_rewards.shape)} differ in shape"
        )
    diff = chosen_rewards - rejected_rewards
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    metrics = _pair_metrics(chosen_rewards, rejected_rewards)
    metrics["loss"] = float(loss.detach())
    return loss, metrics


def _sigmoid(h: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    return -(1.0 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)


def _ipo(h: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    return (h - 1.0 / (2.0 * beta)) ** 2


def _hinge(h: torch.Tensor, beta: float, label_smoothing: float) -> torch.Tensor:
    return torch.relu(1.0 - beta * h)


# Loss type -> per-pair loss of the log-ratio difference h. One table, no if/elif chain.
# "ipo" is Azar et al. 2023 eq. 17 as written, on sequence log-probs (sums over response tokens);
# "ipo-token-mean" is the same loss on per-token *mean* log-probs, what the IPO authors' code and TRL's
# loss_type="ipo" compute. The two need very different beta (tau): with R response tokens, h of the
# token-mean form is about 1/R of the sum form's, while the target 1/(2 tau) is the same.
_DPO_LOSSES: dict[str, Callable[[torch.Tensor, float, float], torch.Tensor]] = {
    "sigmoid": _sigmoid,
    "ipo": _ipo,
    "ipo-token-mean": _ipo,
    "hinge": _hinge,
}
DPO_LOSS_TYPES: tuple[str, ...] = tuple(_DPO_LOSSES)
# loss types whose log-probs are per-token means (the caller divides the sums by the response lengths)
TOKEN_MEAN_LOSS_TYPES: tuple[str, ...] = ("ipo-token-mean",)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """DPO-family loss, mean over pairs.

    Args:
        policy_chosen_logps, policy_rejected_logps: ``[N]`` sequence log-probs log pi(y|x), summed over
            response tokens, or their per-token means for the loss types in :data:`TOKEN_MEAN_LOSS_TYPES`
            (the caller divides; the loss itself is the same function of h).
        ref_chosen_logps, ref_rejected_logps: ``[N]`` the same under pi_ref (constants).
        beta: > 0; the KL strength of the implied objective (IPO's tau).
        loss_type: one of :data:`DPO_LOSS_TYPES`.
        label_smoothing: eps in [0, 0.5), the assumed fraction of flipped labels (sigmoid loss only).
    Returns:
        (loss, metrics): loss, rewards_chosen / rewards_rejected (implicit rewards), rewards_accuracy,
        rewards_margin, logps_chosen, logps_rejected.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if loss_type not in _DPO_LOSSES:
        raise ValueError(f"unknown DPO loss_type {loss_type!r}; choose one of {DPO_LOSS_TYPES}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}")
    if label_smoothing and loss_type != "sigmoid":
        raise ValueError(f"label_smoothing applies to the sigmoid loss only, not {loss_type!r}")
    shapes = {tuple(t.shape) for t in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                                       ref_rejected_logps)}
    if len(shapes) != 1:
        raise ValueError(f"all four log-prob tensors must be [N]; got shapes {sorted(shapes)}")
    chosen_logratio = policy_chosen_logps - ref_chosen_logps.detach()
    rejected_logratio = policy_rejected_logps - ref_rejected_logps.detach()
    h = chosen_logratio - rejected_logratio
    loss = _DPO_LOSSES[loss_type](h, beta, label_smoothing).mean()
    metrics = _pair_metrics(beta * chosen_logratio, beta * rejected_logratio)
    metrics["loss"] = float(loss.detach())
    metrics["logps_chosen"] = float(policy_chosen_logps.detach().mean())
    metrics["logps_rejected"] = float(policy_rejected_logps.detach().mean())
    return loss, metrics
