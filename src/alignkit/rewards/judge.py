"""AI judges: a language model compares or rates responses (RLAIF).

RLAIF (Lee et al. 2023, "RLAIF vs. RLHF: Scaling Reinforcement Learning from Human Feedback with AI
Feedback") replaces human preference labels by an LLM's: the judge sees a rubric (a "constitution", Bai
et al. 2022, "Constitutional AI"), the prompt and two responses, and the preference is read from the
probability of the next token, not from sampled text:

    P(A preferred) = softmax(z_A, z_B)_A = exp(z_A) / (exp(z_A) + exp(z_B))        z = next-token logits

LLM judges prefer whichever response is shown first (or second) more often than they should; Lee et al.
("addressing position bias") cancel this by asking in both orders and averaging. With
p_AB = P(label A | a shown as A, b as B) and p_BA = P(label A | b shown as A, a as B):

    prefer(x, a, b) = (p_AB + (1 - p_BA)) / 2          so that   prefer(x, a, b) = 1 - prefer(x, b, a).

Scoring a single response (direct RLAIF, "d-RLAIF", of Lee et al., who rate 1..10 and rescale the
expected rating to [-1, 1]; here the values are yours) asks for a rating among labels ``l_1..l_K``
with values ``v_k`` and returns the expected value under the next-token distribution renormalised over
the label tokens:  score = sum_k v_k * softmax(z_{l_1..l_K})_k.

Two judges share templates and these two rules:

- :class:`~alignkit.rewards.local_judge.LocalLMJudge` runs a causal LM held in memory (batched, left-padded,
  ``torch.no_grad``).
- :class:`~alignkit.rewards.http_judge.HTTPChatJudge` asks an OpenAI-compatible ``/chat/completions``
  endpoint, standard library only. Nothing is sent anywhere unless the user constructs it with a URL.

This module holds what they share: the templates, the :class:`Judge` base class and the :class:`PairJudge`
protocol (anything with ``prefer``, which RLAIF labelling takes).

Each judge is a :class:`~alignkit.rewards.base.RewardFn` in score mode (``judge(prompts, completions)``);
``judge.as_reward_fn(reference_column=...)`` gives the pairwise reward P(completion beats the reference).
"""

from __future__ import annotations

import string
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["DEFAULT_RUBRIC", "PAIRWISE_TEMPLATE", "SCORE_TEMPLATE", "Judge", "JudgeError", "PairJudge",
           "PairwiseJudgeReward"]

DEFAULT_RUBRIC = (
    "A good response is helpful, honest and harmless: it does what the user asked, accurately and clearly, "
    "admits uncertainty instead of inventing facts, and contains nothing harmful, unethical or deceptive."
)

PAIRWISE_TEMPLATE = (
    "{rubric}\n\n"
    "Prompt:\n{prompt}\n\n"
    "Response {label_a}:\n{response_a}\n\n"
    "Response {label_b}:\n{response_b}\n\n"
    "Which response is better? Answer with {label_a} or {label_b}.\n"
    "Preferred response:"
)
"""Placeholders: rubric, prompt, response_a, response_b, label_a, label_b. Ends where the label comes."""

SCORE_TEMPLATE = (
    "{rubric}\n\n"
    "Prompt:\n{prompt}\n\n"
    "Response:\n{response}\n\n"
    "Rate the response from {lowest} (worst) to {highest} (best). Answer with one of: {labels}.\n"
    "Rating:"
)
"""Placeholders: rubric, prompt, response, labels (comma-separated), lowest, highest."""

_PAIRWISE_FIELDS = {"rubric", "prompt", "response_a", "response_b", "label_a", "label_b"}
_SCORE_FIELDS = {"rubric", "prompt", "response", "labels", "lowest", "highest"}


@runtime_checkable
class PairJudge(Protocol):
    """Anything that compares two responses: ``prefer(prompts, a, b) -> [N]`` P(a is better than b).

    Every :class:`Judge` (:class:`~alignkit.rewards.LocalLMJudge`, :class:`~alignkit.rewards.HTTPChatJudge`) is one.
    """

    def prefer(self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]): ...


class JudgeError(RuntimeError):
    """The judge endpoint could not be reached or refused the request (HTTP error status)."""


def _clip(text: Any, width: int = 200) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else str(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def _check_template(template: str, fields: set[str], required: set[str], what: str) -> str:
    try:
        used = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as e:
        raise ValueError(f"{what} is not a valid format string: {e}") from None
    unknown = used - fields
    if unknown:
        raise ValueError(f"{what} has unknown placeholders {sorted(unknown)}; available: {sorted(fields)}")
    missing = required - used
    if missing:
        raise ValueError(f"{what} must contain the placeholders {sorted(missing)}")
    return template


def _check_labels(labels: Sequence[str], what: str, n: int | None = None) -> tuple[str, ...]:
    labels = tuple(labels)
    if n is not None and len(labels) != n:
        raise ValueError(f"{what} must be {n} strings, got {labels!r}")
    if len(labels) < 2 or any(not isinstance(x, str) or not x.strip() for x in labels):
        raise ValueError(f"{what} must be at least two non-blank strings, got {labels!r}")
    if len({x.strip() for x in labels}) != len(labels):
        raise ValueError(f"{what} must be distinct, got {labels!r}")
    return labels


class Judge(ABC):
    """Shared by the judges: templates, the two-order preference and expected-value scoring.

    Subclasses implement :meth:`label_probs`. See the module docstring for the equations.

    Args:
        rubric: the criteria (constitution) shown to the judge.
        labels: the two answer labels for pairwise comparison (first = "response A").
        template: pairwise prompt (see :data:`PAIRWISE_TEMPLATE` for the placeholders); it should end
            where the label is expected.
        score_labels: rating labels for :meth:`score`, worst to best; None disables score mode.
        score_template: single-response prompt (see :data:`SCORE_TEMPLATE`).
        score_values: the value of each score label; default: the labels read as numbers when they all
            are, else 0..K-1.
    """

    def __init__(
        self,
        rubric: str = DEFAULT_RUBRIC,
        labels: Sequence[str] = ("A", "B"),
        template: str = PAIRWISE_TEMPLATE,
        score_labels: Sequence[str] | None = ("1", "2", "3", "4", "5"),
        score_template: str = SCORE_TEMPLATE,
        score_values: Sequence[float] | None = None,
    ):
        self.rubric = str(rubric)
        self.labels = _check_labels(labels, "labels", n=2)
        self.template = _check_template(template, _PAIRWISE_FIELDS, {"response_a", "response_b"}, "template")
        self.score_labels = None if score_labels is None else _check_labels(score_labels, "score_labels")
        self.score_template = _check_template(score_template, _SCORE_FIELDS, {"response"}, "score_template")
        if self.score_labels is None:
            self.score_values = None
        elif score_values is not None:
            if len(score_values) != len(self.score_labels):
                raise ValueError(f"score_values has {len(score_values)} entries for {len(self.score_labels)} labels")
            self.score_values = tuple(float(v) for v in score_values)
        else:
            try:
                self.score_values = tuple(float(x) for x in self.score_labels)
            except ValueError:
                self.score_values = tuple(float(k) for k in range(len(self.score_labels)))

    # -- prompts ---------------------------------------------------------------------------------
    def pairwise_prompt(self, prompt: str, response_a: str, response_b: str) -> str:
        """The judge prompt showing ``response_a`` as label A and ``response_b`` as label B."""
        return self.template.format(
            rubric=self.rubric, prompt=prompt, response_a=response_a, response_b=response_b,
            label_a=self.labels[0], label_b=self.labels[1],
        )

    def score_prompt(self, prompt: str, response: str) -> str:
        """The judge prompt asking for a rating of one response."""
        labels = self._require_score_labels()
        return self.score_template.format(
            rubric=self.rubric, prompt=prompt, response=response,
            labels=", ".join(labels), lowest=labels[0], highest=labels[-1],
        )

    def _require_score_labels(self) -> tuple[str, ...]:
        if self.score_labels is None:
            raise ValueError("this judge was built with score_labels=None; score mode is disabled")
        return self.score_labels

    # -- the one thing a backend provides --------------------------------------------------------
    @abstractmethod
    def label_probs(self, texts: list[str], labels: tuple[str, ...], where: list[str]) -> torch.Tensor:
        """``[M, K]`` float32 probabilities of the K labels as the judge's next answer to each of the M
        texts, renormalised over the labels (rows sum to 1). ``where[m]`` names text m in errors."""

    # -- the two rules ---------------------------------------------------------------------------
    def prefer(self, prompts: Sequence[str], responses_a: Sequence[str], responses_b: Sequence[str]) -> torch.Tensor:
        """P(response a is better than response b), asked in both orders and averaged. ``-> [N]`` float32.

        ``p = (p_AB + 1 - p_BA) / 2``; hence ``prefer(x, a, b) = 1 - prefer(x, b, a)``, whatever position
        bias the judge has. The 2N judge prompts are interleaved (row 2i: a first, row 2i+1: b first), so
        swapping a and b swaps rows within the same batch.
        """
        n = len(prompts)
        if len(responses_a) != n or len(responses_b) != n:
            raise ValueError(f"got {n} prompts, {len(responses_a)} responses_a and {len(responses_b)} responses_b")
        if n == 0:
            return torch.zeros(0, dtype=torch.float32)
        texts, where = [], []
        for i, (x, a, b) in enumerate(zip(prompts, responses_a, responses_b, strict=True)):
            texts += [self.pairwise_prompt(x, a, b), self.pairwise_prompt(x, b, a)]
            where += [f"prompt index {i} ({order} shown as {self.labels[0]})" for order in ("a", "b")]
        p = self.label_probs(texts, self.labels, where)[:, 0].double().view(n, 2)
        return (0.5 * (p[:, 0] + (1.0 - p[:, 1]))).float()

    def score(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        """Expected rating ``sum_k v_k P(label_k)`` of each completion (d-RLAIF). ``-> list of N floats``."""
        labels = self._require_score_labels()
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        if not prompts:
            return []
        texts = [self.score_prompt(x, y) for x, y in zip(prompts, completions, strict=True)]
        probs = self.label_probs(texts, labels, [f"prompt index {i}" for i in range(len(texts))]).double()
        values = torch.tensor(self.score_values, dtype=torch.float64)
        return (probs @ values).tolist()

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        """RewardFn in score mode: :meth:`score` (columns are ignored)."""
        return self.score(prompts, completions)

    def as_reward_fn(self, reference_column: str | None = None):
        """This judge as a RewardFn: score mode (``reference_column=None``, the judge itself), or pairwise:
        reward = :meth:`prefer` (prompt, completion, the reference response in ``reference_column``)."""
        if reference_column is None:
            self._require_score_labels()
            return self
        return PairwiseJudgeReward(self, reference_column)


@dataclass(frozen=True)
class PairwiseJudgeReward:
    """RewardFn: ``r_i = judge.prefer(prompt_i, completion_i, columns[reference_column][i])`` in [0, 1]."""

    judge: Judge
    reference_column: str

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        if self.reference_column not in columns:
            raise ValueError(
                f"the pairwise judge reward needs the column {self.reference_column!r}; "
                f"the batch has columns {sorted(columns)}"
            )
        return self.judge.prefer(prompts, completions, list(columns[self.reference_column])).tolist()
