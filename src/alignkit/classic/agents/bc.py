"""Behaviour cloning: supervised learning of a policy from an expert's demonstrations.

Exact variant (seed 002 "Behavior Cloning"; seed 004 "aka behavioural cloning"):

1. Collect demonstration trajectories from an expert (:func:`collect_demonstrations`: a trained or given
   policy, its mode action by default, ``episodes`` episodes).
2. Treat them as iid state-action pairs (shuffled minibatches, the episode structure is dropped).
3. Fit pi_theta by maximum likelihood: minimise -1/K sum_k log pi_theta(a_k|s_k) (cross-entropy for a
   Categorical, Gaussian negative log-likelihood for a continuous policy) with Adam.
No interaction with the environment during fitting (no DAgger), so states off the expert's distribution are
never corrected; evaluation runs the cloned policy in the environment.
"""

from __future__ import annotations

import torch

from .evaluation import run_episodes
from .networks import Policy

__all__ = ["collect_demonstrations", "fit_behaviour_cloning"]


def collect_demonstrations(expert: Policy, env_id: str, episodes: int, seed: int,
                           deterministic: bool = True) -> dict:
    """Run the expert for ``episodes`` episodes; returns ``{"obs": [K, D], "actions": [K] or [K, M],
    "returns": [episodes], "mean": float}``."""
    out = run_episodes(expert, env_id, episodes, seed, deterministic, record=True)
    return {"obs": out["obs"], "actions": out["actions"], "returns": out["returns"], "mean": out["mean"]}


def fit_behaviour_cloning(
    policy: Policy,
    obs: torch.Tensor,
    actions: torch.Tensor,
    epochs: int = 20,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
    on_epoch=None,
) -> list[dict[str, float]]:
    """Maximum-likelihood fit of ``policy`` to the pairs (``obs [K, D]``, ``actions [K]`` or ``[K, M]``).

    ``on_epoch(epoch, metrics)`` is called after each pass. Returns the per-epoch metrics: ``bc_loss``
    (mean negative log-likelihood), ``accuracy`` (discrete: share of pairs where the policy's mode is the
    expert's action; continuous: NaN), ``entropy``.
    """
    if obs.shape[0] != actions.shape[0] or obs.shape[0] == 0:
        raise ValueError(f"need matching, non-empty demonstrations; got {obs.shape[0]} states, {actions.shape[0]} "
                         "actions")
    optimiser = torch.optim.Adam(policy.parameters(), lr=learning_rate)
    history = []
    for epoch in range(epochs):
        total, count = 0.0, 0
        for idx in torch.randperm(obs.shape[0]).split(batch_size):
            dist = policy.distribution(obs[idx])
            loss = -policy.log_prob(dist, actions[idx]).mean()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * idx.numel()
            count += idx.numel()
        with torch.no_grad():
            dist = policy.distribution(obs)
            accuracy = (float((policy.mode(dist) == actions).float().mean()) if policy.discrete else float("nan"))
            metrics = {"bc_loss": total / count, "accuracy": accuracy,
                       "entropy": float(policy.entropy(dist).mean())}
        history.append(metrics)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
    return history
