"""alignkit.rewards.rules: answer extraction edge cases and the rule rewards, checked by hand."""

import math
import re
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from alignkit.rewards import (
    InvalidRewardError,
    call_reward_fn,
    contains,
    exact_match,
    extract_answer,
    extract_boxed_answer,
    extract_gsm8k_answer,
    extract_last_number,
    length_reward,
    parse_number,
    regex_format,
    weighted_sum,
)

# ---- GSM8K extraction ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),  # a real GSM8K solution
        ("#### 1,234", "1234"),  # thousands separator
        ("#### 1,234,567.00", "1234567"),
        ("#### -5", "-5"),  # negative
        ("####-5", "-5"),  # no space
        ("#### \u22123", "-3"),  # Unicode minus
        ("#### 3.50", "3.5"),  # decimal, trailing zero dropped
        ("#### 0.5", "0.5"),
        ("#### .5", "0.5"),
        ("#### 42.", "42"),  # trailing period
        ("#### $42.", "42"),  # dollar and period
        ("#### -$5", "-5"),
        ("#### $-5", "-5"),
        ("#### 42.0", "42"),
        ("#### 50%", "50"),
        ("#### 18 dollars", "18"),  # the number that starts the line
        ("#### x + 1", "x + 1"),  # not a number: the line, normalised
        ("####\n42", "42"),  # answer on the next line
        ("#### 1\nmore text\n#### 2", "2"),  # the last #### wins
        ("#### -0", "0"),
        ("#### forty two", "forty two"),  # no number: the text of that line
        ("####", None),
        ("####   \n", None),
        ("The answer is 42", None),  # no marker (see last_number for the lenient reading)
    ],
)
def test_extract_gsm8k_answer(text, expected):
    assert extract_gsm8k_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 apples and 1,250.00 pears.", "1250"),
        ("x = -2", "-2"),
        ("5-3=2", "2"),
        ("5 - 3", "3"),  # subtraction, not -3
        ("H2O", None),  # glued to a word
        ("version 1.2.3", "1.2"),  # "1.2", then ".3" is glued to a decimal point
        ("1,2345", "2345"),  # ill-formed group: read as 1 and 2345
        ("the list 1,2,3", "3"),
        ("costs $1,000,000.", "1000000"),
        ("no digits", None),
    ],
)
def test_extract_last_number(text, expected):
    assert extract_last_number(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Thus \\boxed{42}.", "42"),
        ("\\boxed{1,234}", "1234"),
        ("\\boxed{ -3.50 }", "-3.5"),
        ("\\boxed{\\$5}", "5"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces kept
        ("\\boxed{x + 1}", "x + 1"),
        ("\\boxed{1} or \\boxed{2}", "2"),
        ("\\boxed{", None),
        ("\\boxed{}", None),
        ("\\boxed{3", None),
        ("boxed 3", None),
    ],
)
def test_extract_boxed_answer(text, expected):
    assert extract_boxed_answer(text) == expected


def test_extract_answer_order_and_fallback():
    text = "\\boxed{7} ... #### 8"
    assert extract_answer(text) == "8"  # gsm8k first by default
    assert extract_answer(text, formats=("boxed", "gsm8k")) == "7"
    assert extract_answer("I get 9.") is None
    assert extract_answer("I get 9.", last_number_fallback=True) == "9"
    assert extract_answer("I get 9.", formats="last_number") == "9"
    with pytest.raises(ValueError, match="unknown answer format 'latex'"):
        extract_answer("x", formats=("latex",))


@settings(max_examples=60, deadline=None)
@given(st.integers(min_value=-(10**12), max_value=10**12), st.sampled_from(["", "$", "."]))
def test_gsm8k_integers_round_trip_through_commas(n, decoration):
    shown = f"-${-n:,}" if decoration == "$" and n < 0 else f"{decoration if decoration == '$' else ''}{n:,}"
    text = f"so the total is\n#### {shown}{'.' if decoration == '.' else ''}"
    assert extract_gsm8k_answer(text) == str(n)
    assert extract_last_number(text) == str(n)


@settings(max_examples=60, deadline=None)
@given(st.decimals(min_value=-(10**6), max_value=10**6, places=3, allow_nan=False, allow_infinity=False))
def test_decimals_parse_exactly(d):
    assert parse_number(f"{d:f}") == d
    assert Decimal(extract_gsm8k_answer(f"#### {d:,f}")) == d


# ---- exact_match --------------------------------------------------------------------------------------


def test_exact_match_by_hand():
    r = exact_match()
    completions = [
        "48 / 2 = 24, 48 + 24 = 72\n#### 72",  # 1: right
        "#### 72.00",  # 1: numeric equality
        "The answer is \\boxed{72}",  # 1: boxed
        "#### 27",  # 0: wrong
        "It is 72",  # 0: no extractable answer (no fallback)
        "",  # 0
    ]
    reference = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips.\n#### 72"
    assert r(["q"] * 6, completions, answer=[reference] * 6) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    lenient = exact_match(last_number_fallback=True, correct=2.0, incorrect=-1.0)
    assert lenient(["q"] * 3, ["It is 72", "It is 72.5", "none"], answer=["72", "72", "72"]) == [2.0, -1.0, -1.0]


def test_exact_match_reference_forms_and_columns():
    r = exact_match(answer_column="gold")
    out = r(["q"] * 5, ["#### 1,000", "#### 0.5", "#### x+1", "#### x  +  1", "#### 3"],
            gold=["1000", ".50", "x + 1", "\\boxed{x + 1}", 3])
    # 1000 = 1000; 0.5 = .50; "x+1" vs "x + 1" are different strings; boxed reference; int reference
    assert out == [1.0, 1.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="exact_match needs the column 'gold'"):
        r(["q"], ["#### 1"], answer=["1"])


# ---- regex_format, length_reward, contains ----------------------------------------------------------


def test_regex_format_fullmatch_vs_search():
    pattern = r"<think>.*?</think>\s*<answer>.*?</answer>"
    strict = regex_format(pattern)
    loose = regex_format(pattern, reward=0.5, otherwise=-0.5, match="search")
    completions = [
        "<think>a\nb</think>\n<answer>4</answer>",  # multi-line: DOTALL by default
        "<think>a</think><answer>4</answer> trailing",  # fullmatch fails on the trailing text
        "4",
    ]
    assert strict(["q"] * 3, completions) == [1.0, 0.0, 0.0]
    assert loose(["q"] * 3, completions) == [0.5, 0.5, -0.5]
    assert regex_format("a.b", flags=0)(["q"], ["a\nb"]) == [0.0]
    with pytest.raises(ValueError, match=r"pattern '\(' does not compile"):
        regex_format("(")
    with pytest.raises(ValueError, match="match must be 'fullmatch' or 'search'"):
        regex_format("a", match="prefix")


def test_length_reward_by_hand():
    r = length_reward(target=8)  # scale defaults to the target: -|L - 8| / 8
    assert r(["q"] * 4, ["x" * 8, "x" * 4, "", "x" * 20]) == [0.0, -0.5, -1.0, -1.5]
    words = length_reward(target=3, scale=2.0, unit="words")  # -|W - 3| / 2
    assert words(["q"] * 3, ["a b c", "a  b\nc d e", "one"]) == [0.0, -1.0, -1.0]
    assert length_reward(0)(["q"], ["abc"]) == [-3.0]  # scale max(0, 1) = 1
    for bad, msg in [({"target": -1}, "target must be >= 0"), ({"target": 3, "scale": 0}, "scale must be > 0"),
                     ({"target": 3, "unit": "tokens"}, "unit must be 'chars' or 'words'")]:
        with pytest.raises(ValueError, match=msg):
            length_reward(**bad)


def test_contains_by_hand():
    assert contains("####")(["q"] * 2, ["so #### 3", "3"]) == [1.0, 0.0]
    any_of = contains(["</answer>", "####"])
    all_of = contains(["</answer>", "####"], require="all")
    texts = ["<answer>1</answer>", "#### 1", "<answer>#### 1</answer>", "1"]
    assert any_of(["q"] * 4, texts) == [1.0, 1.0, 1.0, 0.0]
    assert all_of(["q"] * 4, texts) == [0.0, 0.0, 1.0, 0.0]
    assert contains("yes", case_sensitive=False)(["q"], ["YES!"]) == [1.0]
    assert contains("yes")(["q"], ["YES!"]) == [0.0]
    with pytest.raises(ValueError, match="non-empty marker"):
        contains("")
    with pytest.raises(ValueError, match="non-empty marker"):
        contains([])


# ---- weighted_sum ----------------------------------------------------------------------------------


def test_weighted_sum_by_hand():
    r = weighted_sum([
        (exact_match(), 1.0),
        (regex_format(r".*####.*"), 0.25),
        ("alignkit.rewards.rules:gsm8k_exact_match", 0.5),  # import paths are resolved
    ])
    out = r(["q"] * 3, ["#### 4", "#### 5", "4"], answer=["4"] * 3)
    # 1*1 + 0.25*1 + 0.5*1 = 1.75;  1*0 + 0.25*1 + 0 = 0.25;  0
    assert out == [1.75, 0.25, 0.0]
    parts = r.breakdown(["q"], ["#### 4"], answer=["4"])
    assert [p.tolist() for p in parts] == [[1.0], [1.0], [1.0]]
    assert call_reward_fn(r, ["q"], ["#### 4"], answer=["4"]).tolist() == [1.75]


def test_weighted_sum_validates_each_component():
    def bad(prompts, completions, **columns):
        return [1.0, math.nan][: len(completions)]

    r = weighted_sum([(contains("a"), 1.0), (bad, 2.0)])
    expected = re.escape("weighted_sum component 1 (") + ".*bad.*prompt index 1 is NaN"
    with pytest.raises(InvalidRewardError, match=expected):
        r(["q", "q"], ["a", "b"])
    with pytest.raises(InvalidRewardError, match="component 1 .*expected 3, got 2"):
        r(["q"] * 3, ["a", "b", "c"])
    for components, msg in [
        ([], "at least one"),
        ([(bad, math.inf)], "weights are finite numbers"),
        ([(bad, True)], "weights are finite numbers"),
        ([bad], "must be a \\(reward_fn, weight\\) pair"),
        ([("no.such.module_x:f", 1.0)], "no module named 'no'"),
    ]:
        with pytest.raises(ValueError, match=msg):
            weighted_sum(components)
