"""Actor-critic with an action-value critic Q(s, a): seed 002, Algorithm 3 ("Actor-Critic Algorithm
(Q-Function Critic)").

Exact variant, line by line against Algorithm 3:

- lines 6-7: a ~ pi_theta(.|s), step the env (the collector, N envs x T steps per update instead of one).
- line 8: a' ~ pi_theta(.|s') is sampled at update time, for every transition, from the current policy
  (a SARSA-style target; s' is the true next state, the final observation at an episode end).
- line 9: delta = r + gamma * (1 - terminated) * Q_phi(s', a') - Q_phi(s, a). Terminated transitions drop
  the bootstrap; truncated ones keep it (the time limit is not part of the MDP).
- lines 10-11: the critic minimises 1/2 delta^2 with the target held fixed (semi-gradient TD(0), the update
  phi += alpha_c delta grad Q_phi(s, a)) via :func:`alignkit.core.value_loss`; Adam instead of plain SGD.
- lines 12-15: the actor ascends grad log pi_theta(a|s) Q_phi(s, a) (:func:`alignkit.core.reinforce_loss`
  with Q as the weight), using the critic after its update, as in the listing.
- ``q_baseline=True`` (off by default, not in Algorithm 3) weights by Q(s, a) - sum_b pi(b|s) Q(s, b) instead,
  the advantage form of seed 002 "Equivalent Policy Gradient Objective Functions" (A = Q - V); it has the
  same expectation and lower variance.

Discrete actions only: the critic has one output per action (:class:`~.networks.QNet`).
"""

from __future__ import annotations

import torch

from alignkit.core import reinforce_loss, value_loss

from .base import optimiser_step
from .networks import Policy, QNet
from .rollout import Rollout

__all__ = ["QActorCriticAgent"]


class QActorCriticAgent:
    """Algorithm 3 of seed 002 (see the module docstring).

    Args:
        policy: a Categorical policy.
        q_net: Q(s, .) with one output per action.
        learning_rate: Adam step size of the actor (alpha_a).
        critic_learning_rate: Adam step size of the critic (alpha_c).
        gamma: discount.
        ent_coef: entropy bonus weight (0 in Algorithm 3).
        q_baseline: weight the score by Q(s, a) - E_pi Q(s, .) instead of Q(s, a).
        max_grad_norm: gradient-norm clip per network (0 = off).
    """

    value_fn = None  # no state-value critic: the TD target needs Q(s', a'), computed in update

    def __init__(self, policy: Policy, q_net: QNet, learning_rate: float = 7e-4, critic_learning_rate: float = 7e-4,
                 gamma: float = 0.99, ent_coef: float = 0.0, q_baseline: bool = False, max_grad_norm: float = 0.5):
        if not policy.discrete:
            raise ValueError("the Q actor-critic supports discrete actions only (Q(s, .) has one output per action)")
        self.policy, self.q_net = policy, q_net
        self.gamma, self.ent_coef, self.q_baseline, self.max_grad_norm = gamma, ent_coef, q_baseline, max_grad_norm
        self.policy_optimiser = torch.optim.Adam(policy.parameters(), lr=learning_rate)
        self.q_optimiser = torch.optim.Adam(q_net.parameters(), lr=critic_learning_rate)

    def update(self, rollout: Rollout, progress: float) -> dict[str, float]:
        valid = rollout.valid
        n, t = valid.shape
        obs = rollout.obs.reshape(n * t, -1)
        actions = rollout.actions.reshape(n * t)
        with torch.no_grad():
            # Line 8: a' ~ pi(.|s'); line 9's target r + gamma (1 - terminated) Q(s', a').
            next_obs = rollout.next_obs.reshape(n * t, -1)
            next_actions, _ = self.policy.act(next_obs)
            next_q = self.q_net.q(next_obs, next_actions).reshape(n, t)
            target = rollout.rewards + self.gamma * (~rollout.terminated).float() * next_q
        q_sa = self.q_net.q(obs, actions).reshape(n, t)
        td_loss, q_metrics = value_loss(q_sa, target, valid)
        metrics = {"td_loss": q_metrics["value_loss"], "q_mean": q_metrics["value_mean"],
                   "td_explained_variance": q_metrics["explained_variance"]}
        metrics["critic_grad_norm"] = optimiser_step(self.q_optimiser, td_loss, self.q_net.parameters(),
                                                     self.max_grad_norm)
        dist = self.policy.distribution(obs)
        with torch.no_grad():
            q_all = self.q_net(obs)
            weight = q_all.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
            if self.q_baseline:
                weight = weight - (dist.probs * q_all).sum(-1)
        logprobs = self.policy.log_prob(dist, actions).reshape(n, t)
        entropy = self.policy.entropy(dist).reshape(n, t)
        pg_loss, pg_metrics = reinforce_loss(logprobs, weight.reshape(n, t), valid, agg="token-mean",
                                             entropy=entropy, entropy_coef=self.ent_coef)
        metrics.update(pg_metrics)
        metrics["grad_norm"] = optimiser_step(self.policy_optimiser, pg_loss, self.policy.parameters(),
                                              self.max_grad_norm)
        return metrics
