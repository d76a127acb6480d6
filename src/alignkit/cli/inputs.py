"""What a command reads before anything is written: its data files (validated), tokenizer, model and reward."""

from __future__ import annotations

import os
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from .parser import UsageError


def check_run_directory(config) -> None:
    """A trainer's run directory must be free (or resumed / overwritten on purpose); checked again when it starts."""
    if not hasattr(config, "overwrite"):
        return
    from ..training.run_dir import RunDirectoryError, check_run_dir

    try:
        check_run_dir(config.output_dir, config.resume_from, config.overwrite)
    except RunDirectoryError as e:
        raise UsageError(str(e)) from None


@contextmanager
def data_notes():
    """What the data layer warns about (rows skipped with ``skip_invalid``) as one plain line each on stderr,
    not as a Python warning that prints a line of alignkit's source."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        yield
    for w in caught:
        print(f"note: {w.message}", file=sys.stderr)


def load_offline_rows(config):
    """(training rows, held-out rows or None) of an offline job, read and validated."""
    from ..data import load_rows

    fmt = config.data_format or None
    with data_notes():
        train = load_rows(config.train_file, format=fmt, skip_invalid=config.skip_invalid)
        held_out = (load_rows(config.eval_file, format=fmt, skip_invalid=config.skip_invalid) if config.eval_file
                    else None)
    return train, held_out


def load_prompt_rows(config, tok):
    """(rows, prompt strings, extra columns) of a job's prompt file: ``{"prompt"}`` rows, or ``{"messages"}``
    rows ending with a turn for the model to answer, rendered here with the chat template's generation prompt
    (:func:`alignkit.data.chat.render_chat_prompt`; every later step takes them as rendered)."""
    from ..data import DataError, load_rows
    from ..data.chat import render_chat_prompt

    rows = load_rows(config.prompts_file, skip_invalid=False)
    prompts = []
    if rows.format == "messages":  # chat turns that end with the assistant's: SFT examples, not prompts
        raise DataError("ends with the assistant's turn: a prompt file's messages end with a turn for the model to "
                        "answer (messages rows ending with the assistant's turn are SFT data)",
                        location=rows.where(0), field="messages")
    for i, row in enumerate(rows):
        if "prompt" in row:
            prompts.append(row["prompt"])
            continue
        try:
            prompts.append(render_chat_prompt(row["messages"], tok, config.chat_template, config.system_prompt))
        except ValueError as e:
            raise DataError(str(e), location=rows.where(i), field="messages") from None
    return rows, prompts, prompt_columns(rows)


def prompt_columns(rows) -> dict[str, list]:
    """The extra columns of prompt-file rows (e.g. GSM8K's ``answer``) as ``{name: [value per row]}``, for the
    reward function. A column must be in every row: one missing from some rows is a DataError naming the
    first such row (a reward would otherwise get ``None`` there and score it silently)."""
    from ..data import DataError

    names = list(dict.fromkeys(k for r in rows for k in r if k not in ("prompt", "messages")))
    for name in names:
        missing = [i for i, r in enumerate(rows) if name not in r]
        if missing:
            raise DataError(f"has no {name!r} column, which {len(rows) - len(missing)} other rows of the prompt file "
                            f"have ({len(missing)} rows lack it); give every row the column or none",
                            location=rows.where(missing[0]))
    return {name: [r[name] for r in rows] for name in names}


def prompt_lengths(tok, prompts, config) -> list[int]:
    """Tokens of every prompt of the file, rendered as it will be sampled from, before any cut (one pass over
    the file, found before the model loads)."""
    from ..rollout import tokenize_prompts

    ids, _ = tokenize_prompts(tok, prompts, **{**config.prompt_kwargs(), "max_prompt_length": None})
    return [len(x) for x in ids]


def check_prompt_truncation(lengths: list[int], rows, config) -> None:
    """With ``prompt_truncation=error``, every prompt fits ``max_prompt_length``: else a DataError naming the first
    one's line (before the model loads, not when its step comes)."""
    if getattr(config, "prompt_truncation", "") != "error" or not config.max_prompt_length:
        return
    from ..data import DataError

    too_long = [i for i, n in enumerate(lengths) if n > config.max_prompt_length]
    if too_long:
        i = too_long[0]
        raise DataError(f"prompt is {lengths[i]} tokens, more than max_prompt_length={config.max_prompt_length} "
                        f"({len(too_long)} prompts are); with prompt_truncation=error nothing is cut (the default, "
                        "left, keeps each prompt's last tokens)", location=rows.where(i))


def check_prompts_fit_context(lengths: list[int], rows, config, context: int | None) -> None:
    """Every prompt, once cut to ``max_prompt_length``, with ``max_new_tokens`` more fits the model's ``context``
    (positions); else a DataError naming the longest such prompt and the setting to change."""
    if context is None:
        return
    from ..data import DataError

    kept = [min(n, config.max_prompt_length) if config.max_prompt_length else n for n in lengths]
    over = [i for i, n in enumerate(kept) if n + config.max_new_tokens > context]
    if over:
        i = max(over, key=lambda k: kept[k])
        raise DataError(f"prompt is {kept[i]} tokens; with max_new_tokens={config.max_new_tokens} that is more "
                        f"than the model's {context} positions ({len(over)} prompts are); set max_prompt_length="
                        f"{max(1, context - config.max_new_tokens)} (prompts keep their last tokens) or lower "
                        "max_new_tokens", location=rows.where(i))


def model_context(policy) -> int | None:
    """The positions the model can attend over (``max_position_embeddings``), if its config says."""
    return getattr(getattr(policy, "config", None), "max_position_embeddings", None)


def check_max_length(config, context: int | None) -> None:
    """An offline job's ``max_length`` (prompt + response tokens) fits the model's context."""
    if context is not None and getattr(config, "max_length", 0) > context:
        raise UsageError(f"max_length={config.max_length} is more than the model's {context} positions "
                         f"(max_position_embeddings): set max_length <= {context}")


def quiet_transformers() -> None:
    """No "Loading weights" / "Writing model shards" bars from transformers on every command (alignkit shows
    its own progress where a phase is long)."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def load_tokenizer_for(config):
    from ..models import load_tokenizer

    quiet_transformers()
    return load_tokenizer(config.model, trust_remote_code=config.trust_remote_code, pad_policy=config.pad_policy)


def load_policy(config, tok):
    from ..models import load_causal_lm

    return load_causal_lm(config.model, trust_remote_code=config.trust_remote_code, tokenizer=tok)


def reward_source(config, tok):
    """The job's reward: a function by import path, an AI judge (a Judge is a RewardFn: the expected score label of
    each completion) or a reward model's scorer."""
    if config.reward_fn:
        from ..rewards import resolve_reward_fn

        return resolve_reward_fn(config.reward_fn)
    if config.judge_model or config.judge_url:
        return judge(config)
    from ..models import load_reward_model
    from ..rewards import RewardModelScorer

    return RewardModelScorer(load_reward_model(config.reward_model), tok)


def judge(config):
    """The job's AI judge: a pair judge by import path, an OpenAI-compatible endpoint or a local causal LM."""
    from ..rewards import HTTPChatJudge, LocalLMJudge
    from .jobs import pair_judge

    extra = {"rubric": Path(config.rubric_file).read_text()} if config.rubric_file else {}
    if getattr(config, "judge", ""):
        return pair_judge(config.judge)
    if config.judge_url:
        key = os.environ[config.judge_api_key_env] if config.judge_api_key_env else None
        return HTTPChatJudge(config.judge_url, config.judge_name, api_key=key, **extra)
    from ..models import load_causal_lm, load_tokenizer

    tok = load_tokenizer(config.judge_model, trust_remote_code=config.trust_remote_code, pad_policy=config.pad_policy)
    model = load_causal_lm(config.judge_model, trust_remote_code=config.trust_remote_code, tokenizer=tok)
    return LocalLMJudge(model, tok, **extra)
