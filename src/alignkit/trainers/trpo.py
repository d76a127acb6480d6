"""TRPO for language models: a KL-constrained natural-gradient step on the policy, a regressed critic.

Variant (seed 002 "Trust Region Policy Optimization"; seed 004; Schulman et al. 2015, appendix C):
  * rewards, critic, GAE and advantage whitening exactly as PPO (this trainer reuses PPO's stages);
  * policy step: maximise the surrogate L(theta) = mean_t [ pi_theta(a_t|s_t) / pi_old(a_t|s_t) * A_t ] over
    response tokens subject to mean_t KL(pi_old(.|s_t) || pi_theta(.|s_t)) <= delta (the *full* next-token
    distributions, not a sampled estimate), solved by ``alignkit.core.trpo_step``: conjugate gradient on
    Fisher-vector products (Hessian of the mean KL by double backprop), a step scaled to the quadratic
    model's boundary, then a backtracking line search that accepts a step only if the actual KL <= delta
    and the surrogate improves; otherwise the policy is left unchanged;
  * one policy step per rollout; the critic regresses onto the returns with Adam (``update_epochs`` x
    ``num_minibatches``).
Cost per step (on top of PPO's rollout): one forward for pi_old's full distributions (kept: N x R x V
floats), one backward for g, one double-backward graph, ``cg_iters`` Hessian-vector products (each about
a backward pass) and up to ``max_backtracks`` forward passes. With V = 32k and R = 512 the stored
distributions alone are 64 MiB per sequence: TRPO suits small models, short responses or few sequences.
Attention runs in the "eager" implementation, whose double backward is supported everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.masked import masked_sum
from ..core.trust_region import trpo_step
from ..core.value_loss import value_loss
from ..training.config import option
from ..training.loop import NonFiniteLossError
from .online import policy_forward, response_logits
from .ppo import PPOConfig, PPOTrainer


@dataclass
class TRPOConfig(PPOConfig):
    """TRPO settings (see the module docstring for the variant)."""

    max_kl: float = option(0.01, "trust-region radius delta on the mean per-token KL(pi_old || pi)", bounds="(0, inf)")
    damping: float = option(0.1, "Fisher damping lambda in (F + lambda I) x = g", bounds="[0, inf)")
    cg_iters: int = option(10, "conjugate-gradient iterations", bounds="[1, inf)")
    max_backtracks: int = option(10, "line-search halvings before the step is rejected", bounds="[0, inf)")
    accept_ratio: float = option(0.0, "minimum actual / predicted improvement to accept a step", bounds="[0, inf)")

    def validate(self, world_size: int = 1) -> None:
        super().validate(world_size)
        if not self.max_kl > 0:
            raise ValueError(f"max_kl must be > 0, got {self.max_kl}")
        if self.shared_trunk:
            raise ValueError("TRPO needs a separate critic (shared_trunk=False): its policy step must not move "
                             "the value head's trunk")
        if self.kl_penalty == "loss" and self.uses_reference:
            raise ValueError("kl_penalty='loss' is not a TRPO setting: TRPO's step maximises the surrogate under "
                             "the trust region and has no loss term to add the KL to; use kl_penalty='reward' (the "
                             "KL-shaped reward) or 'none'")
        if self.damping < 0 or self.cg_iters < 1 or self.max_backtracks < 1:
            raise ValueError("damping must be >= 0, cg_iters and max_backtracks >= 1")


class TRPOTrainer(PPOTrainer):
    name = "trpo"

    def __init__(self, config: TRPOConfig, policy, tokenizer, prompts, reward_fn, **kwargs):
        if hasattr(policy, "set_attn_implementation"):
            policy.set_attn_implementation("eager")
        super().__init__(config, policy, tokenizer, prompts, reward_fn, **kwargs)
        if self.sharded:
            raise ValueError("TRPO's flat natural-gradient step needs whole parameters on every process: use DDP "
                             "(plain accelerate launch / torchrun), not FSDP or DeepSpeed")

    def _logits(self, rollout, rows):
        return response_logits(self.policy, rollout, rows).float() / self.config.temperature

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum over processes (identity with one)."""
        if self.world_size == 1:
            return t
        return self.accelerator.reduce(t.contiguous(), reduction="sum")

    def update(self, rollout, batch):
        """One natural-gradient step on this process's rows (the whole rollout split over processes): the
        surrogate and KL are the rows' sums over the *global* token count, and ``trpo_step`` sums gradients,
        Fisher-vector products and line-search values over processes (the unwrapped policy is used: DDP's
        gradient hooks do not apply to ``autograd.grad``)."""
        cfg = self.config
        adv = batch["advantages"]
        rows = self.my_rows(torch.arange(len(rollout)))
        mask = rollout.response_mask[rows]
        count = float(rollout.response_mask.sum())
        old_logp = rollout.logprobs[rows]
        self.policy.train()
        with torch.no_grad(), self.autocast():
            old_logp_full = torch.log_softmax(self._logits(rollout, rows), -1)  # [n, R, V] of pi_old

        def surrogate():
            with self.autocast():
                logp, _ = policy_forward(self.policy, rollout, rows, cfg.temperature, False)
            return masked_sum(torch.exp(logp.float() - old_logp) * adv[rows], mask) / count

        def mean_kl():
            with self.autocast():
                new_logp_full = torch.log_softmax(self._logits(rollout, rows), -1)
            kl = (old_logp_full.exp() * (old_logp_full - new_logp_full)).sum(-1)  # KL(pi_old || pi) per token
            return masked_sum(kl, mask) / count

        params = [p for p in self.policy.parameters() if p.requires_grad]
        with self.timed("policy_step"):
            metrics = trpo_step(params, surrogate, mean_kl, max_kl=cfg.max_kl, damping=cfg.damping,
                                cg_iters=cfg.cg_iters, max_backtracks=cfg.max_backtracks,
                                accept_ratio=cfg.accept_ratio, all_reduce=self.all_reduce_sum)
        self.policy.zero_grad(set_to_none=True)
        if not all(map(torch.isfinite, (torch.tensor(metrics["kl"]), torch.tensor(metrics["surrogate_after"])))):
            raise NonFiniteLossError(f"step {self.step + 1}: TRPO produced a non-finite KL or surrogate")
        out = {f"trpo/{k}": float(v) for k, v in metrics.items()}
        out.update(self._update_critic(rollout, batch))
        return out

    def critic_loss(self, rollout, batch, rows, normalizer, multi):
        """The critic's regression loss on this process's ``rows`` (token mean over the global minibatch)."""
        loss, metrics = value_loss(self.critic_values(rollout, rows), batch["returns"][rows],
                                   rollout.response_mask[rows], rollout.values[rows], self.config.vf_clip or None,
                                   "token-mean", normalizer)
        metrics.pop("explained_variance")  # computed once over the rollout (rollout_fit)
        return loss, metrics

    def _update_critic(self, rollout, batch) -> dict[str, float]:
        out = self.run_updates(rollout, batch, self.critic_loss,
                               lambda: self.clip_and_step(self.critic_model, self.critic_optimizer),
                               model=self.critic_model, loss_agg="token-mean")
        out.pop("early_stop_epoch", None)
        out["critic_grad_norm"] = out.pop("grad_norm")
        out.update(self.rollout_fit(rollout, batch))
        return out
