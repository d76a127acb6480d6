"""TRPO for gymnasium environments: a natural-gradient policy step inside a KL trust region.

Exact variant (Schulman et al. 2015, "Trust Region Policy Optimization", section 6 "single path" and
appendix C; seed 002 "Trust Region Policy Optimization (TRPO)"; seed 004 "TRPO & PPO"):

1. Problem: max_theta E[ pi_theta(a|s) / pi_old(a|s) * A ] s.t. E_s[ KL(pi_old(.|s) || pi_theta(.|s)) ] <= delta,
   delta = ``max_kl``. The KL is the exact KL between the old and new Categorical / diagonal Gaussian
   distributions (``torch.distributions.kl_divergence``), averaged over the rollout's states.
2. Solved by :func:`alignkit.core.trpo_step`: conjugate gradient on the Fisher-vector product of the mean
   KL (``cg_iters``, ``damping``), step scaled to the KL boundary, backtracking line search that accepts a
   step only if the KL holds and the surrogate improves (else the policy is left unchanged).
3. Advantages: GAE(gamma, lam) (:func:`alignkit.core.gae_from_transitions`, truncation bootstrapped), whitened
   over the batch (``norm_adv``; Stable-Baselines3 ``TRPO`` does the same; the paper uses single-path
   Monte Carlo Q estimates).
4. Critic: V regressed on the GAE returns with Adam, ``critic_epochs`` passes of ``critic_minibatches``
   minibatches (:func:`alignkit.core.value_loss`) after the policy step (SB3 ``TRPO``'s
   ``n_critic_updates``; the paper fits V by a trust-region regression of its own).
"""

from __future__ import annotations

import torch
from torch.distributions import Categorical, Distribution, Normal, kl_divergence

from alignkit.core import explained_variance, trpo_step, value_loss, whiten

from .base import optimiser_step
from .networks import Policy, ValueNet
from .rollout import Rollout

__all__ = ["TRPOAgent", "mean_kl"]


def _detached(dist: Distribution) -> Distribution:
    """The same distribution with its parameters cut from the graph (pi_old is a constant)."""
    if isinstance(dist, Categorical):
        return Categorical(logits=dist.logits.detach())
    if isinstance(dist, Normal):
        return Normal(dist.loc.detach(), dist.scale.detach())
    raise TypeError(f"unsupported distribution {type(dist).__name__}")


def mean_kl(old: Distribution, new: Distribution) -> torch.Tensor:
    """E_s[ KL(old(.|s) || new(.|s)) ] over a batch of states; a Gaussian's KL is summed over action dims."""
    kl = kl_divergence(old, new)
    if isinstance(new, Normal):
        kl = kl.sum(-1)
    return kl.mean()


class TRPOAgent:
    """TRPO (see the module docstring).

    Args:
        policy, value_net: actor and critic.
        max_kl: trust-region radius delta on the mean KL.
        damping, cg_iters: Fisher damping and conjugate-gradient iterations.
        critic_learning_rate, critic_epochs, critic_minibatches: Adam regression of V.
        gamma, gae_lambda: GAE parameters.
        norm_adv: whiten the advantages over the batch.
        max_grad_norm: gradient-norm clip of the critic (0 = off).
    """

    def __init__(self, policy: Policy, value_net: ValueNet, max_kl: float = 0.01, damping: float = 0.1,
                 cg_iters: int = 10, critic_learning_rate: float = 1e-3, critic_epochs: int = 10,
                 critic_minibatches: int = 4, gamma: float = 0.99, gae_lambda: float = 0.95, norm_adv: bool = True,
                 max_grad_norm: float = 0.5):
        self.policy, self.value_net, self.value_fn = policy, value_net, value_net
        self.max_kl, self.damping, self.cg_iters = max_kl, damping, cg_iters
        self.critic_epochs, self.critic_minibatches = critic_epochs, critic_minibatches
        self.gamma, self.gae_lambda, self.norm_adv, self.max_grad_norm = gamma, gae_lambda, norm_adv, max_grad_norm
        self.critic_optimiser = torch.optim.Adam(value_net.parameters(), lr=critic_learning_rate)

    def update(self, rollout: Rollout, progress: float) -> dict[str, float]:
        advantages, returns = rollout.gae(self.gamma, self.gae_lambda)
        obs, actions = rollout.flat(rollout.obs), rollout.flat(rollout.actions)
        adv, ret, old_values = rollout.flat(advantages), rollout.flat(returns), rollout.flat(rollout.values)
        if self.norm_adv:
            adv = whiten(adv)
        with torch.no_grad():
            old_dist = _detached(self.policy.distribution(obs))
            old_logprobs = self.policy.log_prob(old_dist, actions)

        def surrogate() -> torch.Tensor:
            # E[ pi_theta(a|s) / pi_old(a|s) * A ]  (seed 002, importance-sampled objective)
            logprobs = self.policy.log_prob(self.policy.distribution(obs), actions)
            return (torch.exp(logprobs - old_logprobs) * adv).mean()

        def kl() -> torch.Tensor:
            return mean_kl(old_dist, self.policy.distribution(obs))

        metrics = trpo_step(list(self.policy.parameters()), surrogate, kl, max_kl=self.max_kl, damping=self.damping,
                            cg_iters=self.cg_iters)
        with torch.no_grad():
            metrics["entropy"] = float(self.policy.entropy(self.policy.distribution(obs)).mean())
        size = obs.shape[0]
        v_sum, v_count = 0.0, 0
        for _ in range(self.critic_epochs):
            for idx in torch.randperm(size).tensor_split(self.critic_minibatches):
                ones = torch.ones(1, idx.numel())
                v_loss, v_metrics = value_loss(self.value_net(obs[idx])[None], ret[idx][None], ones)
                optimiser_step(self.critic_optimiser, v_loss, self.value_net.parameters(), self.max_grad_norm)
                v_sum += v_metrics["value_loss"]
                v_count += 1
        metrics["value_loss"] = v_sum / v_count
        metrics["explained_variance"] = float(explained_variance(old_values, ret))
        return metrics
