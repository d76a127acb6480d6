"""``alignkit <command> [--config preset.yaml] [key=value ...]``: every method from the command line.

Options come from the trainers' config dataclasses (help text from each field's ``metadata["help"]``) plus
a few job fields (model, data files). Precedence: defaults < preset file < ``key=value`` overrides.
Everything is validated before anything is written: an unknown command or key, a value of the wrong type,
a missing file, or a preset written for another method prints a message naming the key (and the valid
choices) and exits with code 2. The resolved config is saved as ``<output_dir>/resolved_config.yaml``.
Configs hold values only: nothing in them is executed (a reward function is named by import path).
"""

from __future__ import annotations

import difflib
import functools
import os
import sys
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

from .training.config import SamplingConfig, SeedConfig, option

USAGE_ERROR = 2


class UsageError(Exception):
    """A bad command line or preset; printed and turned into exit code 2."""


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
class GenerateJob(ModelJob, SeedConfig, SamplingConfig):
    """Sample completions from a checkpoint (sampling fields from ``SamplingConfig``)."""

    prompts_file: str = option("", "prompts (.jsonl with a prompt column) (required)")
    output_dir: str = option("runs/generate", "run directory; completions go to completions.jsonl")
    n: int = option(1, "samples per prompt")
    greedy: bool = option(False, "argmax decoding")

    def sampling(self):
        """These settings as :class:`~alignkit.generation.SamplingParams` (which validates them)."""
        from .generation import SamplingParams

        return SamplingParams(**self.sampling_kwargs(), n=self.n, seed=self.seed, greedy=self.greedy)

    def validate(self) -> None:
        self.sampling()


@dataclass
class PromptsJob:
    prompts_file: str = option("", "prompts (.jsonl with a prompt column) (required)")


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
class OnlineDataJob(JudgeSource):
    """Prompts and exactly one reward source; a judge here scores each completion (online RLAIF)."""

    prompts_file: str = option("", "prompts (.jsonl with a prompt column, or GSM8K rows) (required)")
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
                _pair_judge(self.judge)
            except (ValueError, ImportError, TypeError) as e:
                raise UsageError(f"judge: {e}") from None


def _pair_judge(spec: str):
    """The judge object named by import path (a class is built with no arguments)."""
    import inspect

    from .rewards.base import resolve_import_path

    obj = resolve_import_path(spec, "judge")
    if inspect.isclass(obj):
        obj = obj()
    if not callable(getattr(obj, "prefer", None)):
        raise TypeError(f"{spec!r} has no prefer(prompts, responses_a, responses_b) method")
    return obj


@functools.lru_cache(maxsize=1)
def _commands() -> dict[str, tuple[type, str]]:
    """command -> (job config class, one-line description). Built lazily (and once) to keep ``import`` cheap."""
    from .trainers import BestOfNConfig, DPOConfig, PPOConfig, ReinforceConfig, RewardConfig, SFTConfig, TRPOConfig

    def job(name, *bases):
        return dataclass(type(name, bases, {}))

    return {
        "sft": (job("SFTJob", SFTConfig, OfflineDataJob, ModelJob), "supervised fine-tuning on prompt/completion data"),
        "reward": (job("RewardJob", RewardConfig, OfflineDataJob, ModelJob), "train a Bradley-Terry reward model"),
        "dpo": (job("DPOJob", DPOConfig, OfflineDataJob, ModelJob), "DPO / IPO / cDPO / hinge on preference pairs"),
        "reinforce": (job("ReinforceJob", ReinforceConfig, OnlineDataJob, ModelJob),
                      "REINFORCE with a baseline (none, batch, prompt, loo = RLOO, grpo)"),
        "ppo": (job("PPOJob", PPOConfig, OnlineDataJob, ModelJob), "PPO actor-critic with a KL penalty"),
        "trpo": (job("TRPOJob", TRPOConfig, OnlineDataJob, ModelJob), "TRPO: KL-constrained natural-gradient steps"),
        "bon": (job("BestOfNJob", BestOfNConfig, OutputJob, OnlineDataJob, ModelJob),
                "Best-of-N sampling with a reward: win rate, KL bound, chosen completions as SFT data"),
        "rlaif": (rlaif_job(), "RLAIF: an AI judge labels pairs of policy samples; train a reward model or DPO"),
        "generate": (GenerateJob, "sample completions from a checkpoint"),
    }


CLASSIC = {
    "gridworld": ("alignkit.classic.tabular_cli", "GridworldConfig", "run_gridworld",
                  "value / policy iteration on the 4x3 grid world of seed 004 (slip, living reward, gamma)"),
    "bandit": ("alignkit.classic.tabular_cli", "BanditConfig", "run_bandit",
               "the 10-armed testbed: epsilon-greedy, optimistic, UCB, gradient bandits over many runs"),
    "gym": ("alignkit.classic.gym_runner", "GymConfig", "run_gym",
            "REINFORCE, A2C, Q actor-critic, PPO, TRPO, behaviour cloning, preference-based PPO on gymnasium"),
}
"""``alignkit classic <sub>``: (module, config class, runner, description); imported only when used (no
transformers import for the classic commands)."""


def _classic(sub: str) -> tuple[type, object]:
    import importlib

    module, config, runner, _ = CLASSIC[sub]
    mod = importlib.import_module(module)
    return getattr(mod, config), getattr(mod, runner)


def _table(command: str) -> dict[str, tuple[type, str]]:
    """The command table ``command`` belongs to (classic ones are looked up without loading the LM stack)."""
    if command.startswith("classic "):
        sub = command.split(" ", 1)[1]
        if sub not in CLASSIC:
            raise UsageError(f"unknown command 'classic {sub}'; choose one of classic {', classic '.join(CLASSIC)}")
        return {command: (_classic(sub)[0], CLASSIC[sub][3])}
    return _commands()


def _project(config, cls):
    """``cls`` built from the fields of ``config`` that it declares (a job config is a union of configs)."""
    return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})


def rlaif_job() -> type:
    """``alignkit rlaif``: sampling/labelling (RLAIFConfig) + training (RewardConfig or DPOConfig) + judge."""
    from .trainers import DPOConfig, RewardConfig
    from .trainers.rlaif import RLAIFConfig

    def validate(self) -> None:
        self.validate_judge()
        _project(self, RLAIFConfig)  # validates on construction
        _project(self, RewardConfig if self.rlaif_method == "reward" else DPOConfig).validate()

    bases = (JudgeJob, RLAIFConfig, DPOConfig, RewardConfig, PromptsJob, ModelJob)
    return dataclass(type("RLAIFJob", bases, {"validate": validate, "__post_init__": lambda self: None}))


# ------------------------------------------------------------------------------------------ parsing
def _coerce(name: str, raw: Any, default: Any, choices) -> Any:
    """Convert ``raw`` (a string from the command line, or a YAML value) to the type of ``default``."""
    kind = type(default)
    try:
        if kind is bool:
            if isinstance(raw, bool):
                value = raw
            elif str(raw).lower() in ("true", "1", "yes", "on"):
                value = True
            elif str(raw).lower() in ("false", "0", "no", "off"):
                value = False
            else:
                raise ValueError
        elif kind is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            value = int(raw)
        elif kind is float:
            if isinstance(raw, bool):
                raise ValueError
            value = float(raw)
        else:
            if isinstance(raw, (dict, list)):
                raise ValueError
            value = str(raw)
    except (TypeError, ValueError):
        raise UsageError(f"{name}: expected {kind.__name__}, got {raw!r}") from None
    if choices and value not in choices:
        raise UsageError(f"{name}: {value!r} is not one of {', '.join(map(str, choices))}")
    return value


def _unknown_key(command: str, key: str, known: list[str]) -> UsageError:
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UsageError(f"unknown key {key!r} for '{command}'{hint} (see: alignkit {command} --help)")


def parse_config(command: str, argv: list[str]):
    """Build the job config of ``command`` from ``[--config FILE] [key=value ...]``; raises UsageError."""
    commands = _table(command)
    if command not in commands:
        raise UsageError(f"unknown command {command!r}; choose one of {', '.join(sorted(commands))}")
    cls = commands[command][0]
    spec = {f.name: f for f in fields(cls)}
    values: dict[str, Any] = {}
    preset = None
    overrides = []
    it = iter(argv)
    for arg in it:
        if arg == "--config":
            preset = next(it, None)
            if preset is None:
                raise UsageError("--config needs a file")
        elif arg.startswith("--config="):
            preset = arg.split("=", 1)[1]
        elif "=" in arg and not arg.startswith("-"):
            overrides.append(arg.split("=", 1))
        else:
            raise UsageError(f"unexpected argument {arg!r}: options are key=value (see: alignkit {command} --help)")
    if preset is not None:
        values.update(_read_preset(command, preset))
    values.update(dict(overrides))
    resolved = {}
    for key, raw in values.items():
        if key not in spec:
            raise _unknown_key(command, key, list(spec))
        f = spec[key]
        default = f.default if f.default is not MISSING else f.default_factory()
        resolved[key] = _coerce(key, raw, default, f.metadata.get("choices"))
    try:
        config = cls(**resolved)
        _check_required(command, config)
        if hasattr(config, "validate"):
            _validate(config)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return config


def _validate(config) -> None:
    """``config.validate``, with the number of processes of this launch (``torchrun`` / ``accelerate launch``
    set WORLD_SIZE) where it takes one, so an impossible split fails here, before anything is written."""
    import inspect

    if "world_size" in inspect.signature(config.validate).parameters:
        config.validate(world_size=int(os.environ.get("WORLD_SIZE", "1")))
    else:
        config.validate()


def _read_preset(command: str, path: str) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--config: no such file {path!r}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UsageError(f"--config {path}: not valid YAML ({e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a mapping of key: value")
    method = data.pop("method", command)
    if method != command:
        raise UsageError(f"--config {path} is a preset for '{method}', not '{command}' "
                         f"(run: alignkit {method} --config {path})")
    return data


def _check_required(command: str, config) -> None:
    if hasattr(config, "model") and not config.model:
        raise UsageError("model: required (a local model directory)")
    for key in ("model", "train_file", "eval_file", "prompts_file", "reward_model", "judge_model", "rubric_file"):
        value = getattr(config, key, "")
        if value and not Path(value).exists():
            raise UsageError(f"{key}: no such file or directory {value!r}")
    if hasattr(config, "train_file") and not config.train_file:
        raise UsageError("train_file: required")
    if hasattr(config, "prompts_file"):
        if not config.prompts_file:
            raise UsageError("prompts_file: required")
        if not hasattr(config, "reward_fn"):
            return
        sources = [k for k in ("reward_fn", "reward_model", "judge_model", "judge_url") if getattr(config, k)]
        if len(sources) != 1:
            raise UsageError("give exactly one reward source: reward_fn (import path), reward_model (directory), or "
                             "judge_model / judge_url (an AI judge scores each completion: online RLAIF); got: "
                             f"{', '.join(sources) or 'none'}")
        config.check_judge_source()
        if config.reward_fn:
            from .rewards import resolve_reward_fn

            try:
                resolve_reward_fn(config.reward_fn)
            except (ValueError, ImportError, AttributeError, TypeError) as e:
                raise UsageError(f"reward_fn: {e}") from None


# ------------------------------------------------------------------------------------------ help
def command_help(command: str) -> str:
    cls, about = _table(command)[command]
    lines = [f"usage: alignkit {command} [--config preset.yaml] [key=value ...]", "", about, "", "options:"]
    for f in fields(cls):
        default = f.default if f.default is not MISSING else f.default_factory()
        choices = f.metadata.get("choices")
        extra = f" (choices: {', '.join(map(str, choices))})" if choices else ""
        lines.append(f"  {f.name}={default!r}")
        lines.append(f"      {f.metadata.get('help', '')}{extra}")
    return "\n".join(lines)


def main_help() -> str:
    rows = [f"  {name:<10} {about}" for name, (_, about) in _commands().items()]
    rows.append(f"  {'classic':<10} the foundations: classic gridworld | bandit | gym (alignkit classic --help)")
    rows.append(f"  {'report':<10} (re)write a run directory's report.html: alignkit report RUN_DIR")
    rows.append(f"  {'quickstart':<10} the built-in pipeline: SFT -> reward model -> PPO (and DPO), minutes on a CPU")
    return "\n".join(["usage: alignkit <command> [--config preset.yaml] [key=value ...]", "",
                      "Align language models with human and AI feedback.", "", "commands:", *rows, "",
                      "alignkit <command> --help lists a command's options."])


# ------------------------------------------------------------------------------------------ running
def _save_resolved(config) -> None:
    import yaml

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    values = {f.name: getattr(config, f.name) for f in fields(config)}
    (out / "resolved_config.yaml").write_text(yaml.safe_dump(values, sort_keys=False))


def run_classic(command: str, config) -> None:
    """Run ``alignkit classic <sub>``: the runner writes its PNGs and summary.json, then report.html."""
    from .training.report import html_image, write_report

    _save_resolved(config)
    summary = _classic(command.split(" ", 1)[1])[1](config)
    out = Path(config.output_dir)
    flat = {k: v for k, v in (summary or {}).items() if isinstance(v, (int, float, str, bool))}
    sections = [(png.stem.replace("_", " "), html_image(png.name, png.stem)) for png in sorted(out.glob("*.png"))]
    write_report(out, title=f"alignkit {command}: {out.resolve().name}", summary=flat, sections=sections)


def prompt_columns(rows) -> dict[str, list]:
    """The extra columns of prompt-file rows (e.g. GSM8K's ``answer``) as ``{name: [value per row]}``, for the
    reward function. A column must be in every row: one missing from some rows is a DataError naming the
    first such row (a reward would otherwise get ``None`` there and score it silently)."""
    from .data import DataError

    names = list(dict.fromkeys(k for r in rows for k in r if k != "prompt"))
    for name in names:
        missing = [i for i, r in enumerate(rows) if name not in r]
        if missing:
            raise DataError(f"has no {name!r} column, which {len(rows) - len(missing)} other rows of the prompt file "
                            f"have ({len(missing)} rows lack it); give every row the column or none",
                            location=rows.where(missing[0]))
    return {name: [r[name] for r in rows] for name in names}


def check_prompt_lengths(tok, rows, config) -> None:
    """With ``prompt_truncation=error``: every prompt of the file, as it will be rendered, fits
    ``max_prompt_length``; else a DataError naming the first one's line (found before the model loads, not when
    its step comes)."""
    from .data import DataError
    from .rollout import tokenize_prompts

    kwargs = {**config.prompt_kwargs(), "max_prompt_length": None}
    ids, _ = tokenize_prompts(tok, [r["prompt"] for r in rows], **kwargs)
    too_long = [i for i, x in enumerate(ids) if len(x) > config.max_prompt_length]
    if too_long:
        i = too_long[0]
        raise DataError(f"prompt is {len(ids[i])} tokens, more than max_prompt_length={config.max_prompt_length} "
                        f"({len(too_long)} prompts are); with prompt_truncation=error nothing is cut (the default, "
                        "left, keeps each prompt's last tokens)", location=rows.where(i))


def run(command: str, config) -> None:
    """Run ``command`` with its parsed config, then say where its results went."""
    if command.startswith("classic "):
        run_classic(command, config)
    else:
        _run(command, config)
    if int(os.environ.get("RANK", "0")) == 0:
        print(results_summary(config.output_dir))


RESULT_FILES = ("final", "report.html", "metrics.jsonl", "completions.jsonl", "best_of_n.jsonl", "summary.json")


def results_summary(output_dir: str) -> str:
    """``results in DIR:`` and the result files present there (final model, report, metrics...)."""
    out = Path(output_dir)
    found = [f"  {out / name}{'/' if (out / name).is_dir() else ''}" for name in RESULT_FILES if (out / name).exists()]
    return "\n".join([f"results in {out}/:", *found])


def _run(command: str, config) -> None:
    from .data import load_rows, tokenize_preferences, tokenize_sft
    from .models import RewardModel, load_causal_lm, load_tokenizer

    if hasattr(config, "overwrite"):  # a trainer: its run directory must be free (checked again when it starts)
        from .training.run_dir import RunDirectoryError, check_run_dir

        try:
            check_run_dir(config.output_dir, config.resume_from, config.overwrite)
        except RunDirectoryError as e:
            raise UsageError(str(e)) from None
    # every data file is read and validated before the model loads or anything is written
    fmt = getattr(config, "data_format", "") or None
    offline = command in ("sft", "reward", "dpo")
    if offline:
        train_rows = load_rows(config.train_file, format=fmt, skip_invalid=config.skip_invalid)
        eval_rows = load_rows(config.eval_file, format=fmt, skip_invalid=config.skip_invalid) if config.eval_file \
            else None
    else:
        rows = load_rows(config.prompts_file, skip_invalid=False)
        prompts, columns = [r["prompt"] for r in rows], prompt_columns(rows)
    tok = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code, pad_policy=config.pad_policy)
    if not offline and getattr(config, "prompt_truncation", "") == "error" and config.max_prompt_length:
        check_prompt_lengths(tok, rows, config)
    policy = load_causal_lm(config.model, trust_remote_code=config.trust_remote_code, tokenizer=tok)
    _save_resolved(config)
    if offline:
        from .trainers import DPOTrainer, RewardTrainer, SFTTrainer

        if command == "sft":
            tokenize = lambda rows: tokenize_sft(rows, tok, **config.tokenize_kwargs())  # noqa: E731
        else:
            tokenize = lambda rows: tokenize_preferences(rows, tok, **config.tokenize_kwargs())  # noqa: E731
        train, held_out = tokenize(train_rows), (tokenize(eval_rows) if eval_rows is not None else None)
        if command == "sft":
            SFTTrainer(config, policy, train, held_out, tokenizer=tok).train()
        elif command == "reward":
            rm = RewardModel.from_causal_lm(policy, pad_token_id=tok.pad_token_id)
            RewardTrainer(config, rm, train, held_out, tokenizer=tok).train()
        else:
            DPOTrainer(config, policy, train, held_out, tokenizer=tok).train()
        return
    from .rewards import RewardModelScorer, resolve_reward_fn
    from .trainers import PPOTrainer, ReinforceTrainer, TRPOTrainer

    if command == "generate":
        _generate(config, policy, tok, prompts)
        return
    if command == "rlaif":
        _rlaif(config, policy, tok, prompts)
        return
    if config.reward_fn:
        reward = resolve_reward_fn(config.reward_fn)
    elif config.judge_model or config.judge_url:
        reward = _judge(config)  # a Judge is a RewardFn: the expected score label of each completion
    else:
        from .models import load_reward_model

        reward = RewardModelScorer(load_reward_model(config.reward_model), tok)
    if command == "bon":
        _bon(config, policy, tok, prompts, reward, columns)
        return
    trainer_cls = {"reinforce": ReinforceTrainer, "ppo": PPOTrainer, "trpo": TRPOTrainer}[command]
    trainer_cls(config, policy, tok, prompts, reward, columns=columns).train()


def _quickstart(argv: list[str]) -> int:
    """``alignkit quickstart [key=value ...]``: the built-in SFT -> reward model -> PPO / DPO pipeline."""
    from .quickstart import QuickstartConfig, run_quickstart

    if any(a in ("-h", "--help") for a in argv):
        print("usage: alignkit quickstart [key=value ...]\n\n" + (run_quickstart.__doc__ or "") + "\n\noptions:")
        for f in fields(QuickstartConfig):
            print(f"  {f.name}={f.default!r}\n      {f.metadata['help']}")
        return 0
    spec = {f.name: f for f in fields(QuickstartConfig)}
    values = {}
    try:
        for arg in argv:
            if "=" not in arg or arg.startswith("-"):
                raise UsageError(f"unexpected argument {arg!r}: options are key=value (alignkit quickstart --help)")
            key, raw = arg.split("=", 1)
            if key not in spec:
                raise _unknown_key("quickstart", key, list(spec))
            values[key] = _coerce(key, raw, spec[key].default, None)
    except UsageError as e:
        print(f"alignkit quickstart: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    run_quickstart(QuickstartConfig(**values))
    return 0


def _judge(config):
    from .models import load_causal_lm, load_tokenizer
    from .rewards import HTTPChatJudge, LocalLMJudge

    extra = {"rubric": Path(config.rubric_file).read_text()} if config.rubric_file else {}
    if getattr(config, "judge", ""):
        return _pair_judge(config.judge)
    if config.judge_url:
        key = os.environ[config.judge_api_key_env] if config.judge_api_key_env else None
        return HTTPChatJudge(config.judge_url, config.judge_name, api_key=key, **extra)
    tok = load_tokenizer(config.judge_model, trust_remote_code=config.trust_remote_code, pad_policy=config.pad_policy)
    model = load_causal_lm(config.judge_model, trust_remote_code=config.trust_remote_code, tokenizer=tok)
    return LocalLMJudge(model, tok, **extra)


def _rlaif(config, policy, tok, prompts: list[str]) -> None:
    """Sample pairs, label them with the judge (ai_labels.jsonl), then train a reward model or DPO on them."""
    import json

    from .generation import KVCacheGenerator
    from .models import RewardModel
    from .trainers import DPOConfig, RewardConfig
    from .trainers.rlaif import RLAIFConfig, label_pairs_with_judge, train_on_ai_labels
    from .training.distributed import make_accelerator

    out = Path(config.output_dir)
    accelerator = make_accelerator()  # several processes: each samples and judges a share of the pairs
    engine = KVCacheGenerator(policy.to(accelerator.device), tok.eos_token_id, tok.pad_token_id)
    labels = label_pairs_with_judge(prompts, tok, engine, _judge(config), _project(config, RLAIFConfig),
                                    rank=accelerator.process_index, world_size=accelerator.num_processes)
    if accelerator.is_main_process:
        labels.write_jsonl(out / "ai_labels.jsonl")
        (out / "ai_labels_summary.json").write_text(json.dumps(labels.counts, indent=2))
        print(json.dumps(labels.counts, indent=2))
    if config.rlaif_method == "reward":
        model = RewardModel.from_causal_lm(policy, pad_token_id=tok.pad_token_id)
        train_config = _project(config, RewardConfig)
    else:
        model, train_config = policy, _project(config, DPOConfig)
    trainer = train_on_ai_labels(labels, tok, model, config.rlaif_method, train_config, train=False)
    trainer.report_summary = {f"ai_labels/{k}": v for k, v in labels.counts.items()}  # shown in report.html
    trainer.train()


def _bon(config, policy, tok, prompts: list[str], reward, columns: dict) -> None:
    """Best-of-N: ``best_of_n.jsonl`` (the chosen completions as SFT rows), ``summary.json`` and the report."""
    import json

    from .generation import KVCacheGenerator
    from .trainers import best_of_n
    from .training.distributed import make_accelerator
    from .training.report import append_samples, write_report

    accelerator = make_accelerator()  # several processes: each samples and scores a share of the prompts
    engine = KVCacheGenerator(policy.to(accelerator.device), tok.eos_token_id, tok.pad_token_id)
    result = best_of_n(prompts, tok, engine, reward, config, columns=columns, rank=accelerator.process_index,
                       world_size=accelerator.num_processes)
    if accelerator.is_main_process:
        summary = result.summary()
        out = Path(config.output_dir)
        result.write_jsonl(out / "best_of_n.jsonl")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))
        append_samples(out, 0, result.to_sft_rows()[:8])
        write_report(out, title=f"alignkit bon: {out.resolve().name}", summary=summary)
    accelerator.wait_for_everyone()  # no process leaves (and tears the process group down) before the writes


def _report(argv: list[str]) -> int:
    """``alignkit report RUN_DIR``: (re)write report.html of a run, e.g. one that was stopped early."""
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print("usage: alignkit report RUN_DIR\n\n(re)write RUN_DIR/report.html and its plots from metrics.jsonl, "
              "samples.jsonl and the saved config", file=sys.stdout if argv else sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else USAGE_ERROR
    run_dir = Path(argv[0])
    if not run_dir.is_dir():
        print(f"alignkit report: error: no such run directory {argv[0]!r}", file=sys.stderr)
        return USAGE_ERROR
    from .training.report import write_report

    try:
        print(write_report(run_dir))
    except ValueError as e:  # a corrupt metrics.jsonl line, named with its number
        print(f"alignkit report: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    return 0


def _generate(config, policy, tok, prompts: list[str]) -> None:
    """Write ``completions.jsonl`` ({prompt, completion, finished}) and print the first few."""
    import json

    from .generation import KVCacheGenerator
    from .rollout import completion_rows, tokenize_prompts
    from .training.report import append_samples, write_report

    ids, n_cut = tokenize_prompts(tok, prompts, **config.prompt_kwargs())
    if n_cut:
        print(f"{n_cut} of {len(prompts)} prompts were longer than max_prompt_length={config.max_prompt_length}: "
              "kept their last tokens")
    comp = KVCacheGenerator(policy, tok.eos_token_id, tok.pad_token_id).generate(ids, config.sampling())
    rows = completion_rows(tok, comp, prompts)
    path = Path(config.output_dir) / "completions.jsonl"
    with path.open("w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    for row in rows[:5]:
        print(f"{row['prompt']!r} -> {row['completion']!r}")
    print(f"wrote {len(rows)} completions to {path}")
    append_samples(path.parent, 0, rows[:8])
    write_report(path.parent, title=f"alignkit generate: {path.parent.resolve().name}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "quickstart":
        return _quickstart(argv[1:])
    if argv and argv[0] == "report":
        return _report(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print(main_help())
        return 0 if argv else USAGE_ERROR
    command, rest = argv[0], argv[1:]
    if command == "classic":
        if not rest or rest[0] in ("-h", "--help"):
            print("usage: alignkit classic <gridworld|bandit|gym> [--config preset.yaml] [key=value ...]\n\n"
                  "commands:\n" + "\n".join(f"  {k:<10} {v[3]}" for k, v in CLASSIC.items()))
            return 0 if rest else USAGE_ERROR
        if "=" in rest[0] or rest[0].startswith("-"):
            print(f"alignkit classic: error: name a command before the options: {', '.join(CLASSIC)}", file=sys.stderr)
            return USAGE_ERROR
        command, rest = f"classic {rest[0]}", rest[1:]
    try:
        if not command.startswith("classic ") and command not in _commands():
            raise UsageError(f"unknown command {command!r}; choose one of "
                             f"{', '.join(sorted([*_commands(), 'classic', 'quickstart']))}")
        if any(a in ("-h", "--help") for a in rest):
            print(command_help(command))
            return 0
        config = parse_config(command, rest)
    except UsageError as e:
        print(f"alignkit {command}: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    try:
        run(command, config)
    except UsageError as e:
        print(f"alignkit {command}: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
