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
    with mean shift (``whiten_advantages``); the critic regresses onto the GAE returns;
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

from ..core.kl import kl_estimate, kl_shaped_rewards
from ..core.logprobs import entropy_from_logits, token_logprobs
from ..core.masked import aggregate_loss, whiten
from ..core.policy_loss import ppo_clip_loss
from ..core.returns import gae
from ..core.value_loss import value_loss
from ..training import option
from ..training.loop import NonFiniteLossError
from ..training.optim import build_optimizer, build_scheduler
from .online import OnlineConfig, OnlineTrainer, policy_forward


@dataclass
class PPOConfig(OnlineConfig):
    """PPO settings (see the module docstring for the variant)."""

    gamma: float = option(1.0, "discount (seed 003: 1 works well for responses)")
    lam: float = option(0.95, "GAE lambda")
    clip_eps: float = option(0.2, "policy ratio clip")
    vf_coef: float = option(0.1, "value-loss weight")
    vf_clip: float = option(0.2, "value clip around the rollout-time values (0 = unclipped)")
    critic_learning_rate: float = option(0.0, "critic learning rate (0 = the policy's)")
    whiten_rewards: bool = option(False, "scale per-token rewards to unit variance (no mean shift)")
    whiten_advantages: bool = option(True, "normalise advantages to mean 0, std 1 over the rollout")
    target_kl: float = option(0.0, "stop the epochs early when approx_kl > 1.5 x this (0 = off)")
    shared_trunk: bool = option(False, "value head on the policy's trunk instead of a separate critic")
    update_epochs: int = option(4, "passes over each rollout batch")
    num_minibatches: int = option(2, "optimiser steps per pass")


class PPOTrainer(OnlineTrainer):
    """PPO with a separate critic. ``critic``: a ``ValueModel`` (default: initialised from the policy)."""

    name = "ppo"

    def __init__(self, config: PPOConfig, policy, tokenizer, prompts, reward_fn, columns=None, reference=None,
                 generator=None, critic=None):
        from ..models.value import PolicyWithValueHead, ValueModel

        super().__init__(config, policy, tokenizer, prompts, reward_fn, columns, reference, generator)
        betas = (config.adam_beta1, config.adam_beta2)
        self.joint = None
        if config.shared_trunk:
            if critic is not None:
                raise ValueError("shared_trunk=True puts the value head on the policy: do not pass a critic")
            self.joint = PolicyWithValueHead(self.policy)
            self.value_model = None
            self.critic_optimizer = None
            self.optimizer = build_optimizer(self.joint, config.learning_rate, config.weight_decay, betas,
                                             config.adam_eps)
            self.scheduler = build_scheduler(self.optimizer, config.lr_scheduler, config.warmup_steps,
                                             config.num_steps * config.update_epochs * config.num_minibatches)
            return
        if critic is None:
            critic = ValueModel.from_causal_lm(self.policy, pad_token_id=tokenizer.pad_token_id)
        self.value_model = critic.to(self.accelerator.device)
        self.critic_optimizer = build_optimizer(self.value_model, config.critic_learning_rate or config.learning_rate,
                                                config.weight_decay, betas, config.adam_eps)

    def critic(self):
        if self.joint is not None:
            return lambda ids, mask, pos: self.joint(ids, mask, pos).values
        return self.value_model

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
        self.value_model.save_pretrained(str(path / "critic"))

    def critic_values(self, rollout, micro) -> torch.Tensor:
        """V(s_t) of the separate critic for the response tokens of rows ``micro``: ``[b, R]`` (with grad)."""
        ids, mask, pos = rollout.sequences(micro)
        return self.value_model(ids, mask, pos)[:, rollout.prompt_ids.shape[1] - 1 : -1]

    def _forward(self, rollout, micro, with_entropy: bool):
        """(log-probs, entropies, values) of the response tokens of rows ``micro``, each ``[b, R]``."""
        if self.joint is not None:  # one trunk pass for logits and values
            p = rollout.prompt_ids.shape[1]
            out = self.joint(*rollout.sequences(micro))
            logits = out.logits[:, p - 1 : -1]
            logp = token_logprobs(logits, rollout.response_ids[micro], self.config.temperature)
            entropy = entropy_from_logits(logits, self.config.temperature) if with_entropy else None
            return logp, entropy, out.values[:, p - 1 : -1]
        logp, entropy = policy_forward(self.policy, rollout, micro, self.config.temperature, with_entropy)
        return logp, entropy, self.critic_values(rollout, micro)

    def compute_advantages(self, rollout, beta):
        cfg = self.config
        mask = rollout.response_mask
        shaping = beta if (cfg.kl_penalty == "reward" and rollout.ref_logprobs is not None) else 0.0
        ref = rollout.ref_logprobs if rollout.ref_logprobs is not None else rollout.logprobs
        rewards, non_score = kl_shaped_rewards(rollout.scores.float(), rollout.logprobs, ref, mask, shaping,
                                               cfg.kl_estimator)
        if cfg.whiten_rewards:
            rewards = whiten(rewards, mask, shift_mean=False)
        advantages, returns = gae(rewards, rollout.values, mask, cfg.gamma, cfg.lam)
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask, shift_mean=True)
        return {"advantages": advantages, "returns": returns, "non_score": non_score}

    def update(self, rollout, batch):
        cfg = self.config
        adv, returns = batch["advantages"], batch["returns"]
        want_entropy = True  # entropy is reported for PPO even without a bonus
        beta = self.kl_controller.value
        sums: dict[str, float] = {}
        counted = 0
        self.policy.train()
        (self.joint if self.joint is not None else self.value_model).train()
        stopped_early = 0.0
        for epoch in range(cfg.update_epochs):
            epoch_kl = []
            for minibatch in self.minibatches(len(rollout), epoch):
                rows = torch.cat(minibatch)
                n_tok = float(rollout.response_mask[rows].sum())
                normalizer = n_tok if cfg.loss_agg == "token-mean" else float(len(rows))
                for micro in minibatch:
                    mask = rollout.response_mask[micro]
                    logp, entropy, values = self._forward(rollout, micro, want_entropy)
                    loss, m = ppo_clip_loss(logp, rollout.logprobs[micro], adv[micro], mask, cfg.clip_eps,
                                            agg=cfg.loss_agg, normalizer=normalizer, entropy=entropy,
                                            entropy_coef=cfg.entropy_coef)
                    if cfg.kl_penalty == "loss" and rollout.ref_logprobs is not None:
                        loss = loss + beta * aggregate_loss(
                            kl_estimate(logp, rollout.ref_logprobs[micro], cfg.kl_estimator), mask, cfg.loss_agg,
                            normalizer)
                    v_loss, vm = value_loss(values, returns[micro], mask, rollout.values[micro],
                                            cfg.vf_clip or None, cfg.loss_agg, normalizer)
                    total = loss + cfg.vf_coef * v_loss
                    if not torch.isfinite(total):
                        raise NonFiniteLossError(f"step {self.step + 1}: PPO loss is {total.item()}")
                    total.backward()
                    for k, v in {**m, **vm}.items():
                        sums[k] = sums.get(k, 0.0) + v
                    counted += 1
                    epoch_kl.append(m["approx_kl"])
                if self.joint is not None:
                    sums["grad_norm"] = self.optimizer_step(self.optimizer, self.scheduler, self.joint.parameters())
                else:
                    sums["grad_norm"] = self.optimizer_step(self.optimizer, self.scheduler, self.policy.parameters())
                    self.optimizer_step(self.critic_optimizer, None, self.value_model.parameters())
            if cfg.target_kl and sum(epoch_kl) / len(epoch_kl) > 1.5 * cfg.target_kl:
                stopped_early = float(epoch + 1)
                break
        out = {k: v / counted for k, v in sums.items() if k != "grad_norm"}
        out["grad_norm"] = sums.get("grad_norm", 0.0)
        out["early_stop_epoch"] = stopped_early
        out["advantage_std"] = float(adv[rollout.response_mask.bool()].std())
        return out
