"""PPO-clip for gymnasium environments, CleanRL-style.

Exact variant: CleanRL ``ppo.py`` (Huang et al. 2022, "The 37 Implementation Details of Proximal Policy
Optimization", the 13 core details), with the math from :mod:`alignkit.core`:

1. Vector environments, N envs x T steps per rollout (``RolloutCollector``).
2. Orthogonal init, gain sqrt(2) hidden / 0.01 policy head / 1 value head, zero biases (``networks.mlp``).
3. Adam with eps = 1e-5.
4. Learning rate annealed linearly from ``learning_rate`` to 0 over the run (``anneal_lr``).
5. GAE(gamma, lam) (:func:`alignkit.core.gae_from_transitions`), terminated vs truncated kept apart:
   truncated steps bootstrap V(final_obs) (CleanRL's ``ppo.py`` treats both as done; this is the
   correction of Pardo et al. 2018).
6. ``update_epochs`` passes over the batch, each split into ``num_minibatches`` shuffled minibatches.
7. Advantages whitened per minibatch (:func:`alignkit.core.whiten`, unbiased variance as ``torch.std``).
8. Clipped surrogate (:func:`alignkit.core.ppo_clip_loss`, Schulman et al. 2017 eq. 7; seed 002 L^CLIP).
9. Value loss clipped around the rollout-time values with the same epsilon (``clip_vloss``;
   :func:`alignkit.core.value_loss`), 1/2 squared error.
10. Loss = L^CLIP - ent_coef * H + vf_coef * L^VF (seed 001's overall PPO objective), one optimiser for the
    separate actor and critic networks.
11. Global gradient-norm clipping at ``max_grad_norm``.
12. Optional early stop of the epochs when approx_kl (k3) exceeds ``target_kl`` (0 = off, CleanRL's default).

Metrics (CleanRL's ``docs/rl-algorithms/ppo.md`` glossary): policy_loss, value_loss, entropy, approx_kl,
clipfrac, explained_variance, learning_rate.
"""

from __future__ import annotations

import itertools

import torch

from alignkit.core import explained_variance, ppo_clip_loss, value_loss, whiten

from .base import optimiser_step
from .networks import Policy, ValueNet
from .rollout import Rollout

__all__ = ["PPOAgent"]


class PPOAgent:
    """PPO-clip (see the module docstring for the exact variant).

    Args:
        policy, value_net: actor and critic.
        learning_rate: initial Adam step size.
        anneal_lr: decay it linearly to 0 over the run.
        gamma, gae_lambda: GAE parameters.
        update_epochs, num_minibatches: passes over each rollout and minibatches per pass.
        clip_coef: epsilon of the ratio clip (and of the value clip).
        clip_vloss: clip the value loss.
        ent_coef, vf_coef: entropy bonus and value-loss weights.
        max_grad_norm: global gradient-norm clip (0 = off).
        norm_adv: whiten advantages per minibatch.
        target_kl: stop the epochs early once approx_kl exceeds it (0 = never).
    """

    def __init__(self, policy: Policy, value_net: ValueNet, learning_rate: float = 2.5e-4, anneal_lr: bool = True,
                 gamma: float = 0.99, gae_lambda: float = 0.95, update_epochs: int = 4, num_minibatches: int = 4,
                 clip_coef: float = 0.2, clip_vloss: bool = True, ent_coef: float = 0.01, vf_coef: float = 0.5,
                 max_grad_norm: float = 0.5, norm_adv: bool = True, target_kl: float = 0.0):
        self.policy, self.value_net, self.value_fn = policy, value_net, value_net
        self.learning_rate, self.anneal_lr = learning_rate, anneal_lr
        self.gamma, self.gae_lambda = gamma, gae_lambda
        self.update_epochs, self.num_minibatches = update_epochs, num_minibatches
        self.clip_coef, self.clip_vloss = clip_coef, clip_vloss
        self.ent_coef, self.vf_coef, self.max_grad_norm = ent_coef, vf_coef, max_grad_norm
        self.norm_adv, self.target_kl = norm_adv, target_kl
        self.params = list(itertools.chain(policy.parameters(), value_net.parameters()))
        self.optimiser = torch.optim.Adam(self.params, lr=learning_rate, eps=1e-5)

    def update(self, rollout: Rollout, progress: float, rewards: torch.Tensor | None = None) -> dict[str, float]:
        """One PPO update on ``rollout``; ``rewards [N, T]`` replaces the env rewards (preference-based RL)."""
        lr = self.learning_rate * (1.0 - progress) if self.anneal_lr else self.learning_rate
        for group in self.optimiser.param_groups:
            group["lr"] = lr
        advantages, returns = rollout.gae(self.gamma, self.gae_lambda, rewards)
        # The batch: valid transitions only, [V, ...].
        obs, actions = rollout.flat(rollout.obs), rollout.flat(rollout.actions)
        old_logprobs, old_values = rollout.flat(rollout.logprobs), rollout.flat(rollout.values)
        adv, ret = rollout.flat(advantages), rollout.flat(returns)
        size = obs.shape[0]
        if size < 2 * self.num_minibatches:
            raise ValueError(f"a rollout with {size} transitions cannot be split into {self.num_minibatches} "
                             "minibatches of at least 2; raise num_envs x num_steps or lower num_minibatches")
        sums: dict[str, float] = {}
        count = 0
        stop = False
        for _ in range(self.update_epochs):
            for idx in torch.randperm(size).tensor_split(self.num_minibatches):
                dist = self.policy.distribution(obs[idx])
                logprobs = self.policy.log_prob(dist, actions[idx])
                entropy = self.policy.entropy(dist)
                mb_adv = whiten(adv[idx]) if self.norm_adv else adv[idx]
                ones = torch.ones(1, idx.numel())
                pg_loss, metrics = ppo_clip_loss(logprobs[None], old_logprobs[idx][None], mb_adv[None], ones,
                                                 clip_eps=self.clip_coef, entropy=entropy[None],
                                                 entropy_coef=self.ent_coef)
                values = self.value_net(obs[idx])
                v_loss, v_metrics = value_loss(values[None], ret[idx][None], ones, old_values[idx][None],
                                               self.clip_coef if self.clip_vloss else None)
                metrics["value_loss"] = v_metrics["value_loss"]
                metrics["grad_norm"] = optimiser_step(self.optimiser, pg_loss + self.vf_coef * v_loss, self.params,
                                                      self.max_grad_norm)
                for key, value in metrics.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
                if self.target_kl > 0 and metrics["approx_kl"] > self.target_kl:
                    stop = True
                    break
            if stop:
                break
        out = {key: value / count for key, value in sums.items()}
        out["explained_variance"] = float(explained_variance(old_values, ret))
        out["learning_rate"] = lr
        out["minibatch_steps"] = float(count)
        return out
