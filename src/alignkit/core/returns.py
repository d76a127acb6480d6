"""Discounted returns and Generalised Advantage Estimation (GAE).

Two layouts share one backward recursion (:func:`_reverse_scan`):

* **Padded LM batches** ``[B, T]`` with a response mask: each row is one episode; the episode ends after
  its last real token. Masked positions are *transparent*: the recursion skips them, so whatever values or
  rewards sit at padded positions cannot change any advantage (a test checks this).
* **Environment transitions** ``[..., T]`` (classic control): each step carries the value of the *next*
  observation and two flags. ``terminated`` means the next state is terminal (its value is 0);
  ``truncated`` means the episode was cut by a time limit, so the next state's value is *bootstrapped*
  from ``next_values`` (Pardo et al. 2018, "Time Limits in Reinforcement Learning"). Both end the
  recursion, so advantages never leak across episode boundaries.

Equations (seed 001 "Estimating the advantage term"; Schulman et al. 2016, eq. 16):
    R_t      = r_t + gamma * R_{t+1}                                 (reward-to-go, seed 003)
    delta_t  = r_t + gamma * V(s_{t+1}) - V(s_t)                     (TD error)
    A_t      = delta_t + gamma * lam * A_{t+1}                       (GAE)
    returns_t = A_t + V(s_t)                                          (the critic's regression target)
With lam = 1 GAE is reward-to-go minus V; with lam = 0 it is the one-step TD error.
"""

from __future__ import annotations

import torch

__all__ = ["reward_to_go", "gae", "gae_from_transitions"]


def _check_discount(name: str, value: float) -> None:
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1], got {value}")


def _reverse_scan(
    x: torch.Tensor, decay: float | torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """out_t = x_t + decay_t * out_{next real t}, scanning the last dim backwards.

    Args:
        x: ``[..., T]``.
        decay: scalar or ``[..., T]``; ``decay_t`` multiplies the carry arriving at step t.
        mask: ``[..., T]`` or None. Masked steps neither read nor change the carry and output 0.
    Returns:
        ``[..., T]``.
    """
    out = torch.zeros_like(x)
    carry = torch.zeros_like(x[..., 0])
    decay_t = decay if isinstance(decay, torch.Tensor) else None
    for t in range(x.shape[-1] - 1, -1, -1):
        d = decay_t[..., t] if decay_t is not None else decay
        new = x[..., t] + d * carry
        if mask is None:
            carry = new
            out[..., t] = new
        else:
            real = mask[..., t].bool()
            carry = torch.where(real, new, carry)
            out[..., t] = torch.where(real, new, torch.zeros_like(new))
    return out


def _next_real_value(values: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """V at the next real position after t (skipping padding), or ``fill`` after the last one. ``[B, T]``."""
    out = torch.empty_like(values)
    carry = fill.to(values.dtype).expand_as(values[..., 0]).clone()
    for t in range(values.shape[-1] - 1, -1, -1):
        out[..., t] = carry
        carry = torch.where(mask[..., t].bool(), values[..., t], carry)
    return out


def reward_to_go(
    rewards: torch.Tensor,
    mask: torch.Tensor | None = None,
    gamma: float = 1.0,
    bootstrap_value: torch.Tensor | None = None,
) -> torch.Tensor:
    """Discounted reward-to-go R_t = sum_{k >= t} gamma^(k-t) r_k over the real steps of each row.

    Args:
        rewards: ``[B, T]`` per-step rewards (for RLHF: KL-shaped per-token rewards with the score at the
            last response token).
        mask: ``[B, T]`` 1 at real steps; padded steps are skipped and return 0.
        gamma: discount in [0, 1]. Seed 003: "response generation works well with gamma = 1".
        bootstrap_value: ``[B]`` value of the state after the last real step, for rows that were truncated
            rather than terminated (R_T = r_T + gamma * V_boot). None means every row terminated.
    Returns:
        ``[B, T]`` returns, 0 at padded positions.
    """
    _check_discount("gamma", gamma)
    if mask is not None and mask.shape != rewards.shape:
        raise ValueError(f"rewards {tuple(rewards.shape)} and mask {tuple(mask.shape)} differ in shape")
    x = rewards
    if bootstrap_value is not None:
        # Fold gamma * V_boot into the last real reward of each row.
        x = rewards.clone()
        m = torch.ones_like(rewards) if mask is None else mask.to(rewards.dtype)
        last = _last_real_index(m)
        rows = torch.arange(rewards.shape[0], device=rewards.device)
        has_real = m.sum(-1) > 0
        x[rows[has_real], last[has_real]] += gamma * bootstrap_value.to(rewards.dtype)[has_real]
    return _reverse_scan(x, gamma, mask)


def _last_real_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real position in each row of ``mask [B, T]`` (0 for empty rows). ``[B]`` long."""
    t = mask.shape[-1]
    positions = torch.arange(t, device=mask.device).expand_as(mask)
    return torch.where(mask.bool(), positions, torch.zeros_like(positions)).max(-1).values


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
    bootstrap_value: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE(gamma, lam) over a padded batch in which each row is one episode.

    Args:
        rewards: ``[B, T]`` per-token rewards.
        values: ``[B, T]`` V(s_t), the critic's value *before* token t is generated.
        mask: ``[B, T]`` 1 at response tokens. Padded positions are skipped: their rewards and values
            are never read, and their advantages and returns are 0.
        gamma: discount in [0, 1] (RLHF default 1.0).
        lam: GAE lambda in [0, 1] (RLHF default 0.95).
        bootstrap_value: ``[B]`` V of the state after the last real token, for truncated rows (a
            response cut at max length, if you choose to bootstrap it); None = every row terminated,
            i.e. V after the last token is 0.

    Returns:
        ``(advantages, returns)``, both ``[B, T]``, with returns = advantages + values at real positions.
    """
    _check_discount("gamma", gamma)
    _check_discount("lam", lam)
    if not (rewards.shape == values.shape == mask.shape):
        raise ValueError(
            f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask {tuple(mask.shape)} "
            "must have the same [B, T] shape"
        )
    m = mask.bool()
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    fill = zero if bootstrap_value is None else bootstrap_value.to(values.dtype)
    next_values = _next_real_value(values, m, fill)
    # delta_t = r_t + gamma * V(s_{t+1}) - V(s_t); masked entries are zeroed so NaN padding cannot leak.
    deltas = torch.where(m, rewards + gamma * next_values - values, zero)
    advantages = _reverse_scan(deltas, gamma * lam, m)
    returns = torch.where(m, advantages + values, zero)
    return advantages, returns


def gae_from_transitions(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_values: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over a stream of environment transitions (time on the last dim), episodes back to back.

    For step t with transition (s_t, a_t, r_t, s_{t+1}):
        delta_t = r_t + gamma * (1 - terminated_t) * V(s_{t+1}) - V(s_t)
        A_t     = delta_t + gamma * lam * (1 - done_t) * A_{t+1},   done_t = terminated_t or truncated_t

    A truncated step keeps the bootstrap gamma * V(s_{t+1}) (the time limit is not part of the MDP), a
    terminated one drops it; both stop the recursion. The last step of the buffer bootstraps from its
    ``next_values`` too, which is how a rollout of fixed length continues an unfinished episode.

    Args:
        rewards, values: ``[..., T]``; ``values[..., t]`` = V(s_t).
        next_values: ``[..., T]``; V(s_{t+1}). For a step that ended an episode this is the value of the
            *final* observation of that episode (gymnasium's ``final_observation``), not of the reset state.
        terminated, truncated: ``[..., T]`` bool or 0/1.
        gamma, lam: in [0, 1].
    Returns:
        ``(advantages, returns)``, both ``[..., T]``.
    """
    _check_discount("gamma", gamma)
    _check_discount("lam", lam)
    shapes = {tuple(t.shape) for t in (rewards, values, next_values, terminated, truncated)}
    if len(shapes) != 1:
        raise ValueError(f"all inputs must share one shape; got {sorted(shapes)}")
    term = terminated.to(values.dtype)
    done = (terminated.bool() | truncated.bool()).to(values.dtype)
    deltas = rewards + gamma * (1.0 - term) * next_values - values
    # The carry arriving at step t comes from step t+1; it must be cut if step t ended an episode.
    advantages = _reverse_scan(deltas, gamma * lam * (1.0 - done))
    return advantages, advantages + values
