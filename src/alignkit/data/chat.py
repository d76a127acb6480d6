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


def render_prompt(prompt: str, tokenizer, chat_template: str = "off", system_prompt: str = "") -> tuple[str, bool]:
    """A prompt as the text the model is sampled from: ``(text, rendered_with_a_template)``.

    ``chat_template``:

    * ``"off"``: the prompt as is (base models, or prompts already rendered); ``system_prompt`` must be empty.
    * ``"on"``: ``[{"role": "system", "content": system_prompt}]`` (when given) and ``{"role": "user",
      "content": prompt}``, rendered by the tokenizer's chat template with the generation prompt; a
      tokenizer without a template is an error.
    * ``"auto"``: ``"on"`` when the tokenizer has a chat template, else ``"off"`` (then a ``system_prompt``
      is an error: it would be silently dropped).

    Text rendered by a template already holds the special tokens the model expects (BOS where the template
    writes it): tokenise it with ``add_special_tokens=False``, as TRL does.

    >>> render_prompt("What is 2+2?", None)
    ('What is 2+2?', False)
    """
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
        return prompt, False
    messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": prompt}]
    return render_messages(messages, tokenizer, add_generation_prompt=True), True
