"""Rewards: the RewardFn protocol, rule/verifiable rewards, a reward model's scorer and AI judges.

``RewardFn = (prompts: list[str], completions: list[str], **columns) -> list[float]``. Everything here
fits that type; trainers call reward functions through :func:`call_reward_fn`, which validates what
they return, and configs name them by import path (:func:`resolve_reward_fn`).

* :mod:`.base`: the protocol, validation, import paths;
* :mod:`.rules`: rule / verifiable rewards (GSM8K answers, formats, lengths);
* :mod:`.model_scorer`: :class:`RewardModelScorer`, a trained reward model as a RewardFn;
* :mod:`.judge`: what AI judges share (templates, :class:`Judge`, :class:`PairJudge`);
  :mod:`.local_judge` (:class:`LocalLMJudge`) and :mod:`.http_judge` (:class:`HTTPChatJudge`).

Importing this package loads torch and the standard library only (no transformers): the local judge
receives its model and tokenizer from the caller.
"""

from .base import (
    InvalidRewardError,
    OnInvalid,
    RewardFn,
    ScreenedRewards,
    call_reward_fn,
    resolve_reward_fn,
    reward_fn_name,
    validate_rewards,
)
from .http_judge import HTTPChatJudge, parse_label_probs
from .judge import DEFAULT_RUBRIC, PAIRWISE_TEMPLATE, SCORE_TEMPLATE, Judge, JudgeError, PairJudge, PairwiseJudgeReward
from .local_judge import LocalLMJudge
from .model_scorer import RewardModelScorer
from .rules import (
    ANSWER_FORMATS,
    Contains,
    ExactMatch,
    LengthReward,
    RegexFormat,
    WeightedSum,
    answers_match,
    contains,
    exact_match,
    extract_answer,
    extract_boxed_answer,
    extract_gsm8k_answer,
    extract_last_number,
    gsm8k_exact_match,
    length_reward,
    normalize_answer,
    parse_number,
    regex_format,
    weighted_sum,
)

# the public names, explicitly (a test checks this list against the submodules' own __all__)
__all__ = [
    "RewardFn",
    "OnInvalid",
    "InvalidRewardError",
    "ScreenedRewards",
    "validate_rewards",
    "call_reward_fn",
    "resolve_reward_fn",
    "reward_fn_name",
    "RewardModelScorer",
    "ANSWER_FORMATS",
    "parse_number",
    "normalize_answer",
    "extract_gsm8k_answer",
    "extract_boxed_answer",
    "extract_last_number",
    "extract_answer",
    "answers_match",
    "exact_match",
    "regex_format",
    "length_reward",
    "contains",
    "weighted_sum",
    "ExactMatch",
    "RegexFormat",
    "LengthReward",
    "Contains",
    "WeightedSum",
    "gsm8k_exact_match",
    "DEFAULT_RUBRIC",
    "PAIRWISE_TEMPLATE",
    "SCORE_TEMPLATE",
    "Judge",
    "JudgeError",
    "PairJudge",
    "PairwiseJudgeReward",
    "LocalLMJudge",
    "HTTPChatJudge",
    "parse_label_probs",
]
