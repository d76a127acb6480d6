"""What every on-policy agent provides, and the loop that drives one.

An agent owns a :class:`~alignkit.classic.agents.networks.Policy` (``agent.policy``), optionally a state-value
function (``agent.value_fn``, used by the collector to fill ``values`` / ``next_values``; None for an agent
without one), and an ``update`` that learns from one :class:`~alignkit.classic.agents.rollout.Rollout` and
returns float metrics.

The loop (:func:`train_on_policy`) is the same for all of them, in named stages:
collect (policy acts, values of s_t and of the true s_{t+1}) -> update (advantages, losses, optimiser steps)
-> log. ``progress`` in [0, 1) is the fraction of updates done before this one (for lr annealing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Protocol

import torch

from .networks import Policy
from .rollout import Rollout, RolloutCollector

__all__ = ["Agent", "train_on_policy", "optimiser_step", "num_updates"]


class Agent(Protocol):
    policy: Policy
    #: V(s) ``[B, D] -> [B]`` for the collector, or None for an agent without a state-value critic.
    value_fn: Callable[[torch.Tensor], torch.Tensor] | None

    def update(self, rollout: Rollout, progress: float) -> dict[str, float]:
        """Learn from one rollout; ``progress`` = updates done / total updates."""
        ...


def optimiser_step(optimiser: torch.optim.Optimizer, loss: torch.Tensor, params: Iterable[torch.nn.Parameter],
                   max_grad_norm: float) -> float:
    """zero_grad, backward, clip the global gradient norm (0 = no clipping), step. Returns the pre-clip norm."""
    params = list(params)
    optimiser.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm > 0:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    optimiser.step()
    return float(norm)


def num_updates(total_steps: int, num_envs: int, num_steps: int) -> int:
    """Rollouts of ``num_envs x num_steps`` env steps that fit in ``total_steps`` (at least one, else an error)."""
    per_rollout = num_envs * num_steps
    if total_steps < per_rollout:
        raise ValueError(
            f"total_steps={total_steps} is smaller than one rollout (num_envs x num_steps = "
            f"{num_envs} x {num_steps} = {per_rollout}); raise total_steps or lower num_envs / num_steps"
        )
    return total_steps // per_rollout


def train_on_policy(
    agent: Agent,
    collector: RolloutCollector,
    total_steps: int,
    on_update: Callable[[int, Rollout, dict[str, float]], None] | None = None,
) -> int:
    """Run ``total_steps // (N * T)`` collect -> update iterations; returns the number of updates.

    ``on_update(update_index, rollout, metrics)`` is called after each update; ``metrics`` also holds
    ``time/collect_s`` and ``time/update_s``.
    """
    n_updates = num_updates(total_steps, collector.num_envs, collector.num_steps)
    for i in range(n_updates):
        start = time.perf_counter()
        rollout = collector.collect(agent.policy, agent.value_fn)
        collected = time.perf_counter()
        metrics = agent.update(rollout, i / n_updates)
        metrics["time/collect_s"] = collected - start
        metrics["time/update_s"] = time.perf_counter() - collected
        if on_update is not None:
            on_update(i, rollout, metrics)
    return n_updates
