"""Chat messages -> text: the tokenizer's chat template when it has one, a documented default otherwise.

The default format (used when ``tokenizer`` is None or has no ``chat_template``) is one line per message
and a bare role tag as the generation prompt, the same as the template of
:func:`alignkit.models.tiny.build_tokenizer`:

    user: What is 2+2?\\n
    assistant: 4\\n
    assistant:                  <- generation prompt (add_generation_prompt=True)

An SFT example from a conversation (:func:`split_messages`) takes the last assistant turn as the
completion and everything before it as the prompt, rendered with the generation prompt:

    prompt     = render(messages[:-1], add_generation_prompt=True)
    completion = render(messages, add_generation_prompt=False)[len(prompt):]

so the completion holds exactly what the template puts after the generation prompt (for most templates
the answer and the end-of-turn marker: the model learns to close its turn). A template whose rendering of
the whole chat does not start with the rendering of the prompt (one that rewrites earlier turns, e.g.
dropping past reasoning) cannot be split this way and is an error.
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import DataError

__all__ = [
    "CHAT_TEMPLATE_MODES",
    "RenderedPrompt",
    "looks_rendered",
    "render_chat_prompt",
    "render_prompt_completion",
    "with_system_turn",
    "DEFAULT_MESSAGE_FORMAT",
    "DEFAULT_GENERATION_PROMPT",
    "render_messages",
    "render_prompt",
    "split_messages",
]

CHAT_TEMPLATE_MODES = ("off", "on", "auto")

DEFAULT_MESSAGE_FORMAT = "{role}: {content}\n"
DEFAULT_GENERATION_PROMPT = "assistant:"


def render_messages(messages: Sequence[dict], tokenizer=None, add_generation_prompt: bool = False) -> str:
    """Render ``messages`` (``[{"role", "content"}, ...]``) as text.

    Uses ``tokenizer.apply_chat_template(messages, tokenize=False, ...)`` when ``tokenizer.chat_template``
    is set, else :data:`DEFAULT_MESSAGE_FORMAT` per message and :data:`DEFAULT_GENERATION_PROMPT`.

    >>> render_messages([{"role": "user", "content": "hi"}], add_generation_prompt=True)
    'user: hi\\nassistant:'
    """
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
        )
        if not isinstance(text, str):
            raise TypeError(f"apply_chat_template(tokenize=False) returned {type(text).__name__}, not a string")
        return text
    text = "".join(DEFAULT_MESSAGE_FORMAT.format(role=m["role"], content=m["content"]) for m in messages)
    return text + (DEFAULT_GENERATION_PROMPT if add_generation_prompt else "")


def split_messages(messages: Sequence[dict], tokenizer=None) -> tuple[str, str]:
    """(prompt, completion) texts of a conversation whose last turn is the assistant's (module docstring).

    Raises :class:`DataError` (field ``messages``) when the last turn is not the assistant's or the template's
    full rendering does not start with its prompt rendering.

    >>> split_messages([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}])
    ('user: hi\\nassistant:', ' hello\\n')
    """
    if len(messages) < 2 or messages[-1].get("role") != "assistant":
        raise DataError("must end with an assistant turn after at least one other turn", field="messages")
    prompt = render_messages(messages[:-1], tokenizer, add_generation_prompt=True)
    full = render_messages(messages, tokenizer, add_generation_prompt=False)
    if not full.startswith(prompt):
        raise DataError(
            "the chat template's rendering of the whole conversation does not start with its rendering of the "
            f"prompt (the turns before the last, plus the generation prompt): {prompt[-40:]!r} vs "
            f"{full[len(prompt) - 40 : len(prompt)]!r}; cannot tell the completion apart",
            field="messages",
        )
    completion = full[len(prompt):]
    if not completion.strip():
        raise DataError("the last assistant turn renders to nothing after the prompt", field="messages")
    return prompt, completion


class RenderedPrompt(str):
    """A prompt already rendered by a chat template (e.g. from a ``messages`` prompt row): :func:`render_prompt`
    passes it through as is, whatever ``chat_template`` says. It is a ``str`` everywhere else (reward
    functions, reports)."""


def looks_rendered(text: str, tokenizer) -> bool:
    """Whether ``text`` already holds a special token the tokenizer's chat template writes (``<|im_start|>``,
    a BOS or EOS text...): such a prompt was rendered before and is not rendered again."""
    specials = set(getattr(tokenizer, "additional_special_tokens", None) or [])
    specials |= {getattr(tokenizer, name, None) for name in ("bos_token", "eos_token")}
    specials -= {None, "", getattr(tokenizer, "pad_token", None), getattr(tokenizer, "unk_token", None)}
    return any(token in text for token in specials)


def _use_template(tokenizer, chat_template: str, system_prompt: str) -> bool:
    """Whether ``chat_template`` ("off" / "on" / "auto") applies the tokenizer's template; the errors of
    :func:`render_prompt` for "on" without a template and a system prompt that would be dropped."""
    if chat_template not in CHAT_TEMPLATE_MODES:
        raise ValueError(f"chat_template must be one of {CHAT_TEMPLATE_MODES}, got {chat_template!r}")
    has_template = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None))
    if chat_template == "on" and not has_template:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(f"chat_template=on but the tokenizer {name!r} has no chat template (use chat_template=off)")
    if chat_template == "off" or not has_template:
        if system_prompt:
            raise ValueError("system_prompt is set but no chat template is applied (chat_template="
                             f"{chat_template!r}{'' if has_template else ', and the tokenizer has none'}); "
                             "it would be ignored")
        return False
    return True


def with_system_turn(messages: Sequence[dict], system_prompt: str) -> list[dict]:
    """``messages`` after a system turn of ``system_prompt`` (none when it is empty). Turns that start with
    their own system turn and a ``system_prompt`` are a ValueError: one of the two would be dropped."""
    if system_prompt and messages and messages[0].get("role") == "system":
        raise ValueError("system_prompt is set and the messages start with their own system turn: one would be "
                         "dropped (leave system_prompt empty, or drop the system turn)")
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + list(messages)


def render_chat_prompt(messages: Sequence[dict], tokenizer, chat_template: str = "auto",
                       system_prompt: str = "") -> RenderedPrompt:
    """A prompt given as chat turns (a ``messages`` prompt row, its last turn not the assistant's), rendered with
    the generation prompt. ``system_prompt`` goes first, unless the turns start with their own system turn
    (then it is an error: one would be dropped). ``chat_template=off`` is an error: turns are not text."""
    if chat_template == "off":
        raise ValueError("a messages prompt needs a chat template to become text, and chat_template=off")
    _use_template(tokenizer, chat_template, "")
    text = render_messages(with_system_turn(messages, system_prompt), tokenizer, add_generation_prompt=True)
    return RenderedPrompt(text)


def render_prompt_completion(prompt: str, completion: str, tokenizer, chat_template: str = "off",
                             system_prompt: str = "") -> tuple[str, str, bool]:
    """An SFT ``{"prompt", "completion"}`` row as the texts the model trains on: ``(prompt, completion,
    rendered)``. With the template applied (``chat_template`` as in :func:`render_prompt`), the prompt is a user
    turn (after the system prompt) and the completion the assistant's reply, split as :func:`split_messages`
    does (the completion ends with the template's end-of-turn marker). A prompt that is already rendered
    (:class:`RenderedPrompt`, or :func:`looks_rendered`) stays as written."""
    if not _use_template(tokenizer, chat_template, system_prompt):
        return prompt, completion, False
    if isinstance(prompt, RenderedPrompt) or (chat_template == "auto" and looks_rendered(prompt, tokenizer)):
        return prompt, completion, True
    messages = with_system_turn([{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}],
                            system_prompt)
    text_prompt, text_completion = split_messages(messages, tokenizer)
    return text_prompt, text_completion, True


def render_prompt(prompt: str, tokenizer, chat_template: str = "off", system_prompt: str = "") -> tuple[str, bool]:
    """A prompt as the text the model is sampled from: ``(text, rendered_with_a_template)``.

    ``chat_template``:

    * ``"off"``: the prompt as is (base models, or prompts already rendered); ``system_prompt`` must be empty.
    * ``"on"``: ``[{"role": "system", "content": system_prompt}]`` (when given) and ``{"role": "user",
      "content": prompt}``, rendered by the tokenizer's chat template with the generation prompt; a
      tokenizer without a template is an error.
    * ``"auto"``: ``"on"`` when the tokenizer has a chat template and the prompt is not already rendered (it
      holds none of the template's special tokens, :func:`looks_rendered`), else as is (then a
      ``system_prompt`` is an error: it would be silently dropped).

    A :class:`RenderedPrompt` (a ``messages`` prompt row, rendered on loading) is returned as is.

    Text rendered by a template already holds the special tokens the model expects (BOS where the template
    writes it): tokenise it with ``add_special_tokens=False``, as TRL does.

    >>> render_prompt("What is 2+2?", None)
    ('What is 2+2?', False)
    """
    if isinstance(prompt, RenderedPrompt):
        return prompt, True
    if not _use_template(tokenizer, chat_template, system_prompt):
        return prompt, False
    if chat_template == "auto" and looks_rendered(prompt, tokenizer):
        if system_prompt:
            raise ValueError(f"system_prompt is set but the prompt is already rendered (it holds the template's "
                             f"special tokens): {prompt[:60]!r}...")
        return prompt, True
    messages = with_system_turn([{"role": "user", "content": prompt}], system_prompt)
    return render_messages(messages, tokenizer, add_generation_prompt=True), True
