"""The one loop skeleton of every trainer, offline and online, owned by us on top of ``accelerate``.

``TrainingLoop.train`` holds what every trainer shares, read top to bottom:

    seed (seed + rank) -> resume from a checkpoint -> save config.json
    while step < total_steps:
        metrics = training_step()          the method's work for one step (below)
        non-finite loss / gradient / reward: stop (nothing is saved for that step), or skip and count it
        log -> (evaluate) -> checkpoint -> progress
    final model -> report.html

``training_step`` is the only part a method family supplies:

* offline (:class:`Trainer`: SFT, reward model, DPO) -- one optimiser step on the global batch:

      indices  = batcher.next_batch()                      the global batch: batch_size examples
      units    = trainer.count_units(global batch)          e.g. label tokens (SFT) or pairs (DPO/RM)
      for each of this process's grad_accum micro-batches:
          loss = trainer.compute_loss(model, micro, units)  sum over its units / global units
          backward(loss * world_size)                       (DDP averages gradients over processes)
      clip grad norm -> optimizer.step -> scheduler.step

  Because every micro-loss is divided by the *global* unit count, the gradient equals that of the whole
  batch exactly, however it is split over accumulation steps and processes (tests check both). Every rank
  knows the global batch (same seed), so the count needs no communication. Metrics returned by
  ``compute_loss`` are additive contributions (their sum over micro-batches and processes is the step's
  value), which keeps logging exact under any split.
* online (``alignkit.trainers.OnlineTrainer``: REINFORCE, PPO, TRPO) -- rollout -> advantages -> update.

Model preparation (LoRA, gradient checkpointing), bf16 autocast and the clip-and-step of an optimiser live
here too, once, for both families.
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from .batching import EpochBatcher
from .checkpoint import (
    STATE_FILE,
    clean_stale_temporaries,
    load_checkpoint,
    publish_directory,
    resolve_resume,
    save_checkpoint,
    temporary_sibling,
)
from .config import RunConfig, TrainConfig
from .distributed import make_accelerator
from .metrics import MetricsLogger, rewind_jsonl
from .optim import build_optimizer, build_scheduler
from .run_dir import check_run_dir, claim_run_dir, release_run_dir


class NonFiniteLossError(FloatingPointError):
    """The loss or gradient became NaN/inf; raised before any checkpoint is written for that step."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 - seed the global RNG user code draws from
    torch.manual_seed(seed)


def prepare_trainable(model: torch.nn.Module, config: RunConfig) -> torch.nn.Module:
    """Apply the config's LoRA (peft adapters; the base weights frozen) and gradient-checkpointing switches.

    Returns the model to train (a ``peft.PeftModel`` with ``lora``). Gradient checkpointing is enabled on the
    model or, for a wrapper such as ``RewardModel``, on its ``.model``; a module that has neither is an error.
    """
    if config.lora:
        from ..models.heads import ScalarHeadModel
        from ..models.lora import apply_lora, apply_lora_to_trunk

        if isinstance(model, ScalarHeadModel):  # reward model / critic: adapters on the trunk, the head in full
            model = apply_lora_to_trunk(model, r=config.lora_r, alpha=config.lora_alpha)
        else:
            model = apply_lora(model, r=config.lora_r, alpha=config.lora_alpha)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Non-reentrant activation checkpointing (works under DDP and with frozen inputs, e.g. LoRA)."""
    target = model
    if not hasattr(target, "gradient_checkpointing_enable") and hasattr(target, "model"):
        target = target.model
    if not hasattr(target, "gradient_checkpointing_enable"):
        raise ValueError(f"gradient_checkpointing: {type(model).__name__} does not support it")
    if hasattr(target, "activation_checkpointing_enable"):  # transformers >= 5.24 names it so (the old is deprecated)
        target.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        target.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if hasattr(target, "enable_input_require_grads") and not any(
            p.requires_grad for p in target.get_input_embeddings().parameters()):
        target.enable_input_require_grads()  # frozen embeddings (LoRA): checkpointed blocks still need grad


def autocast_context(config: RunConfig, device: torch.device):
    """bf16 autocast for forward passes when ``mixed_precision="bf16"`` (weights and optimiser stay fp32)."""
    enabled = config.mixed_precision == "bf16"
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


# Settings a resumed run must keep: the checkpoint's optimiser and scheduler state would override a new value.
# (The number of steps may change: the schedule is recomputed over the new length from the current step.)
RESUME_FIXED = ("learning_rate", "critic_learning_rate", "lr_scheduler", "warmup_steps", "weight_decay", "adam_beta1",
                "adam_beta2", "adam_eps")


def pad_token_id_of(pad_token_id: int | None, tokenizer, trainer: str) -> int:
    """The pad id a trainer's collator pads with: ``pad_token_id`` if given, else the tokenizer's."""
    pad = pad_token_id if pad_token_id is not None else getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise ValueError(f"{trainer} needs a pad token id (from the tokenizer or pad_token_id=)")
    return pad


class TrainingLoop(ABC):
    """The skeleton shared by every trainer (see the module docstring).

    Subclasses set ``self.batcher`` (an :class:`EpochBatcher`: its position is checkpointed) and implement
    :meth:`training_step`, :meth:`checkpoint_model` and :meth:`save_final`.

    Args:
        config: a :class:`RunConfig` subclass with ``validate(world_size)``.
        total_steps: how many times :meth:`training_step` runs.
        tokenizer: saved with the final model when given.
    """

    name = "trainer"
    skippable_errors: tuple[type[BaseException], ...] = (NonFiniteLossError,)

    def __init__(self, config: RunConfig, total_steps: int, tokenizer=None):
        # Mixed precision is our own autocast (``autocast``), not Accelerate's: its process-wide state would
        # forbid an fp32 trainer and a bf16 one in the same process (SFT then a reward model, say).
        self.accelerator = make_accelerator()
        seed_everything(config.seed)  # new parameters (LoRA adapters, heads) start alike on every process and run
        self.world_size = self.accelerator.num_processes
        self.rank = self.accelerator.process_index
        config.validate(self.world_size)
        self.config = config
        self.tokenizer = tokenizer
        self.total_steps = total_steps
        self.run_dir = Path(config.output_dir)
        self.step = 0
        self.skipped_updates = 0
        self.history: list[dict] = []
        self.report_summary: dict = {}  # extra key -> value rows for the top of report.html
        self.logger: MetricsLogger | None = None  # made by train(): nothing is written before it runs
        self._run_dir_claimed = False

    # ----------------------------------------------------------------------------------- hooks
    @abstractmethod
    def training_step(self) -> dict[str, float]:
        """One step's work (the same on every process); returns its metrics (equal on every process)."""

    @abstractmethod
    def checkpoint_model(self) -> tuple[torch.nn.Module, object, object, dict]:
        """``(model, optimizer, scheduler, extras)`` to checkpoint: the *unwrapped* trained module, and
        ``extras = {name: (module, optimizer or None)}`` saved beside it (e.g. PPO's critic)."""

    @abstractmethod
    def save_final(self, path: Path) -> None:
        """Save the final model(s) so that transformers' (or peft's) from_pretrained loads them."""

    def trainer_state(self) -> dict:
        """Extra state a subclass needs to resume exactly (JSON-serialisable)."""
        return {}

    def load_trainer_state(self, state: dict) -> None:
        return None

    def on_train_start(self) -> None:
        """Called once before the first step (after a resume)."""
        return None

    def on_step_end(self) -> None:
        """Called after each step is logged (e.g. periodic evaluation)."""
        return None

    def on_train_end(self) -> None:
        """Called after the last step, before the final save (e.g. a last evaluation)."""
        return None

    def on_skipped_step(self) -> None:
        """Drop whatever a failed step left behind (default: every optimiser's gradients)."""
        for optimizer in self.optimizers():
            optimizer.zero_grad(set_to_none=True)

    def optimizers(self) -> list:
        model, optimizer, _, extras = self.checkpoint_model()
        return [optimizer] + [opt for _, opt in extras.values() if opt is not None]

    def write_report(self) -> None:
        """``report.html`` with plots (main process; see training/report.py)."""
        from .report import write_report

        write_report(self.run_dir, title=f"alignkit {self.name}: {self.run_dir.resolve().name}",
                     summary=self.report_summary)

    # ----------------------------------------------------------------------------------- shared pieces
    def autocast(self):
        """bf16 autocast for forward passes when ``mixed_precision="bf16"`` (weights and optimiser stay fp32)."""
        return autocast_context(self.config, self.accelerator.device)

    def clip_and_step(self, model: torch.nn.Module, optimizer, scheduler=None) -> float:
        """Clip the (already all-reduced) gradient norm, step, zero. Returns the pre-clip norm (global).

        A non-finite norm raises :class:`NonFiniteLossError` before the step, on every process alike (the
        norm is computed from the synchronised gradients).
        """
        limit = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")
        norm = self.accelerator.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], limit)
        norm = torch.as_tensor(norm)
        if not torch.isfinite(norm):
            raise NonFiniteLossError(f"step {self.step + 1}: gradient norm is {float(norm)}{self.nonfinite_cause()}")
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def reduce_sum(self, totals: dict[str, float]) -> dict[str, float]:
        """Sum each metric over processes (float64)."""
        if self.world_size == 1 or not totals:
            return totals
        keys = sorted(totals)
        t = torch.tensor([totals[k] for k in keys], dtype=torch.float64, device=self.accelerator.device)
        t = self.accelerator.reduce(t, reduction="sum")
        return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}

    # ----------------------------------------------------------------------------------- the loop
    def train(self, stop_after: int | None = None) -> list[dict]:
        """Run to ``total_steps`` (continuing from a checkpoint if ``resume_from`` is set).

        ``stop_after``: return after this global step, as an interrupted run would (no final model is
        saved then); the learning-rate schedule still spans ``total_steps``. A later ``train()`` call on the same
        trainer continues from there.

        The run directory is this run's while it runs (:mod:`alignkit.training.run_dir`): the first call refuses
        a directory in use by a live run, or holding another run's results unless ``resume_from`` or
        ``overwrite`` says what to do with them.
        """
        first_call = not self._run_dir_claimed
        if first_call:  # every process checks (read-only) before any writes, so all fail alike
            check_run_dir(self.run_dir, self.config.resume_from, self.config.overwrite)
            self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            claim_run_dir(self.run_dir, self.config.resume_from, self.config.overwrite, check=first_call)
        self._run_dir_claimed = True
        try:
            return self._train(stop_after)
        finally:
            if self.accelerator.is_main_process:
                release_run_dir(self.run_dir)

    def _train(self, stop_after: int | None) -> list[dict]:
        cfg = self.config
        seed_everything(cfg.seed + self.rank)
        resume = resolve_resume(cfg.resume_from, self.run_dir)
        if resume is not None:
            self._check_resume_settings(resume)
            model, optimizer, scheduler, extras = self.checkpoint_model()
            state = load_checkpoint(resume, model, optimizer, scheduler, extras=extras)
            self.step = int(state["step"])
            self.batcher.load_state_dict(state["data"])
            self.skipped_updates = int(state.get("skipped_updates", 0))
            self.load_trainer_state(state.get("trainer", {}))
            if self.accelerator.is_main_process:  # the log continues from the checkpoint: no step twice
                for name in ("metrics.jsonl", "samples.jsonl"):
                    rewind_jsonl(self.run_dir / name, self.step)
        self.logger = MetricsLogger(self.run_dir, enabled=self.accelerator.is_main_process,
                                    tensorboard=cfg.tensorboard, progress_total=self.total_steps,
                                    progress=cfg.progress)
        self.logger.advance(self.step)
        if self.accelerator.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            clean_stale_temporaries(self.run_dir)
            (self.run_dir / "config.json").write_text(json.dumps(
                {"trainer": self.name, "processes": self.world_size, **cfg.to_dict()}, indent=2))
        self.on_train_start()
        while self.step < self.total_steps:
            try:
                metrics = self.training_step()
            except self.skippable_errors:
                if cfg.on_nonfinite == "raise":
                    raise
                self.on_skipped_step()  # the batch is consumed and counted, no update is made
                self.skipped_updates += 1
                self.step += 1
                self.logger.log(self.step, {"skipped_updates": float(self.skipped_updates)})
                self.logger.advance()
                continue
            self.step += 1
            metrics["skipped_updates"] = float(self.skipped_updates)
            self.history.append({"step": self.step, **metrics})
            if self.step % cfg.logging_steps == 0 or self.step == self.total_steps:
                self.logger.log(self.step, metrics)
                self.on_logged_step()
            self.on_step_end()
            if cfg.save_steps and self.step % cfg.save_steps == 0:
                self._save_checkpoint()
            self.logger.advance()
            if stop_after is not None and self.step >= stop_after:
                self.logger.close()
                self.accelerator.wait_for_everyone()
                return self.history
        self.on_train_end()
        self.check_finite_state("the final model")
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            tmp = temporary_sibling(self.run_dir / "final")
            self.save_final(tmp)
            publish_directory(tmp, self.run_dir / "final")
        self.logger.close()
        if self.accelerator.is_main_process:
            self.write_report()
        self.accelerator.wait_for_everyone()  # no process tears the process group down while another writes
        return self.history

    def on_logged_step(self) -> None:
        """Called on logged steps, after the metrics are written (e.g. the step's sample completions)."""
        return None

    def _first_nonfinite_parameter(self) -> str | None:
        """The name of the first trained parameter (of the model or a checkpointed extra) that is not finite."""
        model, _, _, extras = self.checkpoint_model()
        modules = [("", model)] + [(f"{name}.", module) for name, (module, _) in extras.items()]
        return next((prefix + n for prefix, m in modules for n, p in m.named_parameters()
                     if p.requires_grad and not bool(torch.isfinite(p).all())), None)

    def nonfinite_cause(self) -> str:
        """For a non-finite loss or gradient: ``"; parameter X is already not finite ..."`` when a trained
        parameter is (an earlier update, not this step's data or rewards, is then to blame), else ``""``."""
        bad = self._first_nonfinite_parameter()
        return "" if bad is None else (f"; parameter {bad} is already not finite, so an earlier update (not this "
                                        "step's data or rewards) went wrong: is learning_rate too large?")

    def check_finite_state(self, what: str) -> None:
        """Raise :class:`NonFiniteLossError` before ``what`` is saved if a trained parameter or an optimiser state
        tensor is not finite, naming the first one and the step. Every step already stops at a non-finite loss or
        gradient norm, so such a value came from an update (e.g. a learning rate too large)."""
        _, optimizer, _, extras = self.checkpoint_model()
        optimizers = [optimizer] + [opt for _, opt in extras.values() if opt is not None]
        bad = self._first_nonfinite_parameter()
        if bad is None:
            bad = next((f"optimiser state {key!r} of a {tuple(p.shape)} parameter" for opt in optimizers
                        for p, state in opt.state.items() for key, t in state.items()
                        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all())), None)
        if bad is not None:
            raise NonFiniteLossError(
                f"step {self.step}: {bad} is not finite, so {what} is not saved; the loss and gradient norm were "
                f"finite at every step, so an update made it so (learning_rate={self.config.learning_rate} too "
                "large?). The last checkpoint written, if any, is intact.")

    def _check_resume_settings(self, checkpoint: Path) -> None:
        """A resumed run restores the optimiser's and the schedule's state, so a changed learning rate (or another
        :data:`RESUME_FIXED` setting) would be silently ignored: refuse it, naming each change."""
        try:
            saved = json.loads((checkpoint / STATE_FILE).read_text()).get("settings") or {}
        except (OSError, ValueError):
            return  # load_checkpoint names what is wrong with the checkpoint
        changed = [f"{k} {v!r} -> {getattr(self.config, k)!r}" for k, v in saved.items()
                   if hasattr(self.config, k) and getattr(self.config, k) != v]
        if changed:
            raise ValueError(f"resume_from={self.config.resume_from!r}: {'; '.join(changed)} since {checkpoint.name}; "
                             "the checkpoint's optimiser and schedule state would override the new value. Resume "
                             "with the run's values, or start a new run (another output_dir, or overwrite=true)")

    def _save_checkpoint(self) -> None:
        self.check_finite_state(f"the step-{self.step} checkpoint")
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process:
            model, optimizer, scheduler, extras = self.checkpoint_model()
            save_checkpoint(self.run_dir, self.step, model, optimizer, scheduler,
                            {"data": self.batcher.state_dict(), "skipped_updates": self.skipped_updates,
                             "trainer": self.trainer_state(),
                             "settings": {k: getattr(self.config, k) for k in RESUME_FIXED if hasattr(self.config, k)}},
                            keep=self.config.save_total_limit, extras=extras)
        self.accelerator.wait_for_everyone()


class Trainer(TrainingLoop):
    """Base class of the offline trainers (SFT, reward model, DPO).

    Args:
        config: a :class:`TrainConfig` (or subclass).
        model: the module to train (a transformers model or a wrapper such as ``RewardModel``).
        train_examples: tokenised examples (dicts), indexed by the batcher.
        eval_examples: optional held-out examples.
        tokenizer: saved with the final model when given.
    """

    def __init__(self, config: TrainConfig, model: torch.nn.Module, train_examples: list[dict],
                 eval_examples: list[dict] | None = None, tokenizer=None):
        batcher = EpochBatcher(len(train_examples), config.batch_size, config.seed)
        total = config.max_steps or max(1, int(config.num_epochs * batcher.batches_per_epoch))
        super().__init__(config, total, tokenizer)
        self.batcher = batcher
        self.train_examples = train_examples
        self.eval_examples = eval_examples or []
        model = prepare_trainable(model, config)
        self.optimizer = build_optimizer(model, config.learning_rate, config.weight_decay,
                                         (config.adam_beta1, config.adam_beta2), config.adam_eps)
        self.scheduler = build_scheduler(self.optimizer, config.lr_scheduler, config.warmup_steps, self.total_steps)
        self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)

    # ----------------------------------------------------------------------------------- hooks
    @abstractmethod
    def count_units(self, examples: list[dict]) -> int:
        """How many loss units (tokens, pairs) the global batch holds."""

    @abstractmethod
    def collate(self, examples: list[dict]) -> dict:
        """Examples -> a batch of tensors."""

    @abstractmethod
    def compute_loss(self, model, batch: dict, normalizer: float) -> tuple[torch.Tensor, dict[str, float]]:
        """(sum of this micro-batch's unit losses / normalizer, additive metric contributions)."""

    def sample_examples(self) -> list[dict]:
        """The first ``num_samples`` held-out (else training) examples, for the report's samples."""
        return (self.eval_examples or self.train_examples)[: self.config.num_samples]

    def sample_prompt_ids(self) -> list[list[int]]:
        """Prompts (token ids) to sample the report's completions from; default none."""
        return []

    #: ``(model, tokenizer, prompt_ids, max_new_tokens, seed) -> [{"prompt", "completion", "finished"}]``: how
    #: the report's completions are sampled (trainers that sample set it, e.g. to
    #: :func:`alignkit.rollout.sample_completion_rows`); ``training/`` itself never builds an engine.
    report_sampler: Callable[..., list[dict]] | None = None

    def sample_rows(self) -> list[dict]:
        """Rows for ``samples.jsonl`` at the end of training (main process only).

        Default: ``num_samples`` completions sampled (seeded) by :attr:`report_sampler` from the trained model
        for the prompts of :meth:`sample_prompt_ids`. Sharded models (FSDP, DeepSpeed) are not gathered for
        this: no samples.
        """
        prompts = self.sample_prompt_ids()[: self.config.num_samples]
        if (not prompts or self.report_sampler is None or self.tokenizer is None
                or self.accelerator.distributed_type.value in ("FSDP", "DEEPSPEED")):
            return []
        return type(self).report_sampler(self.accelerator.unwrap_model(self.model), self.tokenizer, prompts,
                                         self.config.sample_max_new_tokens, self.config.seed)

    def write_report(self) -> None:
        """Sample completions, then ``report.html`` with plots (main process; see training/report.py)."""
        from .report import append_samples

        if self.config.num_samples:
            append_samples(self.run_dir, self.step, self.sample_rows())
        super().write_report()

    def save_final(self, path: Path) -> None:
        """Save the final model so that transformers' (or peft's) from_pretrained loads it (a scalar-head model
        with LoRA on its trunk is saved with the adapters merged)."""
        model = self.accelerator.unwrap_model(self.model)
        if hasattr(model, "_lora_tuner"):
            from ..models.lora import merged_trunk_copy

            model = merged_trunk_copy(model)
        model.save_pretrained(str(path), safe_serialization=True)
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(str(path))

    # ----------------------------------------------------------------------------------- loop
    def _micro_batches(self, indices: list[int]) -> list[list[int]]:
        """This process's share of the global batch, cut into grad_accum_steps micro-batches."""
        per_rank = len(indices) // self.world_size
        mine = indices[self.rank * per_rank : (self.rank + 1) * per_rank]
        size = per_rank // self.config.grad_accum_steps
        return [mine[i : i + size] for i in range(0, per_rank, size)]

    def collated_parts(self, examples: list[dict], collate=None) -> list[dict]:
        """``examples`` collated (by ``collate``, default :meth:`collate`) as one batch, or, when its padded
        ``input_ids`` hold more than ``max_micro_batch_tokens`` tokens (rows x longest row), as contiguous
        parts that each fit (one example at the least), in order. The loss of each part is normalised by the
        whole batch's units, so the summed gradient is the same however the batch is cut; only the peak
        memory of the forward and backward passes, which grows with the padded tokens, goes down."""
        collate = collate or self.collate
        batch = collate(examples)
        budget, tokens = self.config.max_micro_batch_tokens, batch["input_ids"].numel()
        if not budget or tokens <= budget or len(examples) == 1:
            return [batch]
        size = -(-len(examples) // min(len(examples), -(-tokens // budget)))
        return [part for start in range(0, len(examples), size)
                for part in self.collated_parts(examples[start : start + size], collate)]

    def training_step(self) -> dict[str, float]:
        """One optimiser step on the next global batch; returns its metrics."""
        indices = self.batcher.next_batch()
        normalizer = float(self.count_units([self.train_examples[i] for i in indices]))
        if normalizer <= 0:
            raise ValueError(f"step {self.step + 1}: the batch has no loss units (e.g. every label masked)")
        self.model.train()
        micro = [batch for chunk in self._micro_batches(indices)
                 for batch in self.collated_parts([self.train_examples[i] for i in chunk])]
        totals: dict[str, float] = {}
        for j, batch in enumerate(micro):
            sync = nullcontext() if j == len(micro) - 1 else self.accelerator.no_sync(self.model)
            with sync:
                with self.autocast():
                    loss, metrics = self.compute_loss(self.model, batch, normalizer)
                if not torch.isfinite(loss) and self.world_size == 1:  # several processes: the norm tells all
                    raise NonFiniteLossError(f"step {self.step + 1}: loss is {loss.item()} (micro-batch {j})"
                                             f"{self.nonfinite_cause()}")
                self.accelerator.backward(loss * self.world_size)
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + float(v)
        grad_norm = self.clip_and_step(self.model, self.optimizer, self.scheduler)
        totals = self.reduce_sum(totals)
        totals["lr"] = self.scheduler.get_last_lr()[0]
        if self.config.max_grad_norm > 0:
            totals["grad_norm"] = grad_norm
        totals["epoch"] = self.batcher.epoch + self.batcher.position / max(1, self.batcher.batches_per_epoch)
        return totals

    def checkpoint_model(self):
        return self.accelerator.unwrap_model(self.model), self.optimizer, self.scheduler, {}

    def on_train_start(self) -> None:
        if self.step == 0:  # what the data preparation dropped or cut, so that nothing is lost silently
            self.logger.log(0, {"data/examples": len(self.train_examples),
                                "data/skipped_rows": getattr(self.train_examples, "skipped", 0),
                                "data/truncated": getattr(self.train_examples, "truncated", 0)})

    def on_step_end(self) -> None:
        if self.config.eval_steps and self.step % self.config.eval_steps == 0:
            self.logger.log(self.step, self.evaluate())

    def on_train_end(self) -> None:
        cfg = self.config
        if self.eval_examples and not (cfg.eval_steps and self.step % cfg.eval_steps == 0):
            self.logger.log(self.step, self.evaluate())

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        """Metrics on the held-out examples (all of them, in micro-batches, on every process)."""
        if not self.eval_examples:
            return {}
        model = self.accelerator.unwrap_model(self.model)
        model.eval()
        n = float(self.count_units(self.eval_examples))
        totals: dict[str, float] = {}
        size = self.config.micro_batch_size
        batches = (batch for start in range(0, len(self.eval_examples), size)
                   for batch in self.collated_parts(self.eval_examples[start : start + size]))
        for batch in batches:
            with self.autocast():
                _, metrics = self.compute_loss(model, batch, n)
            for k, v in metrics.items():
                totals[k] = totals.get(k, 0.0) + float(v)
        model.train()
        return {f"eval/{k}": v for k, v in totals.items()}
