"""A2C: synchronous advantage actor-critic with a state-value critic.

Exact variant (Mnih et al. 2016 "Asynchronous Methods for Deep RL", the synchronous A2C of OpenAI baselines /
Stable-Baselines3 ``a2c.py``):

1. Actor update theta += alpha A_t grad log pi(a_t|s_t) (seed 004 "(Advantage) Actor-Critic (A2C)", whose
   one-step return G_{t:t+1} - v_hat(s) is the lam = 0 case) via :func:`alignkit.core.reinforce_loss`.
2. Advantages by GAE(gamma, lam) over each n-step rollout (:func:`alignkit.core.gae_from_transitions`;
   lam = 1 gives the n-step returns of the A2C paper, lam = 0 the one-step TD error). Truncated steps
   bootstrap V(final_obs), terminated ones do not.
3. Critic regressed on the GAE returns A_t + V(s_t) (:func:`alignkit.core.value_loss`, 1/2 squared error).
4. One combined loss pg + vf_coef * vf - ent_coef * H, one gradient step per rollout, global norm clip.
   Optimiser: Adam (SB3 uses RMSprop with alpha 0.99, eps 1e-5; Adam is the PPO optimiser here too).
5. No advantage normalisation by default (SB3's default).
"""

from __future__ import annotations

import itertools

import torch

from alignkit.core import reinforce_loss, value_loss, whiten

from .base import optimiser_step
from .networks import Policy, ValueNet
from .rollout import Rollout

__all__ = ["A2CAgent"]


class A2CAgent:
    """A2C (see the module docstring).

    Args:
        policy, value_net: actor and critic (separate networks, CleanRL's classic-control layout).
        learning_rate: Adam step size.
        gamma, gae_lambda: GAE parameters.
        ent_coef, vf_coef: weights of the entropy bonus and of the value loss.
        max_grad_norm: global gradient-norm clip (0 = off).
        normalize_advantages: whiten the advantages over the batch.
    """

    def __init__(self, policy: Policy, value_net: ValueNet, learning_rate: float = 7e-4, gamma: float = 0.99,
                 gae_lambda: float = 1.0, ent_coef: float = 0.0, vf_coef: float = 0.5, max_grad_norm: float = 0.5,
                 normalize_advantages: bool = False):
        self.policy, self.value_net, self.value_fn = policy, value_net, value_net
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.ent_coef, self.vf_coef, self.max_grad_norm = ent_coef, vf_coef, max_grad_norm
        self.normalize_advantages = normalize_advantages
        self.params = list(itertools.chain(policy.parameters(), value_net.parameters()))
        self.optimiser = torch.optim.Adam(self.params, lr=learning_rate)

    def update(self, rollout: Rollout, progress: float) -> dict[str, float]:
        advantages, returns = rollout.gae(self.gamma, self.gae_lambda)
        valid = rollout.valid
        if self.normalize_advantages:
            advantages = whiten(advantages, valid)
        n, t = valid.shape
        obs = rollout.obs.reshape(n * t, -1)
        dist = self.policy.distribution(obs)
        logprobs = self.policy.log_prob(dist, rollout.actions.reshape(n * t, *rollout.actions.shape[2:]))
        entropy = self.policy.entropy(dist).reshape(n, t)
        pg_loss, metrics = reinforce_loss(logprobs.reshape(n, t), advantages, valid, agg="token-mean",
                                          entropy=entropy, entropy_coef=self.ent_coef)
        v_loss, v_metrics = value_loss(self.value_net(obs).reshape(n, t), returns, valid)
        metrics.update(v_metrics)
        metrics["grad_norm"] = optimiser_step(self.optimiser, pg_loss + self.vf_coef * v_loss, self.params,
                                              self.max_grad_norm)
        metrics["advantage_mean"] = float(advantages[valid].mean())
        return metrics
