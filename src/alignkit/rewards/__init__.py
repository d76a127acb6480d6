"""Rewards: the RewardFn protocol, rule/verifiable rewards and AI judges.

``RewardFn = (prompts: list[str], completions: list[str], **columns) -> list[float]``. Everything here
fits that type; trainers call reward functions through :func:`call_reward_fn`, which validates what
they return, and configs name them by import path (:func:`resolve_reward_fn`).

Importing this package loads torch and the standard library only (no transformers): the local judge
receives its model and tokenizer from the caller.
"""

# Each submodule's ``__all__`` is the one list of its public names; the package re-exports them as they are.
from . import base, judge, model_scorer, rules
from .base import *  # noqa: F403
from .judge import *  # noqa: F403
from .model_scorer import *  # noqa: F403
from .rules import *  # noqa: F403

__all__ = [*model_scorer.__all__, *base.__all__, *rules.__all__, *judge.__all__]
