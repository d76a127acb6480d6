"""The online RL loop shared by REINFORCE (vanilla / RLOO / GRPO), PPO and TRPO.

Objective (seeds 000 and 003): maximise E_{y ~ pi}[ r(x, y) ] - beta * KL(pi || pi_ref). One step:

    generate -> score -> reference log-probs -> values      (alignkit.rollout.collect_rollout, timed)
    advantages                                              (method: compute_advantages)
    policy update [-> critic update]                        (method: update)
    KL controller update -> log -> checkpoint

Named choices shared by every online trainer (the method files add their own):
  * ``kl_penalty``: "reward" puts -beta * KL_t into the per-token reward (Ziegler et al. 2019), "loss"
    adds beta * KL (estimator ``kl_estimator``) to the loss (GRPO), "none" drops it;
  * the KL coefficient is fixed or adaptive (``adaptive_kl``; Ziegler et al. 2019 proportional rule);
  * sampling noise is seeded per step (seed, step), so a resumed run samples what the original would have;
  * a non-finite score or loss stops the run before any checkpoint is written (or, with
    ``on_nonfinite="skip"``, the step's update is skipped and counted).
"""

from __future__ import annotations

import json
import math
import time
from abc import ABC, abstractmethod
from contextlib import contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import torch

from ..core.kl import KL_ESTIMATORS, AdaptiveKLController, FixedKLController
from ..core.logprobs import entropy_from_logits, token_logprobs
from ..core.masked import LOSS_AGGREGATION_MODES, masked_mean
from ..generation import KVCacheGenerator, SamplingParams
from ..rewards.base import InvalidRewardError
from ..rollout import Rollout, collect_rollout, response_token_logits
from ..training import option
from ..training.batching import EpochBatcher
from ..training.checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from ..training.loop import NonFiniteLossError, seed_everything
from ..training.metrics import MetricsLogger
from ..training.optim import build_optimizer, build_scheduler
from ..training.report import append_samples, write_report


@dataclass
class OnlineConfig:
    """Settings shared by the online trainers."""

    output_dir: str = option("runs/alignkit-online", "run directory: metrics, checkpoints, final model")
    seed: int = option(0, "seed for prompt order and sampling")
    num_steps: int = option(100, "rollout + update iterations")
    prompts_per_step: int = option(8, "prompts sampled per step")
    samples_per_prompt: int = option(4, "completions per prompt (n); leave-one-out and GRPO need >= 2")
    max_new_tokens: int = option(32, "longest completion")
    min_new_tokens: int = option(0, "EOS forbidden before this many tokens")
    temperature: float = option(1.0, "sampling temperature (log-probs are computed at the same temperature)")
    top_k: int = option(0, "top-k sampling (0 = off); note: the policy gradient assumes untruncated sampling")
    top_p: float = option(1.0, "nucleus sampling (1 = off)")
    max_prompt_length: int = option(0, "longest prompt in tokens (0 = no limit)")
    prompt_truncation: str = option("error", "longer prompts: error or keep the end", choices=("error", "left"))
    missing_eos_penalty: float = option(float("nan"), "score given to completions without EOS (nan = off)")
    learning_rate: float = option(1e-5, "policy learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_eps: float = option(1e-8, "AdamW epsilon")
    lr_scheduler: str = option("constant", "schedule after warmup", choices=("linear", "cosine", "constant"))
    warmup_steps: int = option(0, "linear warmup steps")
    max_grad_norm: float = option(1.0, "gradient clipping (0 = off)")
    update_epochs: int = option(1, "passes over each rollout batch")
    num_minibatches: int = option(1, "optimiser steps per pass over the rollout batch")
    grad_accum_steps: int = option(1, "micro-batches per optimiser step")
    kl_coef: float = option(0.05, "beta: weight of KL(pi || pi_ref)")
    kl_penalty: str = option("reward", "where the KL goes", choices=("reward", "loss", "none"))
    kl_estimator: str = option("k1", "per-token KL estimator", choices=KL_ESTIMATORS)
    adaptive_kl: bool = option(False, "adapt beta towards kl_target (Ziegler et al. 2019)")
    kl_target: float = option(6.0, "target sequence KL for the adaptive controller")
    kl_horizon: int = option(10000, "horizon of the adaptive controller")
    loss_agg: str = option("token-mean", "loss aggregation", choices=LOSS_AGGREGATION_MODES)
    entropy_coef: float = option(0.0, "entropy bonus weight")
    forward_batch_size: int = option(0, "micro-batch for log-prob/value forwards in the rollout (0 = all)")
    on_nonfinite: str = option("raise", "non-finite score/loss: stop, or skip the update and count it",
                               choices=("raise", "skip"))
    logging_steps: int = option(1, "log every this many steps")
    num_samples: int = option(4, "completions of each logged step written to samples.jsonl (and report.html)")
    save_steps: int = option(0, "checkpoint every this many steps (0 = final model only)")
    save_total_limit: int = option(2, "checkpoints kept")
    resume_from: str = option("", "checkpoint directory or 'latest'")
    tensorboard: bool = option(True, "TensorBoard events too")
    progress: bool = option(True, "progress bar")

    @property
    def rollout_size(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt

    def validate(self) -> None:
        for name in ("num_steps", "prompts_per_step", "samples_per_prompt", "max_new_tokens", "update_epochs",
                     "num_minibatches", "grad_accum_steps", "logging_steps", "save_total_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {self.num_samples}")
        per_update = self.num_minibatches * self.grad_accum_steps
        if per_update > self.rollout_size:
            raise ValueError(
                f"num_minibatches x grad_accum_steps = {per_update} exceeds the rollout batch "
                f"(prompts_per_step x samples_per_prompt = {self.rollout_size}): a minibatch would be empty"
            )
        if self.rollout_size % per_update:
            raise ValueError(f"the rollout batch ({self.rollout_size}) must divide into num_minibatches x "
                             f"grad_accum_steps = {per_update} equal micro-batches")
        if self.kl_coef < 0 or not math.isfinite(self.kl_coef):
            raise ValueError(f"kl_coef must be a finite number >= 0, got {self.kl_coef}")
        choices = {f.name: f.metadata.get("choices") for f in fields(self) if f.metadata.get("choices")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {tuple(allowed)}, got {getattr(self, name)!r}")
        SamplingParams(max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
                       temperature=self.temperature, top_k=self.top_k, top_p=self.top_p, n=self.samples_per_prompt)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def response_logits(policy, rollout: Rollout, index: torch.Tensor) -> torch.Tensor:
    """Logits scoring each response token of rows ``index``: ``[b, R, V]`` (position P - 1 + t scores token t)."""
    ids, mask, pos = rollout.sequences(index)
    return response_token_logits(policy, ids, mask, pos, rollout.response_ids.shape[1])


def policy_forward(policy, rollout: Rollout, index: torch.Tensor, temperature: float, with_entropy: bool
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs (and entropies) of the rollout's response tokens ``[b, R]`` for rows ``index``, with grad."""
    logits = response_logits(policy, rollout, index)
    logp = token_logprobs(logits, rollout.response_ids[index], temperature)
    entropy = entropy_from_logits(logits, temperature) if with_entropy else None
    return logp, entropy


class OnlineTrainer(ABC):
    """Base of the online trainers. Subclasses implement ``compute_advantages`` and ``update``.

    Args:
        config: an :class:`OnlineConfig` (or subclass).
        policy: the causal LM to train (dropout must be off: ``alignkit.models.load_causal_lm`` does that).
        tokenizer: its tokenizer (pad and EOS ids are read from it).
        prompts: training prompts (strings).
        reward_fn: ``(prompts, completions, **columns) -> list[float]`` (alignkit.rewards).
        columns: per-prompt extra columns for the reward function (e.g. GSM8K answers).
        reference: reference policy; default a frozen copy (or the adapter-disabled LoRA base).
        generator: a ``Generator``; default the KV-cache engine on the policy.
    """

    name = "online"

    def __init__(self, config: OnlineConfig, policy: torch.nn.Module, tokenizer, prompts: list[str], reward_fn,
                 columns: dict[str, list] | None = None, reference=None, generator=None):
        from accelerate import Accelerator

        from ..models.reference import make_reference

        config.validate()
        self.accelerator = Accelerator()
        if self.accelerator.num_processes > 1:
            raise ValueError("the online trainers run in one process for now (generation is not sharded yet); "
                             "launch without accelerate/torchrun")
        self.config = config
        self.tokenizer = tokenizer
        if not prompts:
            raise ValueError("no training prompts given")
        self.prompts = list(prompts)
        self.columns = {k: list(v) for k, v in (columns or {}).items()}
        for name, values in self.columns.items():
            if len(values) != len(self.prompts):
                raise ValueError(f"column {name!r} has {len(values)} values for {len(self.prompts)} prompts")
        self.reward_fn = reward_fn
        self.policy = policy.to(self.accelerator.device)
        self.reference = reference
        if self.reference is None and config.kl_penalty != "none":
            self.reference = make_reference(self.policy)
        self.generator = generator or KVCacheGenerator(self.policy, tokenizer.eos_token_id, tokenizer.pad_token_id)
        self.optimizer = build_optimizer(self.policy, config.learning_rate, config.weight_decay,
                                         (config.adam_beta1, config.adam_beta2), config.adam_eps)
        self.scheduler = build_scheduler(self.optimizer, config.lr_scheduler, config.warmup_steps,
                                         config.num_steps * config.update_epochs * config.num_minibatches)
        self.kl_controller = (AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
                              if config.adaptive_kl else FixedKLController(config.kl_coef))
        self.batcher = EpochBatcher(len(self.prompts), config.prompts_per_step, config.seed)
        self.run_dir = Path(config.output_dir)
        self.step = 0
        self.skipped_updates = 0
        self.history: list[dict] = []
        self.logger = MetricsLogger(self.run_dir, tensorboard=config.tensorboard, progress_total=config.num_steps,
                                    progress=config.progress)
        self._times: dict[str, float] = {}
        self.fused_forward: tuple[torch.Tensor, torch.Tensor | None] | None = None  # see fuses_policy_forward

    # ------------------------------------------------------------------------------------ hooks
    def critic(self):
        """``(ids, mask, pos) -> [N, L]`` values for the rollout, or None (no critic)."""
        return None

    @abstractmethod
    def compute_advantages(self, rollout: Rollout, beta: float) -> dict[str, torch.Tensor]:
        """Advantages (and returns, for a critic) of this rollout."""

    @abstractmethod
    def update(self, rollout: Rollout, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Update the policy (and critic) on the rollout; returns metrics."""

    def fuses_policy_forward(self) -> bool:
        """True when ``update`` makes a single on-policy optimiser step on one micro-batch holding the whole
        rollout. Then the rollout's policy log-probs are taken from that step's own forward pass (with grad,
        training mode, fp32, same temperature) instead of a separate no-grad forward: the same numbers, one
        forward fewer per step. ``update`` finds the pass in ``self.fused_forward``."""
        return False

    def extra_checkpoint_modules(self) -> dict:
        """``{name: (module, optimizer)}`` saved with checkpoints (e.g. the critic)."""
        return {}

    def save_final(self, path: Path) -> None:
        self.policy.save_pretrained(str(path), safe_serialization=True)
        self.tokenizer.save_pretrained(str(path))

    # ------------------------------------------------------------------------------------ helpers
    @contextmanager
    def timed(self, stage: str):
        start = time.perf_counter()
        yield
        self._times[f"time/{stage}_s"] = time.perf_counter() - start

    def minibatches(self, n: int, epoch: int) -> list[list[torch.Tensor]]:
        """Per optimiser step, a list of micro-batch index tensors; shuffled per (step, epoch)."""
        cfg = self.config
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step * 101 + epoch)
        order = torch.randperm(n, generator=g)
        per_step = n // cfg.num_minibatches
        micro = per_step // cfg.grad_accum_steps
        return [[order[s + m : s + m + micro] for m in range(0, per_step, micro)] for s in range(0, n, per_step)]

    def optimizer_step(self, optimizer, scheduler, params) -> float:
        """Clip, step, zero. Returns the pre-clip gradient norm."""
        norm = torch.nn.utils.clip_grad_norm_(params, self.config.max_grad_norm if self.config.max_grad_norm > 0
                                              else float("inf"))
        if not torch.isfinite(norm):
            raise NonFiniteLossError(f"step {self.step + 1}: gradient norm is {float(norm)}")
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(norm)

    # ------------------------------------------------------------------------------------ loop
    def sampling(self) -> SamplingParams:
        cfg = self.config
        return SamplingParams(max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.min_new_tokens,
                              temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                              n=cfg.samples_per_prompt, seed=cfg.seed * 1_000_003 + self.step)

    def rollout(self) -> Rollout:
        cfg = self.config
        idx = self.batcher.next_batch()
        prompts = [self.prompts[i] for i in idx]
        columns = {k: [v[i] for i in idx] for k, v in self.columns.items()}
        penalty = None if math.isnan(cfg.missing_eos_penalty) else cfg.missing_eos_penalty
        fused = self.fuses_policy_forward()
        rollout = collect_rollout(prompts, self.tokenizer, self.generator, self.reward_fn, self.policy,
                                  self.sampling(), reference=self.reference, critic=self.critic(), columns=columns,
                                  missing_eos_penalty=penalty, max_prompt_length=cfg.max_prompt_length or None,
                                  prompt_truncation=cfg.prompt_truncation,
                                  forward_batch_size=cfg.forward_batch_size or None, policy_logprobs=not fused)
        if fused:
            start = time.perf_counter()
            self.policy.train()
            logp, entropy = policy_forward(self.policy, rollout, torch.arange(len(rollout)), cfg.temperature,
                                           cfg.entropy_coef != 0.0)
            self.fused_forward = (logp, entropy)
            rollout.set_policy_logprobs(logp.detach())
            rollout.stats["time/policy_logprobs_s"] = time.perf_counter() - start
        return rollout

    def rollout_metrics(self, rollout: Rollout, beta: float) -> dict[str, float]:
        m = rollout.response_mask.float()
        metrics = {
            "score": rollout.stats["score_mean"],
            "score_std": float(rollout.scores.std()) if len(rollout) > 1 else 0.0,
            "response_length": rollout.stats["response_length_mean"],  # computed once, by collect_rollout
            "eos_rate": rollout.stats["eos_rate"],
            "kl_coef": beta,
        }
        if rollout.ref_logprobs is not None:
            seq_kl = ((rollout.logprobs - rollout.ref_logprobs) * m).sum(-1)  # k1, summed over tokens
            metrics["kl"] = float(seq_kl.mean())
            metrics["non_score_reward"] = -beta * metrics["kl"]
        metrics["sampler_logprob_drift"] = rollout.stats.get("sampler_logprob_max_abs_diff", 0.0)
        metrics["entropy_proxy"] = float(-masked_mean(rollout.logprobs, m))  # mean -log pi of sampled tokens
        return metrics

    def train(self, stop_after: int | None = None) -> list[dict]:
        cfg = self.config
        seed_everything(cfg.seed)
        resume = resolve_resume(cfg.resume_from, self.run_dir)
        if resume is not None:
            state = load_checkpoint(resume, self.policy, self.optimizer, self.scheduler,
                                    extras=self.extra_checkpoint_modules())
            self.step = int(state["step"])
            self.batcher.load_state_dict(state["data"])
            self.kl_controller.load_state_dict(state["trainer"]["kl_controller"])
            self.skipped_updates = int(state["trainer"].get("skipped_updates", 0))
            self.logger.advance(self.step)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.json").write_text(json.dumps({"trainer": self.name, **cfg.to_dict()}, indent=2))
        while self.step < cfg.num_steps:
            self._times = {}
            beta = self.kl_controller.value
            start = time.perf_counter()
            try:
                rollout = self.rollout()
            except InvalidRewardError:
                if cfg.on_nonfinite == "raise":
                    raise
                self.skipped_updates += 1  # the batch is consumed and counted, no update is made
                self.step += 1
                self.logger.log(self.step, {"skipped_updates": float(self.skipped_updates)})
                continue
            metrics = self.rollout_metrics(rollout, beta)
            with self.timed("advantages"):
                batch = self.compute_advantages(rollout, beta)
            try:
                metrics.update(self.update(rollout, batch))
            except NonFiniteLossError:
                if cfg.on_nonfinite == "raise":
                    raise
                self.skipped_updates += 1
                self.optimizer.zero_grad(set_to_none=True)
            finally:
                self.fused_forward = None  # frees the graph of a fused forward
            if "kl" in metrics:
                self.kl_controller.update(metrics["kl"], cfg.rollout_size)
            self.step += 1
            metrics.update({k: v for k, v in rollout.stats.items() if k.startswith("time/")})
            metrics.update(self._times)
            metrics["time/step_s"] = time.perf_counter() - start
            metrics["skipped_updates"] = float(self.skipped_updates)
            self.history.append({"step": self.step, **metrics})
            if self.step % cfg.logging_steps == 0 or self.step == cfg.num_steps:
                self.logger.log(self.step, metrics)
                self.log_samples(rollout)
            if cfg.save_steps and self.step % cfg.save_steps == 0:
                save_checkpoint(self.run_dir, self.step, self.policy, self.optimizer, self.scheduler,
                                {"data": self.batcher.state_dict(),
                                 "trainer": {"kl_controller": self.kl_controller.state_dict(),
                                             "skipped_updates": self.skipped_updates}},
                                keep=cfg.save_total_limit, extras=self.extra_checkpoint_modules())
            self.logger.advance()
            if stop_after is not None and self.step >= stop_after:
                self.logger.close()
                return self.history
        self.save_final(self.run_dir / "final")
        self.logger.close()
        write_report(self.run_dir, title=f"alignkit {self.name}: {self.run_dir.resolve().name}")
        return self.history

    def log_samples(self, rollout: Rollout) -> None:
        """The first ``num_samples`` (prompt, completion, score) of this step's rollout -> samples.jsonl."""
        k = min(self.config.num_samples, len(rollout))
        append_samples(self.run_dir, self.step, [
            {"prompt": rollout.prompts[i], "completion": rollout.completions[i], "score": float(rollout.scores[i]),
             "finished": bool(rollout.finished[i])} for i in range(k)])
