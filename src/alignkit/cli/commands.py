"""The one table of ``alignkit`` commands: ``Command(name, config, summary, run)``; :func:`main` dispatches from it
and from nowhere else.

A command's config class is built on first use (``config`` is a function returning it), so ``alignkit --help``
and the classic commands do not import the language-model stack.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from . import runners
from .jobs import (
    GenerateJob,
    GetModelJob,
    ModelJob,
    OfflineDataJob,
    OnlineDataJob,
    OutputJob,
    ReportJob,
    check_required,
    compose_job,
    rlaif_job,
)


@dataclass(frozen=True)
class Command:
    """One ``alignkit`` command.

    Attributes:
        name: what the user types: ``"ppo"``, or ``"classic gym"`` for a command of the ``classic`` group.
        config: returns the config dataclass its options come from (called on first use).
        summary: one line for ``alignkit --help`` and the command's own help.
        run: runs the command with its parsed and validated config.
        positional: a field a bare argument sets (``alignkit report RUN_DIR``), else "".
        check: checks a parsed config before its own ``validate`` (required fields, files that must exist).
        fresh_run_dir: without an ``output_dir`` from the user, the run gets a new directory
            ``runs/<command>-<date>-<time>`` (runs never pile into one directory by default).
    """

    name: str
    config: Callable[[], type]
    summary: str
    run: Callable[[object], None]
    positional: str = ""
    check: Callable[[object], None] | None = check_required
    fresh_run_dir: bool = True

    @property
    def group(self) -> str:
        """``"classic"`` for ``"classic gym"``; "" for a top-level command."""
        return self.name.split(" ", 1)[0] if " " in self.name else ""


def _trainer_job(job_name: str, trainer_config: str, *parts: type) -> Callable[[], type]:
    @functools.cache
    def build() -> type:
        from .. import trainers

        return compose_job(job_name, getattr(trainers, trainer_config), *parts)

    return build


def _imported(target: str) -> Callable[[], object]:
    """``target`` (``"package.module:name"``), imported when first called (the classic commands load no
    transformers; nothing loads at ``alignkit --help``)."""

    def load() -> object:
        from ..rewards.base import resolve_import_path

        return resolve_import_path(target, "command")

    return load


def _classic(sub: str, module: str, config: str, runner: str, summary: str) -> Command:
    """``alignkit classic <sub>``: its config class and its runner ``runner(config) -> summary dict``."""
    return Command(f"classic {sub}", _imported(f"{module}:{config}"), summary,
                   functools.partial(runners.run_classic, _imported(f"{module}:{runner}")), check=None,
                   fresh_run_dir=False)


def _quickstart_config() -> type:
    from ..quickstart import QuickstartConfig

    return QuickstartConfig


_OFFLINE = (OfflineDataJob, ModelJob)
_ONLINE = (OnlineDataJob, ModelJob)

COMMANDS: tuple[Command, ...] = (
    Command("sft", _trainer_job("SFTJob", "SFTConfig", *_OFFLINE), "supervised fine-tuning on prompt/completion data",
            runners.run_offline),
    Command("reward", _trainer_job("RewardJob", "RewardConfig", *_OFFLINE), "train a Bradley-Terry reward model",
            runners.run_offline),
    Command("dpo", _trainer_job("DPOJob", "DPOConfig", *_OFFLINE), "DPO / IPO / cDPO / hinge on preference pairs",
            runners.run_offline),
    Command("reinforce", _trainer_job("ReinforceJob", "ReinforceConfig", *_ONLINE),
            "REINFORCE with a baseline (none, batch, prompt, loo = RLOO, grpo)", runners.run_online),
    Command("ppo", _trainer_job("PPOJob", "PPOConfig", *_ONLINE), "PPO actor-critic with a KL penalty",
            runners.run_online),
    Command("trpo", _trainer_job("TRPOJob", "TRPOConfig", *_ONLINE), "TRPO: KL-constrained natural-gradient steps",
            runners.run_online),
    Command("bon", _trainer_job("BestOfNJob", "BestOfNConfig", OutputJob, *_ONLINE),
            "Best-of-N sampling with a reward: win rate, KL bound, chosen completions as SFT data", runners.run_bon),
    Command("rlaif", functools.cache(rlaif_job),
            "RLAIF: an AI judge labels pairs of policy samples; train a reward model or DPO", runners.run_rlaif),
    Command("generate", lambda: GenerateJob, "sample completions from a checkpoint", runners.run_generate),
    Command("model", lambda: GetModelJob, "save a model to start from: smollm2 (real, 135M) or tiny (random, for "
            "smoke runs)", runners.run_get_model, positional="name", check=None, fresh_run_dir=False),
    _classic("gridworld", "alignkit.classic.tabular_cli", "GridworldConfig", "run_gridworld",
             "value / policy iteration on the 4x3 grid world of seed 004 (slip, living reward, gamma)"),
    _classic("bandit", "alignkit.classic.tabular_cli", "BanditConfig", "run_bandit",
             "the 10-armed testbed: epsilon-greedy, optimistic, UCB, gradient bandits over many runs"),
    _classic("gym", "alignkit.classic.gym_runner", "GymConfig", "run_gym",
             "REINFORCE, A2C, Q actor-critic, PPO, TRPO, behaviour cloning, preference-based PPO on gymnasium"),
    Command("report", lambda: ReportJob,
            "(re)write a run's report.html: alignkit report RUN_DIR; compare runs: alignkit report RUN_A RUN_B "
            "output_dir=DIR",
            runners.run_report, positional="run_dir", check=None, fresh_run_dir=False),
    Command("quickstart", _quickstart_config,
            "the built-in pipeline: SFT -> reward model -> PPO (and DPO), minutes on a CPU", runners.run_quickstart,
            check=None, fresh_run_dir=False),
)

GROUPS = {"classic": "the foundations: classic gridworld | bandit | gym (alignkit classic --help)"}

BY_NAME = {c.name: c for c in COMMANDS}
