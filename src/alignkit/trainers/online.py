"""The online half of the one loop: REINFORCE (vanilla / RLOO / GRPO), PPO and TRPO.

Objective (seeds 000 and 003): maximise E_{y ~ pi}[ r(x, y) ] - beta * KL(pi || pi_ref). One step
(``OnlineTrainer.training_step``, run by :class:`~alignkit.training.loop.TrainingLoop`, which owns seeding,
resume, logging, the non-finite policy, checkpoints, the final save and the report):

    generate -> score -> policy / reference log-probs -> values   (alignkit.rollout.collect_rollout, timed)
    gather the processes' shares into the step's whole rollout     (every process holds all of it)
    advantages                                                    (method: compute_advantages, timed)
    update: epochs x minibatches x micro-batches, clip, step      (method: update, timed; one skeleton)
    refresh the sampler's weights -> KL controller

Distribution (``accelerate launch`` / ``torchrun``; N processes give what one process gives with the same
global batch):
  * each process samples and scores ``prompts_per_step / N`` whole prompts (a prompt's group never straddles
    processes); sampling noise is keyed by (seed, step, global prompt index, sample index), so the sampled
    tokens do not depend on N;
  * the shares are gathered (token ids and per-token floats: small beside the model), so every statistic
    that spans the batch (whitening moments, batch-mean baseline, the KL controller's observed KL, logged
    metrics) is computed on the whole batch, identically on every process;
  * each micro-batch of the update is split over the processes; each loss is its rows' sum divided by the
    *global* micro-batch's normaliser, and DDP's gradient mean is multiplied back by N: the gradient of the
    whole micro-batch.

Named choices shared by every online trainer (the method files add their own):
  * ``kl_penalty``: "reward" puts -beta * KL_t into the per-token reward (Ziegler et al. 2019), "loss"
    adds beta * KL (estimator ``kl_estimator``) to the loss (GRPO), "none" drops it;
  * the KL coefficient is fixed or adaptive (``adaptive_kl``; Ziegler et al. 2019 proportional rule); with
    ``kl_coef = 0`` and no adaptive controller no reference model is built or run (pass ``reference=`` to
    monitor the KL anyway);
  * the rollout's per-token KL is computed once (``Rollout.set_kl``) and every stage reads it; the logged
    ``non_score_reward`` is the KL part of the rewards actually used (0 when the KL is not in the reward);
  * LoRA (``lora``): the policy trains adapters, pi_ref is the same model with its adapters disabled;
  * ``mixed_precision="bf16"``: forwards under bf16 autocast (fp32 weights and optimiser), and sampling from
    a bf16 copy of the policy refreshed after every update (``Generator.update_weights``);
  * a non-finite score or loss stops the run before any checkpoint is written (or, with
    ``on_nonfinite="skip"``, the step's update is skipped and counted), on every process alike.
"""

from __future__ import annotations

import math
import time
from abc import abstractmethod
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.kl import KL_ESTIMATORS, AdaptiveKLController, FixedKLController
from ..core.logprobs import entropy_from_logits, token_logprobs
from ..core.masked import LOSS_AGGREGATION_MODES, masked_mean
from ..generation import SamplingParams, make_generator
from ..models.forward import response_token_logits
from ..rewards.base import InvalidRewardError
from ..rollout import Rollout, check_prompt_columns, collect_rollout
from ..training.batching import EpochBatcher
from ..training.config import RunConfig, SamplingConfig, option, with_defaults
from ..training.distributed import gather_objects, process_share
from ..training.loop import NonFiniteLossError, TrainingLoop, prepare_trainable
from ..training.optim import build_optimizer, build_scheduler
from ..training.report import append_samples

# How a micro-batch's metric combines over the processes' shares of it: losses are sums over rows divided by
# the global normaliser (summed); ratio extremes take the min / max; every other metric is a mean over the
# share's response tokens (weighted by the share's token count).
ADDITIVE_METRICS = ("policy_loss", "value_loss", "kl_loss")
EXTREME_METRICS = {"ratio_min": "min", "ratio_max": "max"}


@dataclass
@with_defaults(output_dir="runs/alignkit-online", lr_scheduler="constant", max_new_tokens=32)
class OnlineConfig(RunConfig, SamplingConfig):
    """Settings shared by the online trainers (the shared training fields come from ``RunConfig``)."""

    max_steps: int = option(100, "steps: rollout + update iterations (the offline trainers' word too)",
                            bounds="[1, inf)")
    num_steps: int = option(0, "deprecated alias of max_steps (0 = not given); kept for old presets and scripts",
                            bounds="[0, inf)")
    prompts_per_step: int = option(8, "prompts sampled per step, over all processes", bounds="[1, inf)")
    samples_per_prompt: int = option(4, "completions per prompt (n); leave-one-out and GRPO need >= 2",
                                     bounds="[1, inf)")
    missing_eos_penalty: float = option(float("nan"), "score given to completions without EOS (nan = off)")
    update_epochs: int = option(1, "passes over each rollout batch", bounds="[1, inf)")
    num_minibatches: int = option(1, "optimiser steps per pass over the rollout batch", bounds="[1, inf)")
    kl_coef: float = option(0.05, "beta: weight of KL(pi || pi_ref)", bounds="[0, inf)")
    kl_penalty: str = option("reward", "where the KL goes", choices=("reward", "loss", "none"))
    kl_estimator: str = option("k1", "per-token KL estimator", choices=KL_ESTIMATORS)
    adaptive_kl: bool = option(False, "adapt beta towards kl_target (Ziegler et al. 2019)")
    kl_target: float = option(6.0, "target sequence KL for the adaptive controller", bounds="(0, inf)")
    kl_horizon: int = option(10000, "horizon of the adaptive controller", bounds="[1, inf)")
    loss_agg: str = option("token-mean", "loss aggregation", choices=LOSS_AGGREGATION_MODES)
    entropy_coef: float = option(0.0, "entropy bonus weight", bounds="(-inf, inf)")
    forward_batch_size: int = option(0, "micro-batch for log-prob/value forwards in the rollout (0 = all)",
                                     bounds="[0, inf)")

    @property
    def rollout_size(self) -> int:
        return self.prompts_per_step * self.samples_per_prompt

    @property
    def uses_reference(self) -> bool:
        """Whether pi_ref is needed at all: a KL penalty that can be non-zero."""
        return self.kl_penalty != "none" and (self.kl_coef > 0 or self.adaptive_kl)

    def __post_init__(self):
        if self.num_steps:  # the old name: one vocabulary (max_steps) with the old one still understood
            import warnings

            if self.max_steps not in (self.num_steps, self.__dataclass_fields__["max_steps"].default):
                raise ValueError(f"num_steps={self.num_steps} (the old name of max_steps) and max_steps="
                                 f"{self.max_steps} disagree; give max_steps only")
            warnings.warn("num_steps is deprecated: use max_steps (the same setting, the offline trainers' name)",
                          DeprecationWarning, stacklevel=3)
            self.max_steps, self.num_steps = self.num_steps, 0

    def validate(self, world_size: int = 1) -> None:
        """Fail at config time, naming the setting (and the numbers), before anything is written."""
        self.validate_run()
        per_update = self.num_minibatches * self.grad_accum_steps
        if per_update > self.rollout_size:
            raise ValueError(
                f"num_minibatches x grad_accum_steps = {per_update} exceeds the rollout batch "
                f"(prompts_per_step x samples_per_prompt = {self.rollout_size}): a minibatch would be empty"
            )
        if self.rollout_size % per_update:
            raise ValueError(f"the rollout batch ({self.rollout_size}) must divide into num_minibatches x "
                             f"grad_accum_steps = {per_update} equal micro-batches")
        if self.prompts_per_step % world_size:
            raise ValueError(
                f"prompts_per_step={self.prompts_per_step} must be divisible by the number of processes "
                f"({world_size}): each process samples and scores whole prompt groups, so a group never "
                "straddles processes")
        micro = self.rollout_size // per_update
        if micro % world_size:
            raise ValueError(
                f"each micro-batch holds {micro} sequences (rollout {self.rollout_size} / (num_minibatches "
                f"{self.num_minibatches} x grad_accum_steps {self.grad_accum_steps})), which does not split over "
                f"{world_size} processes: a process's share would be uneven or empty")
        self.sampling_params(self.samples_per_prompt)


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


def check_finite_advantages(batch: dict[str, torch.Tensor], rollout: Rollout, step: int) -> None:
    """Raise :class:`NonFiniteLossError` naming the tensors of ``batch`` (advantages, returns...) that are not
    finite, with the range of the step's scores (which are finite by then: the rollout checks them). Huge
    finite scores (e.g. +-3e38) overflow fp32 in a baseline or a normalisation; without this the run would
    stop later at a NaN policy loss with no word of the rewards."""
    bad = [name for name, t in batch.items() if torch.is_tensor(t) and t.is_floating_point()
           and not bool(torch.isfinite(t).all())]
    if bad:
        scores = rollout.scores.float()
        raise NonFiniteLossError(
            f"step {step}: {', '.join(bad)} not finite although every score is (scores from {float(scores.min()):.3g} "
            f"to {float(scores.max()):.3g}); scores this large overflow fp32 in the baseline or normalisation: "
            "rescale the reward function's output")


def flushing_denormals() -> bool:
    """Whether the CPU flushes denormal floats to zero now (torch can set it but not report it): 1e-30 x 1e-10
    is a denormal, 0 when flushing."""
    return float(torch.tensor([1e-30]) * torch.tensor([1e-10])) == 0.0


class OnlineTrainer(TrainingLoop):
    """Base of the online trainers. Subclasses implement ``compute_advantages`` and ``micro_loss`` (and may
    override ``update``, as TRPO does for its policy step).

    Args:
        config: an :class:`OnlineConfig` (or subclass).
        policy: the causal LM to train (dropout must be off: ``alignkit.models.load_causal_lm`` does that).
            With ``lora`` it is wrapped in adapters here.
        tokenizer: its tokenizer (pad and EOS ids are read from it).
        prompts: training prompts (strings).
        reward_fn: ``(prompts, completions, **columns) -> list[float]`` (alignkit.rewards).
        columns: per-prompt extra columns for the reward function (e.g. GSM8K answers).
        reference: reference policy; default a frozen copy (or the adapter-disabled LoRA base), none when the
            KL penalty is off (``OnlineConfig.uses_reference``).
        generator: a ``Generator``; default the KV-cache engine on the policy (on a bf16 copy with bf16).
    """

    name = "online"
    skippable_errors = (NonFiniteLossError, InvalidRewardError)

    def __init__(self, config: OnlineConfig, policy: torch.nn.Module, tokenizer, prompts: list[str], reward_fn,
                 columns: dict[str, list] | None = None, reference=None, generator=None):
        from ..models.reference import make_reference

        super().__init__(config, config.max_steps, tokenizer)
        if not prompts:
            raise ValueError("no training prompts given")
        self.prompts = list(prompts)
        self.columns = {k: list(v) for k, v in check_prompt_columns(columns, len(self.prompts)).items()}
        self.reward_fn = reward_fn
        self.sharded = self.accelerator.distributed_type.value in ("FSDP", "DEEPSPEED")
        policy = policy.to(self.accelerator.device)
        self.setup_critic(policy)  # before LoRA: a separate critic copies the plain base model
        self.policy = prepare_trainable(policy, config)
        self.reference = reference
        if self.reference is None and config.uses_reference:
            self.reference = make_reference(self.policy)
        self.generator = generator or make_generator(
            self.policy, tokenizer, weights_dtype=torch.bfloat16 if config.mixed_precision == "bf16" else None,
            own_weights=self.sharded)
        trained = self.trained_module()
        self.trains_policy_alone = trained is self.policy  # else a wrapper around it (PPO's shared trunk)
        optimizer = build_optimizer(trained, config.learning_rate, config.weight_decay,
                                    (config.adam_beta1, config.adam_beta2), config.adam_eps)
        self.scheduler = build_scheduler(optimizer, config.lr_scheduler, config.warmup_steps,
                                         config.max_steps * config.update_epochs * config.num_minibatches)
        self.model, self.optimizer = self.accelerator.prepare(trained, optimizer)
        self.prepare_critic()
        self.kl_controller = (AdaptiveKLController(config.kl_coef, config.kl_target, config.kl_horizon)
                              if config.adaptive_kl else FixedKLController(config.kl_coef))
        self.batcher = EpochBatcher(len(self.prompts), config.prompts_per_step, config.seed)
        self._times: dict[str, float] = {}
        self._last_rollout: Rollout | None = None
        self.fused_forward: tuple[torch.Tensor, torch.Tensor | None] | None = None  # see fuses_policy_forward

    # ------------------------------------------------------------------------------------ hooks
    def setup_critic(self, base_policy: torch.nn.Module) -> None:
        """Build a separate critic from the plain (pre-LoRA) policy; default none."""
        return None

    def prepare_critic(self) -> None:
        """Wrap the critic (and its optimiser) for distribution; default none."""
        return None

    def train(self, stop_after: int | None = None) -> list[dict]:
        """:meth:`TrainingLoop.train`, with denormal floats flushed to zero on CPU while it runs: they (tiny
        advantages, values, KL terms) once made a CPU PPO update 10x slower (198 s of a 200 s step), and flushing
        changes nothing above 1e-38. The setting is process-wide in torch, so the caller's is restored after."""
        if self.accelerator.device.type != "cpu":
            return super().train(stop_after)
        was_flushing = flushing_denormals()
        torch.set_flush_denormal(True)
        try:
            return super().train(stop_after)
        finally:
            torch.set_flush_denormal(was_flushing)

    def trained_module(self) -> torch.nn.Module:
        """The module the main optimiser trains, built once at construction (default the policy; PPO's shared
        trunk: policy + value head)."""
        return self.policy

    def critic(self):
        """``(ids, mask, pos) -> [N, L]`` values for the rollout, or None (no critic)."""
        return None

    @abstractmethod
    def compute_advantages(self, rollout: Rollout, beta: float) -> dict[str, torch.Tensor]:
        """Advantages (and returns, for a critic) of this rollout (the whole step's, on every process)."""

    @abstractmethod
    def micro_loss(self, rollout: Rollout, batch: dict[str, torch.Tensor], rows: torch.Tensor, normalizer: float,
                   multi: bool) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of this process's ``rows`` of a micro-batch: their sum / ``normalizer`` (the global
        minibatch's tokens or sequences), and its metrics. ``multi``: the rollout is used for more than one
        optimiser step (the update is off-policy after the first)."""

    def update(self, rollout: Rollout, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Update the policy (and critic) on the rollout; returns metrics (default: :meth:`run_updates`)."""
        return self.run_updates(rollout, batch, self.micro_loss, self.optimizer_steps)

    def optimizer_steps(self) -> float:
        """Clip and step every optimiser of the main loss; returns the policy's gradient norm."""
        return self.clip_and_step(self.model, self.optimizer, self.scheduler)

    def fuses_policy_forward(self) -> bool:
        """True when ``update`` makes a single on-policy optimiser step on one micro-batch holding the whole
        rollout. Then the rollout's policy log-probs are taken from that step's own forward pass (with grad,
        training mode, same temperature) instead of a separate no-grad forward: the same numbers, one
        forward fewer per step. ``micro_loss`` finds the pass in ``self.fused_forward``."""
        return False

    def extra_checkpoint_modules(self) -> dict:
        """``{name: (module, optimizer)}`` saved with checkpoints (e.g. the critic)."""
        return {}

    def checkpoint_model(self):
        return self.policy, self.optimizer, self.scheduler, self.extra_checkpoint_modules()

    def trainer_state(self) -> dict:
        return {"kl_controller": self.kl_controller.state_dict()}

    def load_trainer_state(self, state: dict) -> None:
        self.kl_controller.load_state_dict(state["kl_controller"])
        self.refresh_sampler()  # the engine's own copy (bf16, sharded) must see the loaded weights

    def save_final(self, path: Path) -> None:
        self.policy.save_pretrained(str(path), safe_serialization=True)
        self.tokenizer.save_pretrained(str(path))

    def on_skipped_step(self) -> None:
        self.fused_forward = None
        super().on_skipped_step()

    def on_logged_step(self) -> None:
        if self.accelerator.is_main_process and self._last_rollout is not None:
            self.log_samples(self._last_rollout)

    # ------------------------------------------------------------------------------------ helpers
    @contextmanager
    def timed(self, stage: str):
        start = time.perf_counter()
        yield
        self._times[f"time/{stage}_s"] = time.perf_counter() - start

    def minibatches(self, n: int, epoch: int) -> list[list[torch.Tensor]]:
        """Per optimiser step, a list of micro-batch index tensors (global rows); shuffled per (step, epoch),
        the same on every process."""
        cfg = self.config
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + self.step * 101 + epoch)
        order = torch.randperm(n, generator=g)
        per_step = n // cfg.num_minibatches
        micro = per_step // cfg.grad_accum_steps
        return [[order[s + m : s + m + micro] for m in range(0, per_step, micro)] for s in range(0, n, per_step)]

    def my_rows(self, micro: torch.Tensor) -> torch.Tensor:
        """This process's share of a micro-batch's rows (sorted, then cut into equal contiguous parts; one
        process keeps them all)."""
        rows = micro.sort().values
        return rows.view(self.world_size, -1)[self.rank]

    def combine_shares(self, metrics: dict[str, float], share_tokens: float, micro_tokens: float
                       ) -> dict[str, float]:
        """This process's share of one micro-batch's metrics as its contribution to the micro-batch's value
        (see ``EXTREME_METRICS``): token means are weighted by the share's fraction of the micro-batch's tokens,
        so that summing contributions over processes gives the whole micro-batch's mean."""
        weight = share_tokens / max(micro_tokens, 1.0)
        return {k: v if k in ADDITIVE_METRICS else v * weight for k, v in metrics.items() if k not in EXTREME_METRICS}

    def reduce_extremes(self, values: dict[str, list[float]]) -> dict[str, float]:
        """Per micro-batch minima / maxima over processes, then their mean over micro-batches."""
        out = {}
        for key in sorted(values):
            t = torch.tensor(values[key], dtype=torch.float64, device=self.accelerator.device)
            if self.world_size > 1:
                op = torch.distributed.ReduceOp.MIN if EXTREME_METRICS[key] == "min" else torch.distributed.ReduceOp.MAX
                torch.distributed.all_reduce(t, op=op)
            out[key] = float(t.mean())
        return out

    def backward(self, loss: torch.Tensor, last_micro: bool, model: torch.nn.Module | None = None) -> None:
        """Backward of this process's share of a micro-batch loss, as the whole micro-batch's gradient: DDP
        averages over processes, so the loss is scaled by their number; gradients are synchronised only at
        the last micro-batch of an optimiser step. A non-finite loss raises (one process: at once; several:
        through the synchronised gradient norm, so that every process stops together)."""
        if not torch.isfinite(loss) and self.world_size == 1:
            raise NonFiniteLossError(f"step {self.step + 1}: {self.name} loss is {loss.item()}{self.nonfinite_cause()}")
        model = self.model if model is None else model
        sync = nullcontext() if last_micro or self.world_size == 1 else self.accelerator.no_sync(model)
        with sync:
            self.accelerator.backward(loss * self.world_size)

    def run_updates(self, rollout: Rollout, batch: dict[str, torch.Tensor], micro_loss, step_optimizers,
                    model: torch.nn.Module | None = None, loss_agg: str | None = None,
                    early_stop_key: str | None = None, early_stop_above: float = 0.0) -> dict[str, float]:
        """The one update skeleton: ``update_epochs`` x ``num_minibatches`` optimiser steps x
        ``grad_accum_steps`` micro-batches, each split over the processes; clip and step after each minibatch.

        Args:
            micro_loss: ``(rollout, batch, rows, normalizer, multi) -> (loss, metrics)`` for this process's
                rows of a micro-batch.
            step_optimizers: ``() -> grad norm``: clip, step and zero the optimisers the loss trains.
            model: the (prepared) module whose gradient sync waits for the last micro-batch (default the
                policy's); loss_agg: the aggregation that picks the normaliser (default the config's).
            early_stop_key, early_stop_above: stop after an epoch whose mean of this metric exceeds the bound.
        Returns:
            metrics averaged over micro-batches (and reduced over processes), ``grad_norm`` of the last step,
            ``early_stop_epoch`` (0: none).
        """
        cfg = self.config
        multi = cfg.update_epochs * cfg.num_minibatches > 1
        sums: dict[str, float] = {}
        extremes: dict[str, list[float]] = {}
        counted = 0
        grad_norm = 0.0
        stopped_early = 0.0
        model = self.model if model is None else model
        loss_agg = loss_agg or cfg.loss_agg
        model.train()
        for epoch in range(cfg.update_epochs):
            epoch_values = []
            for minibatch in self.minibatches(len(rollout), epoch):
                global_rows = torch.cat(minibatch)
                normalizer = (float(rollout.response_mask[global_rows].sum()) if loss_agg == "token-mean"
                              else float(len(global_rows)))
                for j, micro in enumerate(minibatch):
                    rows = self.my_rows(micro)
                    with self.autocast():
                        loss, m = micro_loss(rollout, batch, rows, normalizer, multi)
                    self.backward(loss, last_micro=j == len(minibatch) - 1, model=model)
                    share = self.combine_shares(m, float(rollout.response_mask[rows].sum()),
                                                float(rollout.response_mask[micro].sum()))
                    for k, v in share.items():
                        sums[k] = sums.get(k, 0.0) + v
                    for k in EXTREME_METRICS.keys() & m.keys():
                        extremes.setdefault(k, []).append(m[k])
                    counted += 1
                    if early_stop_key is not None:
                        epoch_values.append(share[early_stop_key])
                grad_norm = step_optimizers()
            if early_stop_key is not None and early_stop_above > 0:
                mean = self.reduce_sum({"v": sum(epoch_values) / len(epoch_values)})["v"]
                if mean > early_stop_above:
                    stopped_early = float(epoch + 1)
                    break
        out = {k: v / counted for k, v in self.reduce_sum(sums).items()}
        out.update(self.reduce_extremes(extremes))
        out["grad_norm"] = grad_norm
        out["early_stop_epoch"] = stopped_early
        return out

    def fused_rows(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This process's rows of the fused forward (which covers its own share of the rollout, in order)."""
        offset = self.rank * self.fused_forward[0].shape[0]
        return tuple(t[rows - offset] if t is not None else None for t in self.fused_forward)

    # ------------------------------------------------------------------------------------ rollout
    def sampling(self, first_prompt_index: int = 0) -> SamplingParams:
        """This step's sampling parameters (noise keyed by (seed, step) and the global prompt index)."""
        cfg = self.config
        return cfg.sampling_params(cfg.samples_per_prompt, seed=cfg.seed * 1_000_003 + self.step,
                                   first_prompt_index=first_prompt_index)

    @contextmanager
    def gathered_policy(self):
        """The policy's full parameters for the duration (FSDP / DeepSpeed ZeRO-3 shard them; as TRL's
        ``unwrap_model_for_generation``); nothing to do otherwise."""
        kind = self.accelerator.distributed_type.value
        if kind == "FSDP":
            from torch.distributed.fsdp import FullyShardedDataParallel

            with FullyShardedDataParallel.summon_full_params(self.model, writeback=False):
                yield
        elif kind == "DEEPSPEED":
            import deepspeed

            with deepspeed.zero.GatheredParameters(list(self.model.parameters())):
                yield
        else:
            yield

    def refresh_sampler(self) -> None:
        """Make the generator sample from the policy's current weights (``Generator.update_weights``)."""
        with self.gathered_policy():
            self.generator.update_weights(self.policy)

    def agree(self, failed: bool) -> bool:
        """Whether any process failed (all processes get the same answer)."""
        if self.world_size == 1:
            return failed
        flag = torch.tensor([float(failed)], device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def rollout_policy(self):
        """The module the rollout's no-grad policy forwards run on."""
        return self.model if self.trains_policy_alone else self.policy

    def rollout(self) -> Rollout:
        """Sample and score this process's share of the step's prompts, then gather the whole rollout."""
        cfg = self.config
        idx = self.batcher.next_batch()
        share = process_share(len(idx), self.rank, self.world_size)  # whole: validate() made it divide
        mine = idx[share.start : share.stop]
        prompts = [self.prompts[i] for i in mine]
        columns = {k: [v[i] for i in mine] for k, v in self.columns.items()}
        penalty = None if math.isnan(cfg.missing_eos_penalty) else cfg.missing_eos_penalty
        fused = self.fuses_policy_forward()
        error: InvalidRewardError | None = None
        try:
            local = collect_rollout(
                prompts, self.tokenizer, self.generator, self.reward_fn, self.rollout_policy(),
                self.sampling(first_prompt_index=share.start), reference=self.reference, critic=self.critic(),
                columns=columns, missing_eos_penalty=penalty, **cfg.prompt_kwargs(),
                forward_batch_size=cfg.forward_batch_size or None,
                policy_logprobs=not fused, autocast=self.autocast)
        except InvalidRewardError as err:
            error = err
        if self.agree(error is not None):
            raise error or InvalidRewardError(f"step {self.step + 1}: another process got an invalid reward",
                                              source_name="another process")
        if fused:
            start = time.perf_counter()
            self.model.train()
            with self.autocast():
                logp, entropy = policy_forward(self.model, local, torch.arange(len(local)), cfg.temperature,
                                               cfg.entropy_coef != 0.0)
            self.fused_forward = (logp, entropy)
            local.set_policy_logprobs(logp.detach().float())
            local.stats["time/policy_logprobs_s"] = time.perf_counter() - start
        rollout = self.gather(local)
        if rollout.ref_logprobs is not None:
            rollout.set_kl(cfg.kl_estimator)
        return rollout

    def gather(self, local: Rollout) -> Rollout:
        """Every process's share, in rank order (= global prompt order), as one rollout on every process."""
        if self.world_size == 1:
            return local
        parts = gather_objects(local.to("cpu"), self.world_size)
        return Rollout.concat(parts, self.tokenizer.pad_token_id).to(self.accelerator.device)

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
            in_reward = self.config.kl_penalty == "reward"
            metrics["non_score_reward"] = float(-beta * rollout.kl.sum(-1).mean()) if in_reward else 0.0
        metrics["sampler_logprob_drift"] = rollout.stats.get("sampler_logprob_max_abs_diff", 0.0)
        metrics["entropy_proxy"] = float(-masked_mean(rollout.logprobs, m))  # mean -log pi of sampled tokens
        return metrics

    # ------------------------------------------------------------------------------------ the step
    def training_step(self) -> dict[str, float]:
        """rollout -> advantages -> update -> refresh the sampler -> KL controller (each stage timed)."""
        cfg = self.config
        self._times = {}
        beta = self.kl_controller.value
        start = time.perf_counter()
        rollout = self.rollout()
        metrics = self.rollout_metrics(rollout, beta)
        with self.timed("advantages"):
            batch = self.compute_advantages(rollout, beta)
        check_finite_advantages(batch, rollout, self.step + 1)
        try:
            with self.timed("update"):
                metrics.update(self.update(rollout, batch))
        finally:
            self.fused_forward = None  # frees the graph of a fused forward
        with self.timed("sync_weights"):
            self.refresh_sampler()
        if "kl" in metrics:
            self.kl_controller.update(metrics["kl"], cfg.rollout_size)
        metrics.update({k: v for k, v in rollout.stats.items() if k.startswith("time/")})
        metrics.update(self._times)
        metrics["time/step_s"] = time.perf_counter() - start
        self._last_rollout = rollout
        return metrics

    def log_samples(self, rollout: Rollout) -> None:
        """The first ``num_samples`` (prompt, completion, score) of this step's rollout -> samples.jsonl."""
        k = min(self.config.num_samples, len(rollout))
        append_samples(self.run_dir, self.step, [
            {"prompt": rollout.prompts[i], "completion": rollout.completions[i], "score": float(rollout.scores[i]),
             "finished": bool(rollout.finished[i])} for i in range(k)])
