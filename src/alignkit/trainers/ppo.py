"""PPO actor-critic for language models.

Variant (seeds 000-002 "PPO-CLIP", "Learning the Value function"; Ziegler et al. 2019; Ouyang et al. 2022;
implementation details after Huang et al. 2022/2024, "The N+ Implementation Details of RLHF with PPO"):
  * per-token reward r_t = -beta * KL_t, plus the score r(x, y) at the last response token
    (``alignkit.core.kl_shaped_rewards``; ``kl_penalty="loss"`` moves the KL into the loss instead);
  * optional reward whitening without mean shift (``whiten_rewards``), so the sign of rewards is kept;
  * critic V(s_t): a separate model (trunk + scalar head, ``alignkit.models.ValueModel``) initialised from
    the policy by default, or from a reward model (pass ``critic=ValueModel.from_reward_model(rm)``); or,
    with ``shared_trunk``, a value head on the policy's own final hidden state (one forward pass gives
    logits and values; loss = policy loss + vf_coef x value loss; one optimiser);
  * advantages by GAE(gamma, lam) with defaults gamma = 1, lam = 0.95 (``alignkit.core.gae``), whitened
    with mean shift (``whiten_advantages``), unless the per-token rewards' spread is below ``ADVANTAGE_MIN_STD``
    (all-equal scores, KL noise only: then they are 0, and ``advantages_too_flat_to_whiten`` is logged as 1); the
    critic regresses onto the GAE returns;
  * ``update_epochs`` passes x ``num_minibatches`` optimiser steps x ``grad_accum_steps`` micro-batches over
    one rollout; policy loss PPO-clip (ratio exp(log pi - log pi_old), pi_old detached) + entropy bonus;
    value loss 1/2 max((V - R)^2, (V_clip - R)^2) x ``vf_coef``, its own optimiser;
  * optional early stop of the epochs when the mean approx_kl exceeds 1.5 x ``target_kl``;
  * the missing-EOS penalty and the temperature-consistent log-probs come from the shared online loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.kl import kl_estimate, kl_penalised_rewards
from ..core.logprobs import entropy_from_logits, token_logprobs
from ..core.masked import aggregate_loss, masked_var, whiten
from ..core.policy_loss import ppo_clip_loss
from ..core.returns import gae
from ..core.value_loss import explained_variance, value_loss
from ..training.config import option, with_defaults
from ..training.loop import enable_gradient_checkpointing
from ..training.optim import build_optimizer
from .online import OnlineConfig, OnlineTrainer, policy_forward

# Per-token rewards (score + KL shaping) whose spread over the rollout is below this carry no signal (e.g. KL
# noise under all-equal scores): the advantages are set to 0, neither whitened to unit variance nor left as they
# are, since Adam takes a full-size step on noise of any scale (issue 19).
ADVANTAGE_MIN_STD = 1e-4


@dataclass
@with_defaults(update_epochs=4, num_minibatches=2)
class PPOConfig(OnlineConfig):
    """PPO settings (see the module docstring for the variant)."""

    gamma: float = option(1.0, "discount (seed 003: 1 works well for responses)", bounds="[0, 1]")
    lam: float = option(0.95, "GAE lambda", bounds="[0, 1]")
    clip_eps: float = option(0.2, "policy ratio clip", bounds="(0, inf)")
    vf_coef: float = option(0.1, "value-loss weight", bounds="[0, inf)")
    vf_clip: float = option(0.2, "value clip around the rollout-time values (0 = unclipped)", bounds="[0, inf)")
    critic_learning_rate: float = option(0.0, "critic learning rate (0 = the policy's)", bounds="[0, inf)")
    whiten_rewards: bool = option(False, "scale per-token rewards to unit variance (no mean shift)")
    whiten_advantages: bool = option(True, "normalise advantages to mean 0, std 1 over the rollout")
    target_kl: float = option(0.0, "stop the epochs early when approx_kl > 1.5 x this (0 = off)", bounds="[0, inf)")
    shared_trunk: bool = option(False, "value head on the policy's trunk instead of a separate critic "
                                       "(with lora: the head trains with the adapters; else the critic is a "
                                       "LoRA'd copy of the base model)")


class PPOTrainer(OnlineTrainer):
    """PPO with a separate critic. ``critic``: a ``ValueModel`` (default: initialised from the policy)."""

    name = "ppo"

    def __init__(self, config: PPOConfig, policy, tokenizer, prompts, reward_fn, columns=None, reference=None,
                 generator=None, critic=None):
        if config.shared_trunk and critic is not None:
            raise ValueError("shared_trunk=True puts the value head on the policy: do not pass a critic")
        self._given_critic = critic
        self.joint = None
        self.value_model = None
        self.critic_optimizer = None
        super().__init__(config, policy, tokenizer, prompts, reward_fn, columns, reference, generator)

    # ------------------------------------------------------------------------------------ models
    def setup_critic(self, base_policy):
        if self.config.shared_trunk:
            return
        from ..models.lora import apply_lora_to_trunk
        from ..models.value import ValueModel

        critic = self._given_critic
        if critic is None:
            critic = ValueModel.from_causal_lm(base_policy, pad_token_id=self.tokenizer.pad_token_id)
        critic = critic.to(self.accelerator.device)
        if self.config.lora:
            apply_lora_to_trunk(critic, r=self.config.lora_r, alpha=self.config.lora_alpha)
        if self.config.gradient_checkpointing:
            enable_gradient_checkpointing(critic)
        self.value_model = critic

    def trained_module(self):
        if self.config.shared_trunk:
            from ..models.value import PolicyWithValueHead

            self.joint = PolicyWithValueHead(self.policy)
            return self.joint
        return self.policy

    def prepare_critic(self):
        if self.value_model is None:
            return
        cfg = self.config
        optimizer = build_optimizer(self.value_model, cfg.critic_learning_rate or cfg.learning_rate, cfg.weight_decay,
                                    (cfg.adam_beta1, cfg.adam_beta2), cfg.adam_eps)
        self.critic_model, self.critic_optimizer = self.accelerator.prepare(self.value_model, optimizer)

    def critic(self):
        if self.joint is not None:
            return lambda ids, mask, pos: self.joint(ids, mask, pos).values
        return self.critic_model

    def extra_checkpoint_modules(self):
        if self.joint is not None:
            return {"value_head": (self.joint.value_head, None)}  # its parameters are in the main optimiser
        return {"critic": (self.value_model, self.critic_optimizer)}

    def save_final(self, path: Path) -> None:
        if self.joint is not None:
            self.joint.save_pretrained(str(path))
            self.tokenizer.save_pretrained(str(path))
            return
        super().save_final(path)
        from ..models.lora import merged_trunk_copy

        critic = merged_trunk_copy(self.value_model) if self.config.lora else self.value_model
        critic.save_pretrained(str(path / "critic"))

    def critic_values(self, rollout, rows) -> torch.Tensor:
        """V(s_t) of the separate critic for the response tokens of rows ``rows``: ``[b, R]`` (with grad)."""
        ids, mask, pos = rollout.sequences(rows)
        return self.critic_model(ids, mask, pos)[:, rollout.prompt_ids.shape[1] - 1 : -1]

    def _forward(self, rollout, rows, with_entropy: bool):
        """(log-probs, entropies, values) of the response tokens of rows ``rows``, each ``[b, R]``."""
        if self.joint is not None:  # one trunk pass for logits and values
            p = rollout.prompt_ids.shape[1]
            out = self.model(*rollout.sequences(rows))
            logits = out.logits[:, p - 1 : -1]
            logp = token_logprobs(logits, rollout.response_ids[rows], self.config.temperature)
            entropy = entropy_from_logits(logits, self.config.temperature) if with_entropy else None
            return logp, entropy, out.values[:, p - 1 : -1]
        logp, entropy = policy_forward(self.model, rollout, rows, self.config.temperature, with_entropy)
        return logp, entropy, self.critic_values(rollout, rows)

    # ------------------------------------------------------------------------------------ stages
    def compute_advantages(self, rollout, beta):
        cfg = self.config
        mask = rollout.response_mask
        shaping = beta if (cfg.kl_penalty == "reward" and rollout.kl is not None) else 0.0
        kl = rollout.kl if rollout.kl is not None else torch.zeros_like(rollout.logprobs)
        rewards, non_score = kl_penalised_rewards(rollout.scores.float(), kl, mask, shaping)
        # rewards (score + KL shaping) that hardly differ carry no signal: whatever spread the advantages then
        # have is the critic's noise (trained by Adam on near-zero returns, its values move at full learning rate)
        flat = cfg.whiten_advantages and float(masked_var(rewards, mask)) < ADVANTAGE_MIN_STD**2
        if cfg.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = torch.zeros_like(advantages) if flat else whiten(advantages, mask, shift_mean=True)
        return {"advantages": advantages, "returns": returns, "non_score": non_score, "flat": flat}

    def micro_loss(self, rollout, batch, rows, normalizer, multi):
        cfg = self.config
        mask = rollout.response_mask[rows]
        logp, entropy, values = self._forward(rollout, rows, True)  # entropy is reported even without a bonus
        loss, m = ppo_clip_loss(logp, rollout.logprobs[rows], batch["advantages"][rows], mask, cfg.clip_eps,
                                agg=cfg.loss_agg, normalizer=normalizer, entropy=entropy,
                                entropy_coef=cfg.entropy_coef)
        if cfg.kl_penalty == "loss" and rollout.ref_logprobs is not None:
            kl_loss = aggregate_loss(kl_estimate(logp, rollout.ref_logprobs[rows], cfg.kl_estimator), mask,
                                     cfg.loss_agg, normalizer)
            loss = loss + self.kl_controller.value * kl_loss
            m["kl_loss"] = float(kl_loss.detach())
        v_loss, vm = value_loss(values, batch["returns"][rows], mask, rollout.values[rows], cfg.vf_clip or None,
                                cfg.loss_agg, normalizer)
        vm.pop("explained_variance")  # not a mean over tokens: computed once over the rollout (rollout_fit)
        return loss + cfg.vf_coef * v_loss, {**m, **vm}

    @staticmethod
    def rollout_fit(rollout, batch) -> dict[str, float]:
        """How well the rollout-time values predicted the returns, over the whole rollout (CleanRL's
        explained variance: 1 - Var(R - V) / Var(R) of the batch)."""
        return {"explained_variance": float(explained_variance(rollout.values, batch["returns"],
                                                               rollout.response_mask))}

    def optimizer_steps(self) -> float:
        norm = self.clip_and_step(self.model, self.optimizer, self.scheduler)
        if self.value_model is not None:
            self.clip_and_step(self.critic_model, self.critic_optimizer)
        return norm

    def update(self, rollout, batch):
        cfg = self.config
        if self.value_model is not None:
            self.critic_model.train()
        out = self.run_updates(rollout, batch, self.micro_loss, self.optimizer_steps,
                               early_stop_key="approx_kl", early_stop_above=1.5 * cfg.target_kl)
        out["advantage_std"] = float(batch["advantages"][rollout.response_mask.bool()].std())
        out["advantages_too_flat_to_whiten"] = float(batch["flat"])
        out.update(self.rollout_fit(rollout, batch))
        return out
