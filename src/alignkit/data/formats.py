"""Row formats: what each looks like, how one is recognised, and how a row is validated and normalised.

==================  ==========================================  ==========================================
format              input row                                   normalised row
==================  ==========================================  ==========================================
prompt_completion   ``{"prompt": str, "completion": str}``       the same
messages            ``{"messages": [{"role", "content"}, ...]}``  the same (validated; rendered with the chat
                    (the last turn is the assistant's)           template at tokenisation time)
preference          ``{"prompt", "chosen", "rejected"}``         the same
hh_rlhf             ``{"chosen", "rejected"}``: full             ``{"prompt", "chosen", "rejected"}``, split
                    ``"\\n\\nHuman: ...\\n\\nAssistant: ..."``       by :func:`split_hh_rlhf`
                    transcripts
prompt              ``{"prompt": str, ...}``                     the same (for RL; other columns go to the
                                                                reward function)
gsm8k               ``{"question", "answer": "... #### 18"}``    ``{"prompt": question, "answer": answer}``
chat_prompt         ``{"messages": [...], ...}`` whose last       the same (validated; for RL: rendered with
                    turn is not the assistant's                  the generation prompt when loaded)
==================  ==========================================  ==========================================

Other columns are carried through unchanged in every format (an ``id``, a ``source``, the reference
answer a reward function reads). GSM8K's ``question`` is *renamed* ``prompt``.

Rules every format shares:
* a text field must be a ``str`` and not empty or whitespace only (a missing column and JSON ``null``
  are both "missing");
* ``chosen`` identical to ``rejected`` is an error: the pair carries no preference;
* a ``gsm8k`` answer must contain ``####`` followed by the final answer (that is what the GSM8K reward
  reads; rows with a bare reference answer are ``prompt`` rows with an ``answer`` column).

Auto-detection (:func:`detect_format`) looks at the keys of one row: a format matches when all its
required columns are present (:data:`REQUIRED_COLUMNS`); among the matches, one whose columns are a
strict subset of another match's is dropped (``{"prompt", "completion"}`` is prompt_completion, not
prompt). Exactly one must remain, otherwise the keys are ambiguous or unknown and the error lists them
with the valid formats: pass ``format=`` then. ``messages`` and ``chat_prompt`` rows have the same key; the
role of the last turn tells them apart (:func:`detect_row_format`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import DataError

__all__ = [
    "FORMATS",
    "REQUIRED_COLUMNS",
    "HH_HUMAN",
    "HH_ASSISTANT",
    "detect_format",
    "normalize_row",
    "split_hh_rlhf",
    "validate_messages",
]

FORMATS: tuple[str, ...] = ("prompt_completion", "messages", "preference", "hh_rlhf", "prompt", "gsm8k",
                           "chat_prompt")

REQUIRED_COLUMNS: dict[str, frozenset[str]] = {
    "prompt_completion": frozenset({"prompt", "completion"}),
    "messages": frozenset({"messages"}),
    "preference": frozenset({"prompt", "chosen", "rejected"}),
    "hh_rlhf": frozenset({"chosen", "rejected"}),
    "prompt": frozenset({"prompt"}),
    "gsm8k": frozenset({"question", "answer"}),
}

HH_HUMAN = "\n\nHuman:"
HH_ASSISTANT = "\n\nAssistant:"


def _describe_formats() -> str:
    return ", ".join([*(f"{name} {sorted(cols)}" for name, cols in REQUIRED_COLUMNS.items()),
                      "chat_prompt ['messages'] (the last turn not the assistant's)"])


def detect_format(keys) -> str:
    """The format whose required columns ``keys`` hold (see the module docstring for the rule).

    >>> detect_format(["prompt", "completion", "id"]), detect_format(["chosen", "rejected"])
    ('prompt_completion', 'hh_rlhf')
    >>> detect_format(["text"])
    Traceback (most recent call last):
        ...
    alignkit.data.errors.DataError: cannot detect the format from the keys ['text']: no format matches; ...
    """
    keys = set(keys)
    matches = [name for name, cols in REQUIRED_COLUMNS.items() if cols <= keys]
    best = [m for m in matches if not any(REQUIRED_COLUMNS[m] < REQUIRED_COLUMNS[o] for o in matches)]
    if len(best) == 1:
        return best[0]
    why = "no format matches" if not best else f"they match several formats {best}"
    raise DataError(
        f"cannot detect the format from the keys {sorted(keys)}: {why}; valid formats (required columns): "
        f"{_describe_formats()}; pass format=..."
    )


def detect_row_format(row: Mapping) -> str:
    """:func:`detect_format` of the row's keys, then ``messages`` rows whose last turn is not the assistant's
    are ``chat_prompt`` rows (a prompt for sampling, not an SFT example).

    >>> detect_row_format({"messages": [{"role": "user", "content": "hi"}]})
    'chat_prompt'
    """
    format = detect_format(row.keys())
    messages = row.get("messages")
    if format == "messages" and isinstance(messages, (list, tuple)) and messages \
            and isinstance(messages[-1], Mapping) and messages[-1].get("role") != "assistant":
        return "chat_prompt"
    return format


def validate_prompt_messages(messages: Any, field: str = "messages") -> list[dict]:
    """Check the turns of a chat prompt: at least one ``{"role", "content"}`` dict (both non-blank), the last
    one not the assistant's (the model writes that). Returns a shallow copy."""
    if not isinstance(messages, (list, tuple)) or not messages:
        raise DataError("must be a non-empty list of {'role', 'content'} dicts", field=field)
    out = _turns(messages, field)
    if out[-1]["role"] == "assistant":
        raise DataError("the last turn is the assistant's; a prompt ends with a turn the model answers",
                        field=f"{field}[{len(out) - 1}].role")
    return out


def _text(row: Mapping, key: str, field: str | None = None) -> str:
    """``row[key]`` checked to be a non-blank string."""
    field = field or key
    if key not in row:
        raise DataError("is missing", field=field)
    value = row[key]
    if value is None:
        raise DataError("is missing (null)", field=field)
    if not isinstance(value, str):
        raise DataError(f"must be a string, got {type(value).__name__}", field=field)
    if not value.strip():
        raise DataError("is empty" if not value else f"is only whitespace ({value!r})", field=field)
    return value


def validate_messages(messages: Any, field: str = "messages") -> list[dict]:
    """Check a chat: a list of ``{"role": str, "content": str}`` dicts (both non-blank), at least two turns,
    the last one the assistant's. Returns a shallow copy (each message a new dict, extra keys kept).

    >>> validate_messages([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    [{'role': 'user', 'content': 'hi'}, {'role': 'assistant', 'content': 'hello'}]
    """
    if messages is None:
        raise DataError("is missing (null)", field=field)
    if not isinstance(messages, (list, tuple)):
        raise DataError(f"must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}", field=field)
    if len(messages) < 2:
        raise DataError(
            f"has {len(messages)} message(s); need at least one turn before the final assistant turn", field=field
        )
    out = _turns(messages, field)
    if out[-1]["role"] != "assistant":
        raise DataError(
            f"role is {out[-1]['role']!r}; the last message must be the assistant's (it is the completion)",
            field=f"{field}[{len(out) - 1}].role",
        )
    return out


def _turns(messages, field: str) -> list[dict]:
    """Each message a ``{"role", "content"}`` dict with both non-blank; a shallow copy of each (extra keys kept)."""
    out = []
    for i, message in enumerate(messages):
        here = f"{field}[{i}]"
        if not isinstance(message, Mapping):
            raise DataError(f"must be a {{'role', 'content'}} dict, got {type(message).__name__}", field=here)
        _text(message, "role", f"{here}.role")
        _text(message, "content", f"{here}.content")
        out.append(dict(message))
    return out


def split_hh_rlhf(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH-RLHF transcripts into (prompt, chosen response, rejected response).

    The prompt is the longest common prefix of the two texts cut right after the last ``"\\n\\nAssistant:"``
    that lies entirely inside it; each response is the rest of its transcript (its leading space kept, so
    that ``prompt + response`` is the original text). Raises :class:`DataError` (with the field) when the
    texts are identical, share no ``"\\n\\nAssistant:"``, a response is blank, or a response still holds a
    ``"\\n\\nHuman:"``/``"\\n\\nAssistant:"`` turn (the transcripts differ before their final turn).

    >>> split_hh_rlhf("\\n\\nHuman: hi\\n\\nAssistant: Hello!", "\\n\\nHuman: hi\\n\\nAssistant: Go away.")
    ('\\n\\nHuman: hi\\n\\nAssistant:', ' Hello!', ' Go away.')
    """
    if chosen == rejected:
        raise DataError("is identical to 'chosen'; the pair carries no preference", field="rejected")
    shared = 0
    for a, b in zip(chosen, rejected):  # noqa: B905 (lengths differ by design)
        if a != b:
            break
        shared += 1
    cut = chosen.rfind(HH_ASSISTANT, 0, shared)
    if cut < 0:
        raise DataError(
            f"shares no {HH_ASSISTANT!r} with 'rejected' (common prefix: {shared} characters), so no prompt "
            "can be split off",
            field="chosen",
        )
    prompt = chosen[: cut + len(HH_ASSISTANT)]
    responses = {"chosen": chosen[len(prompt):], "rejected": rejected[len(prompt):]}
    for name, text in responses.items():
        if not text.strip():
            raise DataError(f"has an empty response after the shared prompt ({text!r})", field=name)
        for marker in (HH_HUMAN, HH_ASSISTANT):
            if marker in text:
                raise DataError(
                    f"response after the shared prompt still contains {marker!r}: the transcripts differ "
                    "before their final assistant turn",
                    field=name,
                )
    return prompt, responses["chosen"], responses["rejected"]


def _rest(row: Mapping, used: tuple[str, ...]) -> dict:
    return {k: v for k, v in row.items() if k not in used}


def normalize_row(row: Any, format: str) -> dict:
    """Validate one row of ``format`` and return its normalised dict (see the module docstring).

    Raises :class:`DataError` naming the field (the caller adds the row's location).

    >>> normalize_row({"question": "1+1?", "answer": "2 #### 2", "id": 7}, "gsm8k")
    {'prompt': '1+1?', 'answer': '2 #### 2', 'id': 7}
    """
    if not isinstance(row, Mapping):
        raise DataError(f"row must be a JSON object (dict), got {type(row).__name__}")
    if format == "prompt_completion":
        out = {"prompt": _text(row, "prompt"), "completion": _text(row, "completion")}
        return {**out, **_rest(row, ("prompt", "completion"))}
    if format == "messages":
        if "messages" not in row:
            raise DataError("is missing", field="messages")
        return {"messages": validate_messages(row["messages"]), **_rest(row, ("messages",))}
    if format == "preference":
        out = {"prompt": _text(row, "prompt"), "chosen": _text(row, "chosen"), "rejected": _text(row, "rejected")}
        if out["chosen"] == out["rejected"]:
            raise DataError("is identical to 'chosen'; the pair carries no preference", field="rejected")
        return {**out, **_rest(row, ("prompt", "chosen", "rejected"))}
    if format == "hh_rlhf":
        if "prompt" in row:
            raise DataError("hh_rlhf rows take the prompt from the shared prefix of chosen and rejected; this "
                            "row has its own (use format='preference')", field="prompt")
        prompt, chosen, rejected = split_hh_rlhf(_text(row, "chosen"), _text(row, "rejected"))
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected, **_rest(row, ("chosen", "rejected"))}
    if format == "prompt":
        return {"prompt": _text(row, "prompt"), **_rest(row, ("prompt",))}
    if format == "gsm8k":
        if "prompt" in row:
            raise DataError("gsm8k rows take the prompt from 'question'; this row also has a 'prompt' column",
                            field="prompt")
        question, answer = _text(row, "question"), _text(row, "answer")
        at = answer.rfind("####")
        if at < 0 or not answer[at + 4 :].strip():
            raise DataError("must contain '#### <final answer>' (GSM8K's format)", field="answer")
        return {"prompt": question, "answer": answer, **_rest(row, ("question", "answer"))}
    if format == "chat_prompt":
        if "messages" not in row:
            raise DataError("is missing", field="messages")
        return {"messages": validate_prompt_messages(row["messages"]), **_rest(row, ("messages",))}
    raise ValueError(f"unknown format {format!r}; choose one of {FORMATS}")

