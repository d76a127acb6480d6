"""REINFORCE / vanilla policy gradient with baselines: vanilla, batch or per-prompt mean, RLOO, GRPO.

Variant (seed 003 "The Vanilla Policy Gradient Algorithm (with baseline)"; seed 004 "Language models as
policies"):
  * sequence reward R(x, y) = r(x, y) - beta * sum_t KL_t with ``kl_penalty="reward"`` (seed 000's r_s);
    with ``kl_penalty="loss"`` R = r and beta * agg(KL_t) is added to the loss (as GRPO does; the estimator is
    ``kl_estimator``, k1 by default, k3 in the GRPO preset ``configs/grpo_gsm8k.yaml``); ``"none"`` drops it;
  * advantage A = R - b with the baseline b named by ``baseline``: none, batch mean, per-prompt mean,
    leave-one-out (RLOO; Kool et al. 2019, Ahmadian et al. 2024), group-normalised (GRPO; Shao et al.
    2024) or group-centred without the std (Dr. GRPO); the same A for every token of the response
    (the *total* reward, not reward-to-go: the vanilla estimator of the seeds);
  * loss: -A * sum_t log pi(a_t|s_t), aggregated by ``loss_agg`` (default ``seq-mean-token-sum``: exactly
    the estimator 1/n sum_i A_i grad log pi(y_i|x));
  * one optimiser step per rollout by default (on-policy); the rollout's policy log-probs (for the KL and
    the metrics) are then read from that step's own forward pass instead of a separate one (TRL's GRPO
    does the same with one iteration per batch). With ``update_epochs`` or ``num_minibatches``
    > 1 the later updates are off-policy, so the loss becomes the clipped importance-weighted surrogate
    (PPO-clip with ``clip_eps``), which has the same gradient at ratio 1 (GRPO's choice).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..core.baselines import BASELINES, compute_baseline_advantages
from ..core.kl import kl_estimate
from ..core.masked import aggregate_loss
from ..core.policy_loss import ppo_clip_loss, reinforce_loss
from ..training.config import option, with_defaults
from .online import OnlineConfig, OnlineTrainer, policy_forward

REINFORCE_LOSS_AGGREGATION = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


@dataclass
@with_defaults(loss_agg="seq-mean-token-sum")
class ReinforceConfig(OnlineConfig):
    """REINFORCE-family settings (see the module docstring for the variant)."""

    baseline: str = option("loo", "baseline subtracted from the sequence reward", choices=BASELINES)
    clip_eps: float = option(0.2, "ratio clip used when a rollout is reused for several updates", bounds="(0, inf)")

    def validate(self, world_size: int = 1) -> None:
        super().validate(world_size)
        if self.loss_agg not in REINFORCE_LOSS_AGGREGATION:
            raise ValueError(f"loss_agg must be one of {REINFORCE_LOSS_AGGREGATION} for REINFORCE, "
                             f"got {self.loss_agg!r}")
        if self.baseline in ("loo", "grpo") and self.samples_per_prompt < 2:
            raise ValueError(f"baseline={self.baseline!r} needs samples_per_prompt >= 2, "
                             f"got {self.samples_per_prompt}")


class ReinforceTrainer(OnlineTrainer):
    name = "reinforce"

    def fuses_policy_forward(self) -> bool:
        cfg = self.config
        return cfg.update_epochs == 1 and cfg.num_minibatches == 1 and cfg.grad_accum_steps == 1

    def compute_advantages(self, rollout, beta):
        total = rollout.scores.float()
        if self.config.kl_penalty == "reward" and rollout.kl is not None:
            total = total - beta * rollout.kl.sum(-1)
        adv = compute_baseline_advantages(total, rollout.group_ids, self.config.baseline)
        return {"advantages": adv, "total_reward": total}

    def micro_loss(self, rollout, batch, rows, normalizer, multi):
        cfg = self.config
        adv = batch["advantages"]
        mask = rollout.response_mask[rows]
        if self.fused_forward is not None:  # the rollout's own forward of this process's rows
            logp, entropy = self.fused_rows(rows)
        else:
            logp, entropy = policy_forward(self.model, rollout, rows, cfg.temperature, cfg.entropy_coef != 0.0)
        if multi:
            loss, m = ppo_clip_loss(logp, rollout.logprobs[rows], adv[rows], mask, cfg.clip_eps, agg=cfg.loss_agg,
                                    normalizer=normalizer, entropy=entropy, entropy_coef=cfg.entropy_coef)
        else:
            loss, m = reinforce_loss(logp, adv[rows], mask, cfg.loss_agg, normalizer, entropy, cfg.entropy_coef)
        if cfg.kl_penalty == "loss" and rollout.ref_logprobs is not None:
            kl_loss = aggregate_loss(kl_estimate(logp, rollout.ref_logprobs[rows], cfg.kl_estimator), mask,
                                     cfg.loss_agg, normalizer)
            loss = loss + self.kl_controller.value * kl_loss
            m["kl_loss"] = float(kl_loss.detach())
        return loss, m

    def update(self, rollout, batch):
        out = super().update(rollout, batch)
        out.pop("early_stop_epoch", None)
        out["advantage_mean"] = float(batch["advantages"].mean())
        out["total_reward"] = float(batch["total_reward"].mean())
        return out
