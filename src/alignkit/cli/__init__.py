"""``alignkit <command> [--config preset.yaml] [key=value ...]``: every method from the command line.

* :mod:`.parser`: ``[--config FILE] [key=value ...]`` -> a validated config dataclass; help text;
* :mod:`.jobs`: the command line's own fields (model, data files, judge) and how a job config is composed;
* :mod:`.commands`: the one table of commands (``Command(name, config, summary, run)``);
* :mod:`.inputs` / :mod:`.runners`: what each command reads, then does.

Everything is validated before anything is written: an unknown command or key, a value of the wrong type, a
missing file, or a preset written for another method prints a message naming the key (and the valid choices)
and exits with code 2. The resolved config is saved as ``<output_dir>/resolved_config.yaml``. Configs hold
values only: nothing in them is executed (a reward function is named by import path).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

from ..data.errors import DataError
from .commands import BY_NAME, COMMANDS, GROUPS, Command
from .parser import USAGE_ERROR, UsageError, build_config, config_help

__all__ = ["BY_NAME", "COMMANDS", "Command", "USAGE_ERROR", "UsageError", "command_help", "main", "main_help",
           "parse_config"]


def find_command(name: str) -> Command:
    if name in BY_NAME:
        return BY_NAME[name]
    group = name.split(" ", 1)[0]
    if group in GROUPS:
        subs = [c.name for c in COMMANDS if c.group == group]
        raise UsageError(f"unknown command {name!r}; choose one of {', '.join(subs)}")
    tops = sorted({c.group or c.name for c in COMMANDS if c.name not in ("report",)})
    raise UsageError(f"unknown command {name!r}; choose one of {', '.join(tops)}")


def parse_config(name: str, argv: list[str]):
    """The validated config of command ``name`` from ``[--config FILE] [key=value ...]``; raises UsageError."""
    command = find_command(name)
    fill = functools.partial(fresh_run_dir, name) if command.fresh_run_dir else None
    return build_config(name, command.config(), argv, command.positional, command.check, fill)


def fresh_run_dir(name: str, given: dict) -> dict:
    """``{"output_dir": "runs/<command>-<date>-<time>"}`` (a new directory) unless the user gave one.

    Several processes would each pick their own time, so a multi-process launch must name its directory.
    """
    if "output_dir" in given:
        return {}
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        raise UsageError(f"output_dir: required when {world_size} processes are launched (each would pick its own "
                         "fresh runs/<command>-<time> directory); name the run directory")
    base = Path("runs") / f"{name.replace(' ', '-')}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return {"output_dir": str(path)}


def command_help(name: str) -> str:
    command = find_command(name)
    shown = {"output_dir": f"runs/{name}-<date>-<time> (a new directory each run)"} if command.fresh_run_dir else {}
    return config_help(name, command.config(), command.summary, command.positional, shown)


def main_help() -> str:
    rows, seen = [], set()
    for command in COMMANDS:
        if command.group:
            if command.group not in seen:
                seen.add(command.group)
                rows.append(f"  {command.group:<10} {GROUPS[command.group]}")
            continue
        rows.append(f"  {command.name:<10} {command.summary}")
    return "\n".join(["usage: alignkit <command> [--config preset.yaml] [key=value ...]", "",
                      "Align language models with human and AI feedback.", "", "commands:", *rows, "",
                      "alignkit <command> --help lists a command's options."])


def group_help(group: str) -> str:
    subs = [c for c in COMMANDS if c.group == group]
    names = "|".join(c.name.split(" ", 1)[1] for c in subs)
    return (f"usage: alignkit {group} <{names}> [--config preset.yaml] [key=value ...]\n\ncommands:\n"
            + "\n".join(f"  {c.name.split(' ', 1)[1]:<10} {c.summary}" for c in subs))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(main_help())
        return 0 if argv else USAGE_ERROR
    name, rest = argv[0], argv[1:]
    if name in GROUPS:
        if not rest or rest[0] in ("-h", "--help"):
            print(group_help(name))
            return 0 if rest else USAGE_ERROR
        if "=" in rest[0] or rest[0].startswith("-"):
            subs = ", ".join(c.name.split(" ", 1)[1] for c in COMMANDS if c.group == name)
            print(f"alignkit {name}: error: name a command before the options: {subs}", file=sys.stderr)
            return USAGE_ERROR
        name, rest = f"{name} {rest[0]}", rest[1:]
    try:
        command = find_command(name)
        if any(a in ("-h", "--help") for a in rest):
            print(command_help(name))
            return 0
        config = parse_config(name, rest)
        command.run(name, config)
    except (UsageError, DataError) as e:  # a DataError names a data file's bad row: file, line and field
        print(f"alignkit {name}: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    return 0
