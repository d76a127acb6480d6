"""Rule-based (verifiable) rewards: answer extraction, exact match, format, length, markers, weighted sums.

Every factory here returns a :class:`~alignkit.rewards.base.RewardFn`: a small frozen dataclass whose
``__call__(prompts, completions, **columns)`` returns one float per sample and whose repr names its
settings (so validation errors say which rule misbehaved).

Answer extraction (used by :func:`exact_match`, the reward of RL on GSM8K, Cobbe et al. 2021, and of
R1-style "verifiable rewards", DeepSeek-AI 2025):

    gsm8k        the number after the last ``####``                "... #### 1,234"     -> "1234"
    boxed        the content of the last ``\\boxed{...}``            "\\boxed{\\frac{1}{2}}" -> "\\frac{1}{2}"
    last_number  the last number anywhere in the text (a lenient fallback, off by default)

Numbers are canonicalised: thousands commas removed (only well-formed groups: ``1,234`` is one number,
``1,2`` two), a leading ``$`` and ``+`` dropped, Unicode minus read as ``-``, trailing zeros and a
trailing period dropped (``"$3.50."`` -> ``"3.5"``, ``"42.0"`` -> ``"42"``). A number glued to a
preceding word character is not a number (``H2O``), and ``5-3`` reads as 5 and 3, not -3.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from .base import RewardFn, call_reward_fn, resolve_reward_fn, reward_fn_name

__all__ = [
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
]

# sign (ASCII or Unicode minus), optional dollar, then 1,234,567 (well-formed groups only) or 1234, and an
# optional fraction; ".5" is allowed. The look-ahead makes sure at least one digit follows.
_NUMBER_BODY = r"(?P<sign>[-+\u2212]?)\$?(?=\.?\d)(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d*)(?P<frac>\.\d+)?"
_NUMBER_IN_TEXT = re.compile(r"(?<![\w.])" + _NUMBER_BODY)
_NUMBER_EXACT = re.compile(_NUMBER_BODY + r"%?")

ANSWER_FORMATS = ("gsm8k", "boxed")


def _to_decimal(m: re.Match) -> Decimal:
    sign = "-" if m.group("sign") in ("-", "\u2212") else ""
    return Decimal(sign + (m.group("int").replace(",", "") or "0") + (m.group("frac") or ""))


def _canonical(d: Decimal) -> str:
    if d == d.to_integral_value():
        return str(int(d))  # also turns -0 into 0
    return format(d.normalize(), "f")


def parse_number(text: str) -> Decimal | None:
    """The number a whole string spells, or None. Tolerates ``$``, thousands commas, ``%``, a final period.

    >>> parse_number("$1,234.50."), parse_number("-7"), parse_number("\\u22123"), parse_number("12 apples")
    (Decimal('1234.50'), Decimal('-7'), Decimal('-3'), None)
    """
    s = str(text).strip().replace("\\$", "$").replace("\\%", "%").replace("\\!", "").strip("$ ").rstrip(".")
    m = _NUMBER_EXACT.fullmatch(s.strip())
    if m is None:
        return None
    try:
        return _to_decimal(m)
    except InvalidOperation:  # pragma: no cover - the regex only admits valid decimals
        return None


def normalize_answer(text: str) -> str:
    """Canonical form of an extracted answer: a canonical number when it is one, else the stripped text
    with runs of whitespace collapsed.

    >>> normalize_answer(" 1,000.0 "), normalize_answer("$-5."), normalize_answer(" x  + 1 ")
    ('1000', '-5', 'x + 1')
    """
    d = parse_number(text)
    return _canonical(d) if d is not None else " ".join(str(text).split())


def extract_gsm8k_answer(text: str) -> str | None:
    """The answer after the last ``####`` (GSM8K's format): the number that starts the rest of that line,
    canonicalised (``"#### 18 dollars"`` -> ``"18"``); else the rest of the line, normalised
    (``"#### x + 1"`` -> ``"x + 1"``); None when there is no ``####`` or nothing after it.

    >>> extract_gsm8k_answer("She pays 2 * 3 = 6 dollars.\\n#### 6")
    '6'
    >>> [extract_gsm8k_answer(t) for t in ["#### 1,234", "####-5", "#### $3.50.", "#### 42 apples"]]
    ['1234', '-5', '3.5', '42']
    >>> extract_gsm8k_answer("#### 1\\n#### 2"), extract_gsm8k_answer("no marker 7"), extract_gsm8k_answer("####  ")
    ('2', None, None)
    """
    text = str(text)
    at = text.rfind("####")
    if at < 0:
        return None
    line = text[at + 4 :].strip().split("\n", 1)[0].strip()
    m = _NUMBER_IN_TEXT.match(line)
    if m is not None:
        return _canonical(_to_decimal(m))
    return normalize_answer(line) or None


def extract_boxed_answer(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` (nested braces allowed), normalised; None if absent or
    unbalanced.

    >>> extract_boxed_answer("so \\\\boxed{1,234}."), extract_boxed_answer("\\\\boxed{\\\\frac{1}{2}}")
    ('1234', '\\\\frac{1}{2}')
    >>> [extract_boxed_answer(t) for t in ["\\\\boxed{3} then \\\\boxed{4}", "\\\\boxed{7", "7"]]
    ['4', None, None]
    """
    text = str(text)
    at = text.rfind("\\boxed{")
    if at < 0:
        return None
    start = at + len("\\boxed{")
    depth = 1
    for j in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return normalize_answer(text[start:j]) or None
    return None


def extract_last_number(text: str) -> str | None:
    """The last number in the text, canonicalised; None if there is none.

    >>> extract_last_number("3 apples and 1,250.00 pears."), extract_last_number("x = -2"), extract_last_number("H2O")
    ('1250', '-2', None)
    """
    last = None
    for last in _NUMBER_IN_TEXT.finditer(str(text)):  # noqa: B007 - keep the last match
        pass
    return _canonical(_to_decimal(last)) if last is not None else None


_EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "gsm8k": extract_gsm8k_answer,
    "boxed": extract_boxed_answer,
    "last_number": extract_last_number,
}


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    formats = (formats,) if isinstance(formats, str) else tuple(formats)
    for f in formats:
        if f not in _EXTRACTORS:
            raise ValueError(f"unknown answer format {f!r}; choose from {sorted(_EXTRACTORS)}")
    if not formats:
        raise ValueError("formats must name at least one answer format")
    return formats


def extract_answer(
    text: str, formats: Sequence[str] = ANSWER_FORMATS, last_number_fallback: bool = False
) -> str | None:
    """Try each format in order (``"gsm8k"``, ``"boxed"``, ``"last_number"``); the first hit wins. With
    ``last_number_fallback`` the last number in the text is the answer when no format matched.

    >>> extract_answer("the answer is \\\\boxed{12}"), extract_answer("it is 12.")
    ('12', None)
    >>> extract_answer("it is 12.", last_number_fallback=True)
    '12'

    """
    for f in _check_formats(formats):
        found = _EXTRACTORS[f](text)
        if found is not None:
            return found
    return extract_last_number(text) if last_number_fallback else None


def answers_match(predicted: str | None, reference: str | None) -> bool:
    """Numeric equality when both parse as numbers (``"0.50"`` == ``".5"``), else equality of the
    normalised strings. None never matches.

    >>> answers_match("1,000", "1000.0"), answers_match("x+1", "x + 1"), answers_match(None, "1")
    (True, False, False)
    """
    if predicted is None or reference is None:
        return False
    a, b = parse_number(predicted), parse_number(reference)
    if a is not None and b is not None:
        return a == b
    return normalize_answer(predicted) == normalize_answer(reference)


def _reference_answer(reference: Any) -> str | None:
    """A reference column entry: a GSM8K solution ("... #### 42"), a boxed answer, or a bare answer."""
    text = str(reference)
    return extract_answer(text, ANSWER_FORMATS) or normalize_answer(text) or None


def _column(columns: dict[str, Any], name: str, rule: str) -> Sequence[Any]:
    if name not in columns:
        raise ValueError(f"{rule} needs the column {name!r}; the batch has columns {sorted(columns)}")
    return columns[name]


@dataclass(frozen=True)
class ExactMatch:
    """See :func:`exact_match`."""

    answer_column: str = "answer"
    formats: tuple[str, ...] = ANSWER_FORMATS
    last_number_fallback: bool = False
    correct: float = 1.0
    incorrect: float = 0.0

    def __post_init__(self):
        object.__setattr__(self, "formats", _check_formats(self.formats))

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        refs = _column(columns, self.answer_column, "exact_match")
        return [
            self.correct
            if answers_match(extract_answer(c, self.formats, self.last_number_fallback), _reference_answer(r))
            else self.incorrect
            for c, r in zip(completions, refs, strict=True)
        ]


def exact_match(
    answer_column: str = "answer",
    formats: Sequence[str] = ANSWER_FORMATS,
    last_number_fallback: bool = False,
    correct: float = 1.0,
    incorrect: float = 0.0,
) -> ExactMatch:
    """Reward ``correct`` when the answer extracted from the completion equals the reference, else
    ``incorrect``.

    The completion's answer is found by :func:`extract_answer` (``formats`` in order, then optionally the
    last number); a completion with no extractable answer is incorrect. The reference column may hold a
    full GSM8K solution (``"... #### 42"``), a ``\\boxed{}`` answer or a bare answer; comparison is numeric
    when both sides parse as numbers (:func:`answers_match`).

    >>> r = exact_match()
    >>> r(["q"] * 4, ["so #### 1,234", "\\\\boxed{1234.0}", "1234", "#### 1243"], answer=["x #### 1234"] * 4)
    [1.0, 1.0, 0.0, 0.0]
    >>> exact_match(last_number_fallback=True)(["q"], ["I think it is -3."], answer=["-3"])
    [1.0]
    """
    return ExactMatch(answer_column, tuple(_check_formats(formats)), last_number_fallback, correct, incorrect)


@dataclass(frozen=True)
class RegexFormat:
    """See :func:`regex_format`."""

    pattern: str
    reward: float = 1.0
    otherwise: float = 0.0
    match: Literal["fullmatch", "search"] = "fullmatch"
    flags: int = re.DOTALL
    _compiled: re.Pattern = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.match not in ("fullmatch", "search"):
            raise ValueError(f"match must be 'fullmatch' or 'search', got {self.match!r}")
        try:
            object.__setattr__(self, "_compiled", re.compile(self.pattern, self.flags))
        except re.error as e:
            raise ValueError(f"regex_format pattern {self.pattern!r} does not compile: {e}") from None

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        test = self._compiled.fullmatch if self.match == "fullmatch" else self._compiled.search
        return [self.reward if test(c) else self.otherwise for c in completions]


def regex_format(
    pattern: str,
    reward: float = 1.0,
    otherwise: float = 0.0,
    match: Literal["fullmatch", "search"] = "fullmatch",
    flags: int = re.DOTALL,
) -> RegexFormat:
    """``reward`` if the completion matches ``pattern``, else ``otherwise`` (a format reward).

    ``match="fullmatch"`` (default) requires the *whole* completion to match (``re.fullmatch``; a stray
    trailing newline fails unless the pattern allows it, e.g. ends with ``\\s*``); ``match="search"``
    rewards any occurrence (``re.search``). ``flags`` default to ``re.DOTALL`` so ``.`` crosses lines.

    >>> r = regex_format(r"<think>.*?</think>\\s*<answer>.*?</answer>\\s*")
    >>> r(["q", "q"], ["<think>2+2</think>\\n<answer>4</answer>", "4"])
    [1.0, 0.0]
    >>> regex_format(r"\\d+", match="search")(["q", "q"], ["it is 4", "four"])
    [1.0, 0.0]
    """
    return RegexFormat(pattern, reward, otherwise, match, flags)


@dataclass(frozen=True)
class LengthReward:
    """See :func:`length_reward`."""

    target: float
    scale: float | None = None
    unit: Literal["chars", "words"] = "chars"

    def __post_init__(self):
        if not self.target >= 0:
            raise ValueError(f"length_reward target must be >= 0, got {self.target}")
        if self.scale is not None and not self.scale > 0:
            raise ValueError(f"length_reward scale must be > 0, got {self.scale}")
        if self.unit not in ("chars", "words"):
            raise ValueError(f"length_reward unit must be 'chars' or 'words', got {self.unit!r}")

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        scale = self.scale if self.scale is not None else max(float(self.target), 1.0)
        lengths = [len(c) if self.unit == "chars" else len(c.split()) for c in completions]
        return [0.0 - abs(n - self.target) / scale for n in lengths]


def length_reward(target: float, scale: float | None = None, unit: Literal["chars", "words"] = "chars") -> LengthReward:
    """Negative scaled distance to a target length: ``r = -|L - target| / scale``, at most 0.

    ``L`` counts characters (``unit="chars"``) or whitespace-separated words (``unit="words"``). ``scale``
    defaults to ``max(target, 1)``, so r is the relative deviation (-1 for an empty completion or one of
    twice the target length).

    >>> length_reward(10)(["q"] * 3, ["x" * 10, "x" * 5, "x" * 30])
    [0.0, -0.5, -2.0]
    >>> length_reward(3, scale=1.0, unit="words")(["q"], ["one two three four"])
    [-1.0]
    """
    return LengthReward(target, scale, unit)


@dataclass(frozen=True)
class Contains:
    """See :func:`contains`."""

    markers: tuple[str, ...]
    reward: float = 1.0
    otherwise: float = 0.0
    require: Literal["any", "all"] = "any"
    case_sensitive: bool = True

    def __post_init__(self):
        markers = (self.markers,) if isinstance(self.markers, str) else tuple(self.markers)
        if not markers or any(not isinstance(m, str) or not m for m in markers):
            raise ValueError(f"contains needs one or more non-empty marker strings, got {self.markers!r}")
        if self.require not in ("any", "all"):
            raise ValueError(f"require must be 'any' or 'all', got {self.require!r}")
        object.__setattr__(self, "markers", markers)

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        fold = (lambda s: s) if self.case_sensitive else str.casefold
        markers = [fold(m) for m in self.markers]
        test = any if self.require == "any" else all
        return [self.reward if test(m in fold(c) for m in markers) else self.otherwise for c in completions]


def contains(
    markers: str | Sequence[str],
    reward: float = 1.0,
    otherwise: float = 0.0,
    require: Literal["any", "all"] = "any",
    case_sensitive: bool = True,
) -> Contains:
    """``reward`` if the completion contains the marker substring(s) (any or all of them), else
    ``otherwise``.

    >>> contains("</answer>")(["q", "q"], ["<answer>4</answer>", "4"])
    [1.0, 0.0]
    >>> contains(["Step 1", "step 2"], require="all", case_sensitive=False)(["q"], ["STEP 1 ... Step 2"])
    [1.0]
    """
    return Contains(markers, reward, otherwise, require, case_sensitive)


@dataclass(frozen=True)
class WeightedSum:
    """See :func:`weighted_sum`."""

    components: tuple[tuple[RewardFn, float], ...]

    def __post_init__(self):
        if not self.components:
            raise ValueError("weighted_sum needs at least one (reward_fn, weight) pair")
        resolved = []
        for k, item in enumerate(self.components):
            try:
                fn, weight = item
            except (TypeError, ValueError):
                raise ValueError(f"weighted_sum component {k} must be a (reward_fn, weight) pair: {item!r}") from None
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
                raise ValueError(f"weighted_sum component {k} has weight {weight!r}; weights are finite numbers")
            resolved.append((resolve_reward_fn(fn), float(weight)))
        object.__setattr__(self, "components", tuple(resolved))

    def breakdown(self, prompts: list[str], completions: list[str], **columns: Any) -> list[Any]:
        """Each component's validated (unweighted) rewards, a float32 tensor ``[N]`` per component."""
        return [
            call_reward_fn(fn, prompts, completions, source_name=f"weighted_sum component {k} ({reward_fn_name(fn)})",
                           **columns)
            for k, (fn, _) in enumerate(self.components)
        ]

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
        parts = self.breakdown(prompts, completions, **columns)
        total = sum(w * r.double() for (_, w), r in zip(self.components, parts, strict=True))
        return total.tolist()


def weighted_sum(components: Sequence[tuple[RewardFn | str, float]]) -> WeightedSum:
    """``r = sum_k w_k r_k``: combine reward functions (or import paths of them) with weights.

    Each component's output is validated (:func:`~alignkit.rewards.base.call_reward_fn`), and an error
    names the component index; :meth:`WeightedSum.breakdown` gives the per-component rewards for logging.

    >>> r = weighted_sum([(exact_match(), 1.0), (contains("####"), 0.1)])
    >>> r(["q", "q", "q"], ["#### 4", "#### 5", "4"], answer=["4", "4", "4"])
    [1.1, 0.1, 0.0]
    """
    return WeightedSum(tuple(tuple(c) if isinstance(c, list) else c for c in components))


gsm8k_exact_match: ExactMatch = exact_match()
"""``exact_match()`` with its defaults, for configs: ``reward_fn: alignkit.rewards.rules:gsm8k_exact_match``."""
