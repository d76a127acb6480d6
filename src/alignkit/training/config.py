"""The shared training configuration. Each trainer extends it with its own fields.

Every field carries its help text in ``metadata["help"]``: the command line is generated from it.
Configs hold plain values only (numbers, strings, paths): nothing in them is ever executed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


def option(default, help: str, **kwargs):  # noqa: A002 - "help" reads best at the call sites
    """A dataclass field with its help text (used for docs and the CLI)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


@dataclass
class TrainConfig:
    """Settings shared by every offline trainer (SFT, reward model, DPO)."""

    output_dir: str = option("runs/alignkit", "run directory: metrics, checkpoints, final model")
    seed: int = option(0, "seed for data order, initialisation of new heads and sampling")
    batch_size: int = option(8, "examples (or pairs) per optimiser step, summed over processes and accumulation")
    grad_accum_steps: int = option(1, "micro-batches per optimiser step on each process")
    max_steps: int = option(0, "optimiser steps; 0 = num_epochs passes over the data")
    num_epochs: float = option(1.0, "passes over the training data when max_steps is 0")
    learning_rate: float = option(1e-5, "peak AdamW learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay (not applied to biases and norms)")
    adam_beta1: float = option(0.9, "AdamW beta1")
    adam_beta2: float = option(0.999, "AdamW beta2")
    adam_eps: float = option(1e-8, "AdamW epsilon")
    lr_scheduler: str = option("linear", "learning-rate schedule after warmup",
                               choices=("linear", "cosine", "constant"))
    warmup_steps: int = option(0, "steps of linear warmup from 0 to the peak learning rate")
    max_grad_norm: float = option(1.0, "clip the global gradient norm to this (0 = no clipping)")
    mixed_precision: str = option("no", "autocast dtype for forward passes", choices=("no", "bf16"))
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass to save memory")
    lora: bool = option(False, "train LoRA adapters (peft) instead of all weights")
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: int = option(16, "LoRA alpha")
    logging_steps: int = option(1, "log metrics every this many optimiser steps")
    eval_steps: int = option(0, "evaluate every this many steps (0 = only at the end, if there is eval data)")
    save_steps: int = option(0, "write a checkpoint every this many steps (0 = only the final model)")
    save_total_limit: int = option(2, "keep at most this many checkpoints (the newest)")
    resume_from: str = option("", "checkpoint directory to continue from, or 'latest' in output_dir")
    tensorboard: bool = option(True, "write TensorBoard events too (needs the tensorboard package)")
    progress: bool = option(True, "show a progress bar with live metrics")
    skip_invalid: bool = option(False, "skip malformed data rows (counted in the log) instead of failing")
    num_samples: int = option(4, "sample completions written to samples.jsonl and report.html at the end (0 = none)")
    sample_max_new_tokens: int = option(64, "longest sample completion for the report")

    def validate(self, world_size: int = 1) -> None:
        """Fail at config time, naming the setting, instead of a NaN three hours later."""
        positive = ("batch_size", "grad_accum_steps", "logging_steps", "save_total_limit", "lora_r",
                    "sample_max_new_tokens")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_steps", "eval_steps", "save_steps", "warmup_steps", "num_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.max_steps == 0 and not self.num_epochs > 0:
            raise ValueError(f"num_epochs must be > 0 when max_steps is 0, got {self.num_epochs}")
        per_step = self.grad_accum_steps * world_size
        if self.batch_size % per_step:
            raise ValueError(
                f"batch_size={self.batch_size} must be divisible by grad_accum_steps={self.grad_accum_steps} x "
                f"processes={world_size} = {per_step} (each micro-batch needs a whole number of examples)"
            )
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}")
        for name, choices in (("lr_scheduler", ("linear", "cosine", "constant")), ("mixed_precision", ("no", "bf16"))):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.grad_accum_steps

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
