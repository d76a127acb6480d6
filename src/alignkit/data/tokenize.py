"""Rows -> token ids for SFT and preference training, with truncation as an explicit setting.

How text becomes ids (the same for both tokenisers):
* The prompt is encoded as ``tokenizer(prompt)["input_ids"]``: with the special tokens the tokenizer adds
  (a BOS for Llama-style tokenizers), exactly as :func:`alignkit.rollout.tokenize_prompts` encodes prompts
  for generation. A chat template that already writes the BOS as text would give two; one is dropped.
* A response (completion, chosen, rejected) is encoded separately, without special tokens, so the
  prompt/response boundary is exact. (Byte-level BPE can merge across a boundary when the two are
  encoded together; encoded apart, the ids are what generation would produce after the prompt.)
* ``append_eos``: the EOS id ends every response, so the model learns to stop; it is not added twice
  when the response text already ends with the EOS token (chat templates often close the assistant turn
  with it; whitespace after it is dropped then).

Truncation (``max_length`` counts prompt + response tokens):
* ``"fit"`` (default; what TRL does): no row stops the run for its length. The prompt is cut from the left to
  ``max_prompt_length`` (when set), keeping its BOS; then responses are cut from the right to fit
  ``max_length`` (the EOS goes with the cut). A prompt that alone leaves no room for a response is first
  cut from the left to half of ``max_length``. A pair whose responses become identical by the cut carries no
  preference: it is dropped and counted in ``Examples.skipped`` (with the rows the loader skipped). Cut rows
  are counted in ``Examples.truncated``; the trainers log both at step 0.
* ``"error"``: a row that does not fit raises :class:`DataError` naming it, with its lengths.
* ``"right"``: the end of the response is cut (the EOS goes with it: a cut response must not teach the
  model to stop there). A prompt that alone fills ``max_length`` leaves no response token: an error.
* ``"left"``: the start of the prompt is dropped, keeping its BOS when it has one, and the response is
  kept whole. A response too long to fit after one prompt token is an error (use ``"right"``).
For preference pairs the longer response decides: both sequences prompt + chosen and prompt + rejected
must fit. A pair whose responses become identical after tokenisation or truncation is an error: the
pair would carry no preference (its DPO gradient is zero, yet it counts in the loss and accuracy).

Errors name the row by its location when the rows come from :func:`alignkit.data.load_rows` (e.g.
``"train.jsonl line 7"``), else ``"row i"`` (0-based index into ``rows``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from .chat import render_prompt_completion, split_messages, with_system_turn
from .errors import DataError, LocatedList
from .formats import normalize_row

__all__ = ["TRUNCATION_MODES", "Examples", "tokenize_sft", "tokenize_preferences"]

TRUNCATION_MODES = ("fit", "error", "left", "right")
IGNORE_INDEX = -100


class Examples(LocatedList):
    """Tokenised examples (a ``list`` of dicts of ``list[int]``), plus bookkeeping.

    Attributes:
        locations: one location per example, taken from the rows (see :class:`alignkit.data.Rows`).
        truncated: how many examples were truncated (for the trainer's log).
        skipped: how many malformed rows ``load_rows(skip_invalid=True)`` dropped before tokenisation.
    """

    def __init__(self, examples=(), *, locations: list[str] | None = None, truncated: int = 0, skipped: int = 0):
        super().__init__(examples, locations=locations)
        self.truncated = truncated
        self.skipped = skipped


def _locations(rows: Sequence) -> list[str]:
    if isinstance(rows, LocatedList):
        return rows.locations
    return [f"row {i}" for i in range(len(rows))]


def _check_args(rows: Sequence, tokenizer, max_length: int, truncation: str, append_eos: bool,
                max_prompt_length: int | None = None) -> None:
    if truncation not in TRUNCATION_MODES:
        raise ValueError(f"truncation must be one of {TRUNCATION_MODES}, got {truncation!r}")
    if max_prompt_length is not None and (isinstance(max_prompt_length, bool)
                                          or not isinstance(max_prompt_length, int) or max_prompt_length < 1):
        raise ValueError(f"max_prompt_length must be an int >= 1 or None, got {max_prompt_length!r}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"max_length must be an int >= 2 (a prompt token and a response token), got {max_length!r}")
    if append_eos and tokenizer.eos_token_id is None:
        raise ValueError("append_eos=True but the tokenizer has no EOS token")
    if len(rows) == 0:
        raise ValueError("no rows to tokenise")


def _encode_prompts(tokenizer, texts: list[str]) -> list[list[int]]:
    bos = tokenizer.bos_token_id
    out = []
    for ids in tokenizer(texts)["input_ids"]:
        ids = list(ids)
        if bos is not None and len(ids) >= 2 and ids[0] == ids[1] == bos:
            ids = ids[1:]  # BOS from the template text and from the tokenizer
        out.append(ids)
    return out


def _encode_responses(tokenizer, texts: list[str], append_eos: bool) -> list[list[int]]:
    eos_text, eos = tokenizer.eos_token, tokenizer.eos_token_id
    if append_eos and eos_text:
        texts = [t.rstrip() if t.rstrip().endswith(eos_text) else t for t in texts]
    out = []
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids = list(ids)
        if append_eos and (not ids or ids[-1] != eos):
            ids.append(eos)
        out.append(ids)
    return out


def encode_prompt_response(tokenizer, prompts: Sequence[str], responses: Sequence[str],
                           append_eos: bool = True) -> list[list[int]]:
    """``prompt ids + response ids`` per pair, exactly as :func:`tokenize_preferences` builds a training sequence
    (prompt tokenised with the tokenizer's special tokens, response without, EOS appended once): the one
    format a reward model is trained on and scored in (:class:`alignkit.rewards.RewardModelScorer`)."""
    prompt_ids = _encode_prompts(tokenizer, list(prompts))
    response_ids = _encode_responses(tokenizer, list(responses), append_eos)
    return [p + r for p, r in zip(prompt_ids, response_ids, strict=True)]


def _keep_prompt_end(prompt: list[int], keep: int, bos: int | None) -> list[int]:
    """The last ``keep`` tokens of ``prompt``, the first of them its BOS when it starts with one."""
    if bos is not None and prompt and prompt[0] == bos and keep >= 2:
        return [bos, *prompt[len(prompt) - keep + 1 :]]
    return prompt[len(prompt) - keep :]


def _fit(prompt, responses, max_length, truncation, bos, where, max_prompt_length=None):
    """(prompt, responses, truncated?) fitting ``max_length``; raises DataError naming ``where``."""
    if truncation == "fit":
        return _fit_both(prompt, responses, max_length, max_prompt_length, bos)
    longest = max(len(r) for r in responses)
    if len(prompt) + longest <= max_length:
        return prompt, responses, False
    sizes = " + ".join(str(len(r)) for r in responses)
    if truncation == "error":
        fix = ("set truncation='left' (drop the prompt's start; the prompt alone fills the context)"
               if len(prompt) >= max_length
               else "set truncation='left' (drop the prompt's start) or 'right' (cut the response's end)")
        raise DataError(
            f"prompt ({len(prompt)} tokens) + response ({sizes} tokens) exceeds max_length={max_length}; raise "
            f"max_length or {fix}",
            location=where,
        )
    if truncation == "right":
        if len(prompt) >= max_length:
            raise DataError(
                f"prompt alone has {len(prompt)} tokens, filling max_length={max_length}: no response token "
                "would be left (right truncation cuts responses only)",
                location=where,
                field="prompt",
            )
        room = max_length - len(prompt)
        return prompt, [r[:room] for r in responses], True
    keep = max_length - longest
    if keep < 1:
        raise DataError(
            f"response alone has {longest} tokens; left truncation only drops prompt tokens and must keep at least "
            f"one before the response within max_length={max_length} (use truncation='right')",
            location=where,
        )
    return _keep_prompt_end(prompt, keep, bos), responses, True


def _fit_both(prompt, responses, max_length, max_prompt_length, bos):
    """The ``"fit"`` mode: prompt from the left to ``max_prompt_length``, responses from the right to fit."""
    cut = False
    if max_prompt_length and len(prompt) > max_prompt_length:
        prompt, cut = _keep_prompt_end(prompt, max_prompt_length, bos), True
    if len(prompt) >= max_length:  # no room for a response token: the prompt gives up half the context
        prompt, cut = _keep_prompt_end(prompt, max_length // 2, bos), True
    room = max_length - len(prompt)
    if any(len(r) > room for r in responses):
        responses, cut = [r[:room] for r in responses], True
    return prompt, responses, cut


def _row(rows, i, fmt, where) -> dict:
    try:
        return normalize_row(rows[i], fmt)
    except DataError as e:
        raise e.at(where) from None


def _sft_format(row) -> str:
    """How an SFT row is read: chat messages, prompt/completion, or a question with its answer (GSM8K rows,
    raw ``{"question", "answer"}`` or loaded ``{"prompt", "answer"}``)."""
    if not isinstance(row, dict):
        return "prompt_completion"  # normalize_row names the problem
    if "messages" in row:
        return "messages"
    if "answer" in row and "completion" not in row:
        return "gsm8k" if "question" in row else "prompt"
    return "prompt_completion"


def _answer_text(row: dict, where) -> str:
    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise DataError("must be a non-empty string (it is the completion of this question)", location=where,
                        field="answer")
    return answer


def tokenize_sft(
    rows: Sequence[dict],
    tokenizer,
    max_length: int,
    truncation: str = "fit",
    append_eos: bool = True,
    completion_only_loss: bool = True,
    max_prompt_length: int | None = None,
    chat_template: str = "off",
    system_prompt: str = "",
) -> Examples:
    """Tokenise prompt/completion or chat-message rows for supervised fine-tuning.

    Args:
        rows: ``{"prompt", "completion"}`` or ``{"messages": [...]}`` dicts (as :func:`load_rows` returns
            them; other rows are validated here). Messages are split into prompt and completion with the
            tokenizer's chat template (:func:`alignkit.data.chat.split_messages`). GSM8K rows (``{"question",
            "answer"}``, or ``{"prompt", "answer"}`` as loaded) are a user turn and the assistant's answer.
        tokenizer: a transformers tokenizer.
        max_length: most tokens per example (prompt + completion, EOS included).
        truncation: ``"fit"``, ``"error"``, ``"left"`` or ``"right"`` (module docstring).
        append_eos: end each completion with the EOS token.
        completion_only_loss: label prompt tokens -100 (ignored by the loss); False trains on all tokens.
        max_prompt_length: with ``"fit"``, prompts are first cut from the left to this many tokens.
        chat_template: for ``{"prompt", "completion"}`` rows: ``"auto"`` / ``"on"`` make the prompt a user turn
            and the completion the assistant's reply of the tokenizer's chat template
            (:func:`alignkit.data.chat.render_prompt_completion`; ``"auto"`` leaves a prompt that is already
            rendered as written); ``"off"`` (the default of this function; the CLI's is ``auto``) joins the
            texts as written. Messages and GSM8K rows are always chat turns.
        system_prompt: a system turn before every row's first turn (rows whose messages have their own system
            turn are an error: one would be dropped).
    Returns:
        :class:`Examples`: per row ``{"input_ids": list[int], "labels": list[int]}`` of equal length L <=
        max_length, labels *unshifted* (``labels[t]`` is the target at position t; the loss compares
        ``logits[:, :-1]`` with ``labels[:, 1:]``, as transformers' causal LM loss does).
    """
    _check_args(rows, tokenizer, max_length, truncation, append_eos, max_prompt_length)
    where = _locations(rows)
    prompts, completions = [], []
    for i in range(len(rows)):
        fmt = _sft_format(rows[i])
        row = _row(rows, i, fmt, where[i])
        if fmt in ("gsm8k", "prompt"):  # a question and its reference answer: one user turn, one assistant turn
            row = {"messages": [{"role": "user", "content": row["prompt"]},
                                {"role": "assistant", "content": _answer_text(row, where[i])}]}
        try:
            if "messages" in row:
                try:
                    messages = with_system_turn(row["messages"], system_prompt)
                except ValueError as e:
                    raise DataError(str(e), field="messages") from None
                prompt, completion = split_messages(messages, tokenizer)
            else:
                prompt, completion, _ = render_prompt_completion(row["prompt"], row["completion"], tokenizer,
                                                                 chat_template, system_prompt)
        except DataError as e:
            raise e.at(where[i]) from None
        prompts.append(prompt)
        completions.append(completion)
    prompt_ids = _encode_prompts(tokenizer, prompts)
    completion_ids = _encode_responses(tokenizer, completions, append_eos)
    out, truncated = [], 0
    for i, (p, c) in enumerate(zip(prompt_ids, completion_ids, strict=True)):
        if not p or not c:
            field = "prompt" if not p else "completion"
            raise DataError("tokenises to no tokens", location=where[i], field=field)
        p, (c,), cut = _fit(p, [c], max_length, truncation, tokenizer.bos_token_id, where[i], max_prompt_length)
        truncated += cut
        labels = [IGNORE_INDEX] * len(p) + c if completion_only_loss else p + c
        out.append({"input_ids": p + c, "labels": labels})
    return Examples(out, locations=where, truncated=truncated, skipped=getattr(rows, "skipped", 0))


def tokenize_preferences(
    rows: Sequence[dict],
    tokenizer,
    max_length: int,
    truncation: str = "fit",
    append_eos: bool = True,
    max_prompt_length: int | None = None,
) -> Examples:
    """Tokenise ``{"prompt", "chosen", "rejected"}`` rows (preference or split HH-RLHF) for DPO / reward models.

    Args:
        rows: preference rows (as :func:`load_rows` returns them; other rows are validated here).
        tokenizer, max_length, truncation, append_eos, max_prompt_length: as in :func:`tokenize_sft`;
            ``max_length`` bounds prompt + chosen and prompt + rejected alike.
    Returns:
        :class:`Examples`: per row ``{"prompt_ids", "chosen_ids", "rejected_ids"}`` (``list[int]``; the
        response ids end with EOS unless truncated or ``append_eos=False``), plus ``"margin"`` (a float) for a
        row with a ``margin`` column (how much better the chosen response is rated; the reward model's
        Bradley-Terry loss subtracts it, Llama 2 section 3.2.2). A margin that is not a finite number is an
        error naming the row.
    """
    _check_args(rows, tokenizer, max_length, truncation, append_eos, max_prompt_length)
    where = _locations(rows)
    normalised = [_row(rows, i, "preference", where[i]) for i in range(len(rows))]
    prompt_ids = _encode_prompts(tokenizer, [r["prompt"] for r in normalised])
    chosen_ids = _encode_responses(tokenizer, [r["chosen"] for r in normalised], append_eos)
    rejected_ids = _encode_responses(tokenizer, [r["rejected"] for r in normalised], append_eos)
    out, truncated, dropped, kept = [], 0, 0, []
    for i, (p, c, r) in enumerate(zip(prompt_ids, chosen_ids, rejected_ids, strict=True)):
        for field, ids in (("prompt", p), ("chosen", c), ("rejected", r)):
            if not ids:
                raise DataError("tokenises to no tokens", location=where[i], field=field)
        p, (c, r), cut = _fit(p, [c, r], max_length, truncation, tokenizer.bos_token_id, where[i],
                              max_prompt_length)
        truncated += cut
        if c == r and cut and truncation == "fit":  # the cut removed the difference: no preference left
            dropped += 1
            continue
        if c == r:
            how = f"after truncation to max_length={max_length}" if cut else "after tokenisation"
            raise DataError(f"is identical to 'chosen' {how}; the pair carries no preference", location=where[i],
                            field="rejected")
        example = {"prompt_ids": p, "chosen_ids": c, "rejected_ids": r}
        margin = rows[i].get("margin") if isinstance(rows[i], Mapping) else None
        if margin is not None:
            if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin):
                raise DataError(f"must be a finite number, got {margin!r}", location=where[i], field="margin")
            example["margin"] = float(margin)
        out.append(example)
        kept.append(where[i])
    return Examples(out, locations=kept, truncated=truncated, skipped=getattr(rows, "skipped", 0) + dropped)
