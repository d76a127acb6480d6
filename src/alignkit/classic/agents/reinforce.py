"""REINFORCE with reward-to-go and a learnt state-value baseline.

Exact variant:

1. Policy gradient (seed 004 "REINFORCE" update rule; seed 002 "REINFORCE Algorithm"):
   grad J = E[ sum_t grad log pi(a_t|s_t) (G_t - V(s_t)) ] with the reward-to-go
   G_t = sum_{k >= t} gamma^(k-t) r_k (:func:`alignkit.core.reward_to_go`, on one row per episode piece).
2. Baseline: a learnt V(s) (seed 004 "Actor-Critic Algorithms": theta += alpha (G_t - v_hat(s, w)) grad log pi;
   Sutton & Barto 2nd ed. section 13.4, "REINFORCE with baseline"). V is regressed on G_t by the squared
   error of :func:`alignkit.core.value_loss`; the baseline uses the values from before this update.
3. Episode pieces: the rollout has a fixed length, so an episode can be cut by the rollout's end or by a
   time limit. Such a piece is completed with gamma^k V(s_cut) (``bootstrap_value`` of ``reward_to_go``), a
   terminated one with 0. This is the only bootstrapping; within a piece G_t is Monte Carlo.
4. Advantages G_t - V(s_t) are whitened over the batch (``normalize_advantages``, on by default; a
   variance-reduction step of CleanRL's PPO detail 7, not part of the textbook algorithm).
5. One Adam step per rollout for the policy and one for the critic; loss = mean over transitions (not the
   textbook sum over an episode: the learning rate absorbs the episode length).
"""

from __future__ import annotations

import torch

from alignkit.core import reinforce_loss, reward_to_go, value_loss, whiten

from .base import optimiser_step
from .networks import Policy, ValueNet
from .rollout import Rollout

__all__ = ["ReinforceAgent", "episode_rows"]


def episode_rows(rollout: Rollout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut the ``[N, T]`` stream into one row per episode piece, for the row-wise :func:`reward_to_go`.

    A piece is a run of valid steps of one env that ends at a done step or at the rollout's end.
    Returns:
        index: ``[P, L]`` long, positions into the flattened ``[N * T]`` rollout (0 at padding).
        mask: ``[P, L]`` bool, True at real positions.
        bootstrap: ``[P]`` V(s_cut) for pieces cut by a time limit or by the rollout's end; 0 for terminated.
    """
    n, t_max = rollout.rewards.shape
    done = (rollout.terminated | rollout.truncated).tolist()
    valid = rollout.valid.tolist()
    pieces: list[list[int]] = []
    for env in range(n):
        current: list[int] = []
        for t in range(t_max):
            if not valid[env][t]:
                continue
            current.append(env * t_max + t)
            if done[env][t]:
                pieces.append(current)
                current = []
        if current:
            pieces.append(current)
    length = max(len(p) for p in pieces)
    index = torch.zeros(len(pieces), length, dtype=torch.long)
    mask = torch.zeros(len(pieces), length, dtype=torch.bool)
    for row, piece in enumerate(pieces):
        index[row, : len(piece)] = torch.tensor(piece)
        mask[row, : len(piece)] = True
    last = torch.tensor([p[-1] for p in pieces])
    next_values = rollout.next_values.reshape(-1)[last]
    bootstrap = torch.where(rollout.terminated.reshape(-1)[last], torch.zeros_like(next_values), next_values)
    return index, mask, bootstrap


class ReinforceAgent:
    """REINFORCE with reward-to-go and a V(s) baseline (see the module docstring for the exact variant).

    Args:
        policy, value_net: the actor and the baseline.
        learning_rate: Adam step size of both.
        gamma: discount of the reward-to-go.
        ent_coef: entropy bonus weight (0 = the textbook estimator).
        max_grad_norm: global gradient-norm clip per network (0 = off).
        normalize_advantages: whiten G_t - V(s_t) over the batch.
    """

    def __init__(self, policy: Policy, value_net: ValueNet, learning_rate: float = 1e-3, gamma: float = 0.99,
                 ent_coef: float = 0.0, max_grad_norm: float = 0.5, normalize_advantages: bool = True):
        self.policy, self.value_net, self.value_fn = policy, value_net, value_net
        self.gamma, self.ent_coef, self.max_grad_norm = gamma, ent_coef, max_grad_norm
        self.normalize_advantages = normalize_advantages
        self.policy_optimiser = torch.optim.Adam(policy.parameters(), lr=learning_rate)
        self.value_optimiser = torch.optim.Adam(value_net.parameters(), lr=learning_rate)

    def returns(self, rollout: Rollout) -> torch.Tensor:
        """G_t ``[N, T]`` (0 at reset steps) by :func:`alignkit.core.reward_to_go` on the episode pieces."""
        index, mask, bootstrap = episode_rows(rollout)
        flat_rewards = rollout.rewards.reshape(-1)
        g = reward_to_go(flat_rewards[index] * mask, mask, self.gamma, bootstrap)
        out = torch.zeros_like(flat_rewards)
        out[index[mask]] = g[mask]
        return out.reshape(rollout.rewards.shape)

    def update(self, rollout: Rollout, progress: float) -> dict[str, float]:
        returns = self.returns(rollout)
        valid = rollout.valid
        advantages = returns - rollout.values
        if self.normalize_advantages:
            advantages = whiten(advantages, valid)
        n, t = valid.shape
        dist = self.policy.distribution(rollout.obs.reshape(n * t, -1))
        logprobs = self.policy.log_prob(dist, rollout.actions.reshape(n * t, *rollout.actions.shape[2:]))
        entropy = self.policy.entropy(dist).reshape(n, t)
        pg_loss, metrics = reinforce_loss(logprobs.reshape(n, t), advantages, valid, agg="token-mean",
                                          entropy=entropy, entropy_coef=self.ent_coef)
        metrics["grad_norm"] = optimiser_step(self.policy_optimiser, pg_loss, self.policy.parameters(),
                                              self.max_grad_norm)
        values = self.value_net(rollout.obs.reshape(n * t, -1)).reshape(n, t)
        v_loss, v_metrics = value_loss(values, returns, valid)
        optimiser_step(self.value_optimiser, v_loss, self.value_net.parameters(), self.max_grad_norm)
        metrics.update(v_metrics)
        metrics["return_mean"] = float(returns[valid].mean())
        return metrics
