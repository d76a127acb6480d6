"""The configuration root shared by every trainer, offline and online. Each trainer extends it.

``RunConfig`` declares what every trainer has (output, seed, optimiser, schedule, clipping, precision,
LoRA, gradient checkpointing, logging, saving, resume, the non-finite policy); ``TrainConfig`` adds the
offline trainers' data-pass fields and ``alignkit.trainers.OnlineConfig`` the online ones. A field is
declared in one class only: a subclass that wants another default says so with :func:`with_defaults`,
which keeps the field's type and help text.

Every field carries its help text in ``metadata["help"]``: the command line is generated from it.
Configs hold plain values only (numbers, strings, paths): nothing in them is ever executed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

from ..data.tokenize import TRUNCATION_MODES

MIXED_PRECISION = ("no", "bf16")


def option(default, help: str, **kwargs):  # noqa: A002 - "help" reads best at the call sites
    """A dataclass field with its help text (used for docs and the CLI)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help, **kwargs})
    return field(default=default, metadata={"help": help, **kwargs})


def with_defaults(**defaults):
    """Class decorator, placed *under* ``@dataclass``: other defaults for fields a base class declares.

    The field keeps its base's type and help text (``metadata``); only the default changes. The names are
    recorded in ``__default_overrides__`` (a test checks that no field is declared twice otherwise).
    """

    def wrap(cls):
        inherited = {}
        for base in reversed(cls.__mro__[1:]):
            inherited.update(getattr(base, "__dataclass_fields__", {}))
        annotations = dict(cls.__dict__.get("__annotations__", {}))
        for name, value in defaults.items():
            if name not in inherited:
                raise TypeError(f"with_defaults: {cls.__name__} inherits no field {name!r}")
            base_field = inherited[name]
            annotations[name] = base_field.type
            setattr(cls, name, field(default=value, metadata=base_field.metadata))
        cls.__annotations__ = annotations
        cls.__default_overrides__ = tuple(defaults) + tuple(getattr(cls, "__default_overrides__", ()))
        return cls

    return wrap


def _parse_bounds(bounds: str) -> tuple[float, float, bool, bool]:
    """``"[0, 1)"`` -> (0.0, 1.0, low closed, high open): an interval in the usual notation."""
    low, high = (float(x) for x in bounds[1:-1].split(","))
    return low, high, bounds[0] == "[", bounds[-1] == "]"


def _bounds_text(bounds: str) -> str:
    low, high, low_closed, high_closed = _parse_bounds(bounds)
    if math.isinf(high) and math.isinf(low):
        return "a finite number"
    if math.isinf(high):
        return f"a finite number {'>=' if low_closed else '>'} {low:g}"
    return f"in {bounds}"


def check_options(config) -> None:
    """Every field with ``choices`` in its metadata holds one of them, and every field with ``bounds`` (an
    interval such as ``"(0, inf)"`` or ``"[0, 1)"``) holds a finite number in it; the error names the field,
    the allowed values and the value given. Called by every config's ``validate``, before anything is built."""
    for f in fields(config):
        value = getattr(config, f.name)
        allowed = f.metadata.get("choices")
        if allowed and value not in allowed:
            raise ValueError(f"{f.name} must be one of {tuple(allowed)}, got {value!r}")
        bounds = f.metadata.get("bounds")
        if bounds is None:
            continue
        low, high, low_closed, high_closed = _parse_bounds(bounds)
        ok = (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
              and (value >= low if low_closed else value > low) and (value <= high if high_closed else value < high))
        if not ok:
            raise ValueError(f"{f.name} must be {_bounds_text(bounds)}, got {value!r}")


@dataclass
class SeedConfig:
    """The seed, declared once for every trainer and sampling job."""

    seed: int = option(0, "seed for data order, initialisation of new parameters and the sampling noise")


@dataclass
class PromptLengthConfig:
    """The prompt-length limit, declared once for sampling (:class:`SamplingConfig`) and for the offline
    trainers' rows (:class:`TokenizeConfig`): ``alignkit rlaif`` samples and trains with the same one."""

    max_prompt_length: int = option(0, "longest prompt in tokens (0 = no limit): a longer prompt keeps its last "
                                       "tokens (sampling: see prompt_truncation; training rows: with truncation=fit)",
                                    bounds="[0, inf)")


@dataclass
class ChatTemplateConfig:
    """Whether prompts become a user turn of the tokenizer's chat template: declared once for sampling
    (:class:`SamplingConfig`) and for SFT's prompt/completion rows (see ``alignkit.data.chat``)."""

    chat_template: str = option("auto", "render each prompt as a user turn with the tokenizer's chat template: auto "
                                        "(when the tokenizer has one and the prompt is not rendered already), on, "
                                        "or off (the text as is: base models)", choices=("auto", "on", "off"))
    system_prompt: str = option("", "a system turn before each prompt (needs the chat template applied)")


@dataclass
class SamplingConfig(PromptLengthConfig, ChatTemplateConfig):
    """How completions are sampled: declared once for the online trainers, Best-of-N, RLAIF and ``generate``
    (each may set other defaults with :func:`with_defaults`). :meth:`sampling_params` makes the
    ``alignkit.generation.SamplingParams``, which validates them."""

    max_new_tokens: int = option(64, "longest completion, in tokens", bounds="[1, inf)")
    min_new_tokens: int = option(0, "EOS forbidden before this many tokens", bounds="[0, inf)")
    temperature: float = option(1.0, "sampling temperature (> 0); log-probs are computed at the same temperature",
                                bounds="(0, inf)")
    top_k: int = option(0, "top-k sampling (0 = off); the policy gradient assumes untruncated sampling",
                        bounds="[0, inf)")
    top_p: float = option(1.0, "nucleus sampling (1 = off)", bounds="(0, 1]")
    prompt_truncation: str = option("left", "a longer prompt keeps its last tokens (counted in the log) or is an error",
                                    choices=("error", "left"))

    def prompt_kwargs(self) -> dict:
        """``max_prompt_length``, ``prompt_truncation``, ``chat_template``, ``system_prompt`` for
        :func:`alignkit.rollout.tokenize_prompts` (and :func:`~alignkit.rollout.collect_rollout`)."""
        return {"max_prompt_length": self.max_prompt_length or None, "prompt_truncation": self.prompt_truncation,
                "chat_template": self.chat_template, "system_prompt": self.system_prompt}

    def sampling_params(self, n: int, **keys):
        """These settings as :class:`alignkit.generation.SamplingParams` with ``n`` samples per prompt (the one
        place a config becomes sampling parameters; SamplingParams validates them). ``keys``: ``seed``,
        ``first_prompt_index``, ``prompt_keys``, ``greedy``."""
        from ..generation.base import SamplingParams

        return SamplingParams(max_new_tokens=self.max_new_tokens, min_new_tokens=self.min_new_tokens,
                              temperature=float(self.temperature), top_k=self.top_k, top_p=float(self.top_p), n=n,
                              **keys)


@dataclass
class TokenizeConfig(PromptLengthConfig):
    """How the offline trainers' rows become tokens (``alignkit.data.tokenize_sft`` / ``tokenize_preferences``),
    declared once for SFT, the reward model and DPO."""

    max_length: int = option(512, "longest tokenised prompt + response", bounds="[1, inf)")
    truncation: str = option("fit", "longer rows: fit (cut the prompt's start, then the responses' end; counted, "
                                    "never stops the run), error, left (prompt only) or right (responses only)",
                             choices=TRUNCATION_MODES)

    def tokenize_kwargs(self) -> dict:
        """``max_length``, ``truncation`` and ``max_prompt_length`` for the tokenize functions."""
        return {"max_length": self.max_length, "truncation": self.truncation,
                "max_prompt_length": self.max_prompt_length or None}


@dataclass
class ProgressConfig:
    """Whether long phases show a progress bar: declared once for the trainers, Best-of-N and RLAIF labelling."""

    progress: bool = option(True, "show a progress bar (with live metrics while training)")


@dataclass
class RunConfig(SeedConfig, ProgressConfig):
    """Settings every trainer shares (offline and online)."""

    output_dir: str = option("runs/alignkit", "run directory: metrics, checkpoints, final model")
    grad_accum_steps: int = option(1, "micro-batches per optimiser step on each process", bounds="[1, inf)")
    learning_rate: float = option(1e-5, "peak AdamW learning rate (the policy's, for the online trainers)",
                                  bounds="(0, inf)")
    weight_decay: float = option(0.0, "AdamW weight decay (not applied to biases and norms)", bounds="[0, inf)")
    adam_beta1: float = option(0.9, "AdamW beta1", bounds="[0, 1)")
    adam_beta2: float = option(0.999, "AdamW beta2", bounds="[0, 1)")
    adam_eps: float = option(1e-8, "AdamW epsilon", bounds="(0, inf)")
    lr_scheduler: str = option("linear", "learning-rate schedule after warmup",
                               choices=("linear", "cosine", "constant"))
    warmup_steps: int = option(0, "optimiser steps of linear warmup from 0 to the peak learning rate",
                               bounds="[0, inf)")
    max_grad_norm: float = option(1.0, "clip the global gradient norm to this (0 = no clipping)", bounds="[0, inf)")
    mixed_precision: str = option("no", "bf16: autocast forward passes (and sample from a bf16 copy of the "
                                  "policy, online); weights and optimiser stay fp32", choices=MIXED_PRECISION)
    gradient_checkpointing: bool = option(False, "recompute activations in the backward pass to save memory")
    lora: bool = option(False, "train LoRA adapters (peft) instead of all weights")
    lora_r: int = option(8, "LoRA rank", bounds="[1, inf)")
    lora_alpha: int = option(16, "LoRA alpha", bounds="(0, inf)")
    on_nonfinite: str = option("raise", "a non-finite loss, gradient or reward: stop before anything is saved, "
                               "or skip that step's update and count it (skipped_updates)", choices=("raise", "skip"))
    logging_steps: int = option(1, "log metrics every this many steps", bounds="[1, inf)")
    save_steps: int = option(0, "write a checkpoint every this many steps (0 = only the final model)",
                             bounds="[0, inf)")
    save_total_limit: int = option(2, "keep at most this many checkpoints (the newest)", bounds="[1, inf)")
    resume_from: str = option("", "checkpoint directory to continue from, or 'latest' in output_dir")
    overwrite: bool = option(False, "replace an earlier run's results in output_dir (metrics, checkpoints, final/) "
                                    "instead of refusing to start there")
    tensorboard: bool = option(True, "write TensorBoard events too (needs the tensorboard package)")
    num_samples: int = option(4, "sample completions written to samples.jsonl and report.html (0 = none)",
                              bounds="[0, inf)")

    def validate_run(self) -> None:
        """The shared fields' checks (each trainer's ``validate`` calls this first): every option's choices and
        bounds, in every class of the config."""
        check_options(self)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class TrainConfig(RunConfig):
    """The offline trainers' settings (SFT, reward model, DPO): passes over a fixed data set."""

    batch_size: int = option(8, "examples (or pairs) per optimiser step, summed over processes and accumulation",
                             bounds="[1, inf)")
    max_steps: int = option(0, "optimiser steps; 0 = num_epochs passes over the data", bounds="[0, inf)")
    num_epochs: float = option(1.0, "passes over the training data when max_steps is 0", bounds="(0, inf)")
    eval_steps: int = option(0, "evaluate every this many steps (0 = only at the end, if there is eval data)",
                             bounds="[0, inf)")
    max_micro_batch_tokens: int = option(
        8192, "most padded tokens (rows x longest row) in one forward/backward pass: a micro-batch above it is "
        "cut into smaller ones with the same gradient, so long rows lower the peak memory, not the batch "
        "(0 = no limit)", bounds="[0, inf)")
    skip_invalid: bool = option(False, "skip malformed data rows (counted in the log) instead of failing")
    sample_max_new_tokens: int = option(64, "longest sample completion for the report", bounds="[1, inf)")

    def validate(self, world_size: int = 1) -> None:
        """Fail at config time, naming the setting, instead of a NaN three hours later."""
        self.validate_run()
        per_step = self.grad_accum_steps * world_size
        if self.batch_size % per_step:
            raise ValueError(
                f"batch_size={self.batch_size} must be divisible by grad_accum_steps={self.grad_accum_steps} x "
                f"processes={world_size} = {per_step} (each micro-batch needs a whole number of examples)"
            )

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.grad_accum_steps
