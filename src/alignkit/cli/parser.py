"""From ``[--config preset.yaml] [key=value ...]`` to a validated config dataclass, and the help text.

Options come from a command's config dataclass (help text from each field's ``metadata["help"]``).
Precedence: defaults < preset file < ``key=value`` overrides. Everything is validated before anything is
written: an unknown key, a value of the wrong type, a missing file, or a preset written for another command
raises :class:`UsageError` naming the key (and the valid choices). Configs hold values only: nothing in them is
executed.
"""

from __future__ import annotations

import difflib
import inspect
import os
import sys
import warnings
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

USAGE_ERROR = 2


class UsageError(Exception):
    """A bad command line or preset; printed and turned into exit code 2."""


def coerce(name: str, raw: Any, default: Any, choices) -> Any:
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


def unknown_key(command: str, key: str, known: list[str]) -> UsageError:
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return UsageError(f"unknown key {key!r} for '{command}'{hint} (see: alignkit {command} --help)")


def split_arguments(command: str, argv: list[str], positional: str = "",
                    many: bool = False) -> tuple[str | None, dict[str, str]]:
    """``(preset path or None, {key: raw value})`` from ``[--config FILE] [key=value ...]``; a bare argument
    sets the ``positional`` field, when the command has one (``alignkit report RUN_DIR``); with ``many``, further
    bare arguments are added to it, comma-separated (``alignkit report RUN_A RUN_B`` = ``run_dir=RUN_A,RUN_B``)."""
    preset, overrides = None, {}
    it = iter(argv)
    for arg in it:
        if arg == "--config":
            preset = next(it, None)
            if preset is None:
                raise UsageError("--config needs a file")
        elif arg.startswith("--config="):
            preset = arg.split("=", 1)[1]
        elif "=" in arg and not arg.startswith("-"):
            key, value = arg.split("=", 1)
            overrides[key] = value
        elif positional and not arg.startswith("-") and positional not in overrides:
            overrides[positional] = arg
        elif positional and many and not arg.startswith("-"):
            overrides[positional] += "," + arg
        else:
            raise UsageError(f"unexpected argument {arg!r}: options are key=value (see: alignkit {command} --help)")
    return preset, overrides


def read_preset(command: str, path: str) -> dict:
    """The key: value mapping of a YAML preset (``method:``, if present, must name ``command``)."""
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


def field_default(f) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()


def build_config(command: str, cls: type, argv: list[str], positional: str = "", check=None, fill=None):
    """The ``cls`` instance of ``[--config FILE] [key=value ...]``, checked by ``check(config)`` (required fields,
    files that must exist) and validated (``validate()``, with the number of processes of this launch where it
    takes one); raises UsageError. ``fill(given)`` returns values for options the user did not give (``given``:
    the options set by the preset or the command line)."""
    spec = {f.name: f for f in fields(cls)}
    preset, overrides = split_arguments(command, argv, positional,
                                        many=bool(positional and spec[positional].metadata.get("many")))
    values: dict[str, Any] = read_preset(command, preset) if preset is not None else {}
    values.update(overrides)
    resolved = {}
    for key, raw in values.items():
        if key not in spec:
            raise unknown_key(command, key, list(spec))
        resolved[key] = coerce(key, raw, field_default(spec[key]), spec[key].metadata.get("choices"))
    if fill is not None:
        resolved = {**fill(resolved), **resolved}
    try:
        with warnings.catch_warnings(record=True) as caught:  # a deprecated option: say so, plainly
            warnings.simplefilter("always", DeprecationWarning)
            config = cls(**resolved)
        for w in caught:
            print(f"note: {w.message}", file=sys.stderr)
        if check is not None:
            check(config)
        if hasattr(config, "validate"):
            validate(config)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return config


def validate(config) -> None:
    """``config.validate``, with the number of processes of this launch (``torchrun`` / ``accelerate launch``
    set WORLD_SIZE) where it takes one, so an impossible split fails here, before anything is written."""
    if "world_size" in inspect.signature(config.validate).parameters:
        config.validate(world_size=int(os.environ.get("WORLD_SIZE", "1")))
    else:
        config.validate()


def config_help(command: str, cls: type, summary: str, positional: str = "", shown_defaults=None) -> str:
    """``alignkit <command> --help``: usage, the summary, and every option with its default and help text
    (``shown_defaults``: what to show instead of a field's default, for defaults the command line decides)."""
    bare = f" {positional.upper()}" if positional else ""
    lines = [f"usage: alignkit {command}{bare} [--config preset.yaml] [key=value ...]", "", summary, "", "options:"]
    for f in fields(cls):
        choices = f.metadata.get("choices")
        extra = f" (choices: {', '.join(map(str, choices))})" if choices else ""
        shown = (shown_defaults or {}).get(f.name, repr(field_default(f)))
        lines.append(f"  {f.name}={shown}")
        lines.append(f"      {f.metadata.get('help', '')}{extra}")
    return "\n".join(lines)
