"""Config fields of the classic commands: a dataclass field with its help text (and allowed choices), read
by ``alignkit classic <sub> --help`` and the config parser. (``alignkit.training.option`` is the same for
the LM trainers; ``alignkit.classic`` imports nothing of alignkit but ``core``.)"""

from __future__ import annotations

from dataclasses import field

__all__ = ["option"]


def option(default, help: str, choices: tuple | None = None):  # noqa: A002 - "help" reads best at call sites
    metadata = {"help": help} if choices is None else {"help": help, "choices": choices}
    return field(default=default, metadata=metadata)
