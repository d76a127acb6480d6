"""alignkit.rewards.base: validation of reward values, call_reward_fn, resolve_reward_fn, and the doctests."""

import doctest
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import alignkit.rewards.base as base
import alignkit.rewards.http_judge as http_judge
import alignkit.rewards.rules as rules
from alignkit.rewards import (
    InvalidRewardError,
    RewardFn,
    call_reward_fn,
    gsm8k_exact_match,
    resolve_reward_fn,
    validate_rewards,
)


@pytest.mark.parametrize("module", [base, rules, http_judge], ids=lambda m: m.__name__)
def test_doctests(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{module.__name__} has no doctests"
    assert result.failed == 0


# ---- validate_rewards: accepted inputs ------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [1, -0.5, 2.0],
        (1, -0.5, 2.0),
        np.array([1.0, -0.5, 2.0]),
        np.array([1, -0.5, 2], dtype=np.float32),
        torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64),
        [np.int64(1), np.float32(-0.5), torch.tensor(2.0)],
        (v for v in [1, -0.5, 2.0]),
    ],
    ids=["list", "tuple", "ndarray", "ndarray32", "tensor", "scalars", "generator"],
)
def test_validate_accepts_real_numbers(values):
    out = validate_rewards(values, 3, "r")
    assert out.dtype == torch.float32 and out.shape == (3,)
    assert out.tolist() == [1.0, -0.5, 2.0]


def test_validate_accepts_an_empty_batch():
    assert validate_rewards([], 0).shape == (0,)


# ---- validate_rewards: errors name the prompt index -----------------------------------------------


@pytest.mark.parametrize(
    ("values", "index", "fragment"),
    [
        ([1.0, 2.0, float("nan")], 2, "is NaN"),
        ([float("inf"), 2.0, 3.0], 0, "is +inf"),
        ([1.0, float("-inf"), 3.0], 1, "is -inf"),
        ([1.0, None, 3.0], 1, "not a number (got NoneType None)"),
        ([1.0, 2.0, "3.0"], 2, "not a number (got str '3.0')"),
        ([True, 2.0, 3.0], 0, "is a bool"),
        ([1.0, np.bool_(False), 3.0], 1, "not a number"),
        ([1.0, 2.0, 1 + 2j], 2, "not a number"),
        ([1.0, torch.ones(2), 3.0], 1, "not a scalar"),
        (np.array([1.0, np.nan, 3.0]), 1, "is NaN"),
        (torch.tensor([1.0, 2.0, float("nan")]), 2, "is NaN"),
    ],
)
def test_validate_rejects_bad_values_naming_the_prompt_index(values, index, fragment):
    with pytest.raises(InvalidRewardError, match=f"my_rm: reward at prompt index {index} ") as info:
        validate_rewards(values, 3, "my_rm")
    assert fragment in str(info.value)
    assert info.value.index == index and info.value.source_name == "my_rm"


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ([1.0, 2.0], r"expected 3, got 2\): prompt index 2 got no value"),
        ([1.0], r"expected 3, got 1\): prompt indices 1..2 got no value"),
        ([1.0, 2.0, 3.0, 4.0], r"expected 3, got 4\): the values at index 3 match no prompt"),
        (torch.zeros(5), r"expected 3, got 5\): the values at indices 3..4 match no prompt"),
    ],
)
def test_validate_wrong_count_says_expected_and_got(values, fragment):
    with pytest.raises(InvalidRewardError, match="my_rm returned the wrong number of rewards " f"\\({fragment}"):
        validate_rewards(values, 3, "my_rm")


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ("abc", "returned a str"),
        ({"a": 1.0}, "returned a dict"),
        (3.0, "returned float"),
        (torch.ones(3, 1), "shape (3, 1)"),
        (torch.tensor([True, False, True]), "torch.bool tensor"),
    ],
)
def test_validate_rejects_non_lists(values, fragment):
    with pytest.raises(InvalidRewardError) as info:
        validate_rewards(values, 3, "my_rm")
    assert fragment in str(info.value)


def test_skip_policy_returns_mask_and_count():
    s = validate_rewards([1.0, float("nan"), None, 4.0, True], 5, "r", on_invalid="skip")
    assert s.valid.tolist() == [True, False, False, True, False]
    assert s.num_invalid == 3
    assert s.rewards.tolist() == [1.0, 0.0, 0.0, 4.0, 0.0]  # placeholders are finite
    assert [i for i, _ in s.problems] == [1, 2, 4]
    assert s.summary("r").startswith("r: 3 of 5 rewards invalid and skipped (prompt index 1: is NaN")
    with pytest.raises(InvalidRewardError, match="expected 5, got 4"):  # a wrong count is never skippable
        validate_rewards([1.0] * 4, 5, "r", on_invalid="skip")
    with pytest.raises(ValueError, match="on_invalid must be 'raise' or 'skip'"):
        validate_rewards([1.0], 1, on_invalid="drop")


# ---- call_reward_fn ---------------------------------------------------------------------------------


def nan_for_empty(prompts, completions, **columns):
    return [float("nan") if not c else float(len(c)) for c in completions]


def test_call_reward_fn_validates_and_quotes_the_completion():
    assert isinstance(nan_for_empty, RewardFn)
    out = call_reward_fn(nan_for_empty, ["p"] * 2, ["ab", "abcd"])
    assert out.tolist() == [2.0, 4.0]
    with pytest.raises(InvalidRewardError, match=r"test_rewards_base.nan_for_empty: reward at prompt index 1 is NaN "
                                                 r"\(completion: ''\)"):
        call_reward_fn(nan_for_empty, ["p"] * 3, ["ab", "", "x"])
    with pytest.warns(RuntimeWarning, match="1 of 3 rewards invalid and skipped"):
        s = call_reward_fn(nan_for_empty, ["p"] * 3, ["ab", "", "x"], on_invalid="skip")
    assert s.valid.tolist() == [True, False, True]


def test_call_reward_fn_checks_batch_shapes():
    with pytest.raises(ValueError, match="2 prompts but 1 completions"):
        call_reward_fn(nan_for_empty, ["a", "b"], ["x"])
    with pytest.raises(ValueError, match="column 'answer' has 1 entries but there are N=2 samples"):
        call_reward_fn(gsm8k_exact_match, ["a", "b"], ["x", "y"], answer=["1"])
    with pytest.raises(ValueError, match="column 'answer' must be a sequence"):
        call_reward_fn(gsm8k_exact_match, ["a"], ["x"], answer="1")
    with pytest.raises(ValueError, match="exact_match needs the column 'answer'; the batch has columns \\['gold'\\]"):
        call_reward_fn(gsm8k_exact_match, ["a"], ["x"], gold=["1"])


# ---- resolve_reward_fn ------------------------------------------------------------------------------


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    """A throwaway package on sys.path: a good module and one whose import fails inside."""
    pkg = tmp_path / "ak_test_reward_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "good.py").write_text(textwrap.dedent("""
        def length(prompts, completions, **columns):
            return [float(len(c)) for c in completions]

        class Holder:
            @staticmethod
            def one(prompts, completions, **columns):
                return [1.0] * len(completions)

        NOT_CALLABLE = 3
    """))
    (pkg / "broken.py").write_text("import ak_definitely_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "ak_test_reward_pkg"
    for name in [m for m in sys.modules if m.startswith("ak_test_reward_pkg")]:
        monkeypatch.delitem(sys.modules, name, raising=False)


def test_resolve_by_import_path(reward_module):
    for spec in (f"{reward_module}.good:length", f"{reward_module}.good.length"):
        fn = resolve_reward_fn(spec)
        assert fn(["p"], ["abc"]) == [3.0]
    assert resolve_reward_fn(f"{reward_module}.good:Holder.one")(["p"], ["x"]) == [1.0]
    assert resolve_reward_fn(f"{reward_module}.good.Holder.one")(["p"], ["x"]) == [1.0]
    assert resolve_reward_fn("alignkit.rewards.rules:gsm8k_exact_match") is gsm8k_exact_match
    assert resolve_reward_fn(nan_for_empty) is nan_for_empty  # callables pass through


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("", "is not an import path"),
        ("os.system('rm -rf /')", "is not an import path"),
        ("__import__('os').system", "is not an import path"),
        ("alignkit.rewards.rules:", "is not an import path"),
        ("alignkit rewards", "is not an import path"),
        ("alignkit.rewards:__builtins__", "is not an import path"),
        ("justamodule", "names no attribute"),
        ("ak_no_such_package_xyz.mod:fn", "no module named 'ak_no_such_package_xyz'"),
        ("{pkg}.missing:fn", "no module named '{pkg}.missing'"),
        ("{pkg}.good:nope", "'{pkg}.good' has no attribute 'nope'"),
        ("{pkg}.good.nope", "'{pkg}.good' has no attribute 'nope'"),
        ("{pkg}.good:Holder.nope", "'{pkg}.good.Holder' has no attribute 'nope'"),
        ("{pkg}.good:Holder", "is a class"),
        ("{pkg}.good:NOT_CALLABLE", "names an object of type int, which is not callable"),
    ],
)
def test_resolve_rejects_bad_paths_clearly(reward_module, spec, fragment):
    spec, fragment = spec.format(pkg=reward_module), fragment.format(pkg=reward_module)
    with pytest.raises(ValueError) as info:
        resolve_reward_fn(spec)
    assert fragment in str(info.value) and repr(spec) in str(info.value)


def test_resolve_surfaces_a_missing_dependency_inside_a_real_module(reward_module):
    with pytest.raises(ModuleNotFoundError, match="ak_definitely_missing_dependency"):
        resolve_reward_fn(f"{reward_module}.broken:fn")


def test_resolve_rejects_non_strings_and_classes():
    with pytest.raises(TypeError, match="is a class"):
        resolve_reward_fn(rules.ExactMatch)
    with pytest.raises(TypeError, match="callable or an import path"):
        resolve_reward_fn(42)


def test_import_does_not_load_transformers():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('transformers', 'tokenizers', 'accelerate'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import alignkit.rewards as r\n"
        "assert 'transformers' not in sys.modules\n"
        "print(r.gsm8k_exact_match(['q'], ['#### 3'], answer=['3']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1.0]"


def test_the_package_exports_exactly_its_submodules_public_names():
    import alignkit.rewards as rewards
    from alignkit.rewards import base, http_judge, judge, local_judge, model_scorer, rules

    modules = (base, rules, model_scorer, judge, local_judge, http_judge)
    assert sorted(rewards.__all__) == sorted(n for m in modules for n in m.__all__)
    assert all(getattr(rewards, n) is getattr(m, n) for m in modules for n in m.__all__)
