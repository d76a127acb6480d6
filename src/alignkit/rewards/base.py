"""The RewardFn protocol, validation of the values a reward function returns, and resolution by import path.

A reward function maps a batch of N (prompt, completion) pairs, plus any per-sample dataset columns, to N
scalars:

    RewardFn = (prompts: list[str], completions: list[str], **columns) -> list[float]      # len N

Reward-model scorers, rule-based verifiers (:mod:`alignkit.rewards.rules`) and AI judges
(:mod:`alignkit.rewards.judge`) all fit this one type, so the trainers depend on nothing else. Columns
are whatever the dataset carries next to the prompt (``answer=[...]`` for GSM8K), each a sequence with
one entry per sample.

Configs name a reward function by import path (``"package.module:function"`` or
``"package.module.function"``); :func:`resolve_reward_fn` imports it with :mod:`importlib`. No string is
ever evaluated as code.

Invalid values (wrong count, NaN, +-inf, non-numbers, bools) are errors by default (``on_invalid="raise"``).
With the opt-in ``on_invalid="skip"`` the caller gets a mask of the valid samples and a count, drops the
others and logs the count; a wrong *number* of values is always an error (no value can be attributed
to a sample then).
"""

from __future__ import annotations

import importlib
import inspect
import math
import numbers
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, NamedTuple, Protocol, overload, runtime_checkable

import torch

__all__ = [
    "RewardFn",
    "OnInvalid",
    "InvalidRewardError",
    "ScreenedRewards",
    "validate_rewards",
    "call_reward_fn",
    "resolve_reward_fn",
    "reward_fn_name",
]

OnInvalid = Literal["raise", "skip"]


@runtime_checkable
class RewardFn(Protocol):
    """``(prompts, completions, **columns) -> list[float]``, one finite float per sample.

    ``prompts[i]`` and ``completions[i]`` form sample i (several samples may share a prompt text); each
    column is a sequence with one entry per sample.
    """

    def __call__(self, prompts: list[str], completions: list[str], **columns: Any) -> list[float]: ...


class InvalidRewardError(ValueError):
    """A reward function returned an unusable value; ``index`` is the offending prompt index (None when
    the number of values is wrong and no single sample is to blame)."""

    def __init__(self, message: str, source_name: str, index: int | None = None):
        super().__init__(message)
        self.source_name = source_name
        self.index = index


class ScreenedRewards(NamedTuple):
    """What :func:`validate_rewards` returns with ``on_invalid="skip"``.

    Attributes:
        rewards: ``[N]`` float32; invalid entries hold 0.0 (a placeholder: drop them using ``valid``).
        valid: ``[N]`` bool, True where the value was a finite number.
        num_invalid: ``N - valid.sum()``.
        problems: ``(prompt index, what was wrong)`` for each invalid entry, in index order.
    """

    rewards: torch.Tensor
    valid: torch.Tensor
    num_invalid: int
    problems: list[tuple[int, str]]

    def summary(self, source_name: str = "reward function") -> str:
        """A one-line, counted description for a log or a warning."""
        n = int(self.valid.numel())
        shown = "; ".join(f"prompt index {i}: {what}" for i, what in self.problems[:3])
        more = f"; ... ({len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
        return f"{source_name}: {self.num_invalid} of {n} rewards invalid and skipped ({shown}{more})"


def reward_fn_name(fn: Callable) -> str:
    """A readable name for error messages: ``module.qualname`` for functions, the repr for instances."""
    if inspect.isfunction(fn) or inspect.ismethod(fn) or inspect.isbuiltin(fn):
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    text = repr(fn)
    return text if len(text) <= 120 else text[:117] + "..."


def _problem(value: Any) -> str | None:
    """Why ``value`` is not a usable reward, or None when it is a finite real number (bools excluded)."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dim() > 1:
            return f"is a tensor of shape {tuple(value.shape)}, not a scalar"
        if value.dtype == torch.bool or value.dtype.is_complex:
            return f"is a {value.dtype} tensor, not a real number"
        value = value.item()
    # numpy registers its floats and ints as numbers.Real, but not numpy.bool_ (rejected as a non-number).
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        shown = repr(value)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        kind = "a bool; return 1.0/0.0 explicitly" if isinstance(value, bool) else "not a number"
        return f"is {kind} (got {type(value).__name__} {shown})"
    value = float(value)
    if math.isnan(value):
        return "is NaN"
    if math.isinf(value):
        return f"is {'+' if value > 0 else '-'}inf"
    return None


@overload
def validate_rewards(
    values: Any, n_expected: int, source_name: str = ..., on_invalid: Literal["raise"] = ...
) -> torch.Tensor: ...
@overload
def validate_rewards(
    values: Any, n_expected: int, source_name: str = ..., on_invalid: Literal["skip"] = ...
) -> ScreenedRewards: ...
def validate_rewards(values, n_expected, source_name="reward function", on_invalid="raise"):
    """Check what a reward function returned and turn it into a float32 tensor ``[N]``.

    Accepted: a sequence (list, tuple, 1-D numpy array) of real numbers (Python or numpy ints and floats,
    0-d tensors), or a 1-D integer/floating tensor. Rejected, naming the offending prompt index: NaN,
    +-inf, bools, None, strings and anything else that is not a real number. A wrong number of values is
    reported as expected vs got.

    Args:
        values: what the reward function returned.
        n_expected: N, the number of (prompt, completion) samples it was given.
        source_name: names the reward function in the error message.
        on_invalid: ``"raise"`` (default): raise :class:`InvalidRewardError` at the first bad value.
            ``"skip"``: return a :class:`ScreenedRewards` (rewards, valid mask, count, problems) instead;
            a wrong number of values still raises.
    Returns:
        ``[N]`` float32 tensor (``on_invalid="raise"``) or a :class:`ScreenedRewards`.

    >>> validate_rewards([1, 0.5, -2], 3)
    tensor([ 1.0000,  0.5000, -2.0000])
    >>> validate_rewards([1.0, float("nan")], 2, "my_reward")
    Traceback (most recent call last):
        ...
    alignkit.rewards.base.InvalidRewardError: my_reward: reward at prompt index 1 is NaN
    >>> screened = validate_rewards([1.0, None, 3.0], 3, on_invalid="skip")
    >>> screened.valid.tolist(), screened.num_invalid
    ([True, False, True], 1)
    """
    if on_invalid not in ("raise", "skip"):
        raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
    if isinstance(values, torch.Tensor):
        if values.dim() != 1:
            raise InvalidRewardError(
                f"{source_name} returned a tensor of shape {tuple(values.shape)}; expected a 1-D tensor of "
                f"{n_expected} values, one per prompt index",
                source_name,
            )
        if values.dtype == torch.bool or values.dtype.is_complex:
            raise InvalidRewardError(
                f"{source_name} returned a {values.dtype} tensor; rewards must be real numbers", source_name
            )
        values = values.detach().cpu().double().tolist()
    elif isinstance(values, (str, bytes, Mapping)):
        raise InvalidRewardError(
            f"{source_name} returned a {type(values).__name__}, not a list of {n_expected} floats", source_name
        )
    elif not isinstance(values, (Sequence, *_array_types())):
        try:
            values = list(values)
        except TypeError:
            raise InvalidRewardError(
                f"{source_name} returned {type(values).__name__}, not a list of {n_expected} floats", source_name
            ) from None
    if len(values) != n_expected:
        got = len(values)
        lo, hi = (got, n_expected - 1) if got < n_expected else (n_expected, got - 1)
        span = f"index {lo}" if lo == hi else f"indices {lo}..{hi}"
        where = f"prompt {span} got no value" if got < n_expected else f"the values at {span} match no prompt"
        raise InvalidRewardError(
            f"{source_name} returned the wrong number of rewards (expected {n_expected}, got {got}): {where}",
            source_name,
        )
    out = torch.zeros(n_expected, dtype=torch.float32)
    valid = torch.ones(n_expected, dtype=torch.bool)
    problems: list[tuple[int, str]] = []
    for i, v in enumerate(values):
        why = _problem(v)
        if why is None:
            out[i] = float(v.item() if isinstance(v, torch.Tensor) else v)
            continue
        if on_invalid == "raise":
            raise InvalidRewardError(f"{source_name}: reward at prompt index {i} {why}", source_name, index=i)
        valid[i] = False
        problems.append((i, why))
    if on_invalid == "raise":
        return out
    return ScreenedRewards(out, valid, len(problems), problems)


def _array_types() -> tuple[type, ...]:
    """numpy.ndarray if numpy is already loaded (it is not a Sequence); never imports it."""
    import sys

    np = sys.modules.get("numpy")
    return (np.ndarray,) if np is not None else ()


def _check_batch(prompts: Sequence[str], completions: Sequence[str], columns: dict[str, Any]) -> int:
    n = len(prompts)
    if len(completions) != n:
        raise ValueError(f"got {n} prompts but {len(completions)} completions; they must pair up one to one")
    for name, col in columns.items():
        if isinstance(col, (str, bytes)) or not hasattr(col, "__len__"):
            raise ValueError(
                f"column {name!r} must be a sequence with one entry per sample (N={n}), got {type(col).__name__}"
            )
        if len(col) != n:
            raise ValueError(f"column {name!r} has {len(col)} entries but there are N={n} samples")
    return n


def _snippet(text: str, width: int = 60) -> str:
    text = str(text)
    return repr(text if len(text) <= width else text[: width - 3] + "...")


@overload
def call_reward_fn(
    fn: RewardFn, prompts: Sequence[str], completions: Sequence[str], *,
    on_invalid: Literal["raise"] = ..., source_name: str | None = ..., **columns: Any,
) -> torch.Tensor: ...
@overload
def call_reward_fn(
    fn: RewardFn, prompts: Sequence[str], completions: Sequence[str], *,
    on_invalid: Literal["skip"] = ..., source_name: str | None = ..., **columns: Any,
) -> ScreenedRewards: ...
def call_reward_fn(fn, prompts, completions, *, on_invalid="raise", source_name=None, **columns):
    """Call ``fn(prompts, completions, **columns)`` and validate the result (see :func:`validate_rewards`).

    Checks first that prompts, completions and every column have the same length N. Errors about a bad
    value quote the offending completion (truncated). With ``on_invalid="skip"`` a counted
    ``RuntimeWarning`` is emitted when some values are invalid, and a :class:`ScreenedRewards` returned.

    Returns:
        ``[N]`` float32 tensor (``on_invalid="raise"``) or a :class:`ScreenedRewards`.

    >>> call_reward_fn(lambda p, c: [float(len(x)) for x in c], ["q", "q"], ["ab", "abc"])
    tensor([2., 3.])
    """
    n = _check_batch(prompts, completions, columns)
    name = source_name or reward_fn_name(fn)
    values = fn(list(prompts), list(completions), **columns)
    try:
        result = validate_rewards(values, n, name, on_invalid=on_invalid)
    except InvalidRewardError as e:
        if e.index is None:
            raise
        raise InvalidRewardError(f"{e} (completion: {_snippet(completions[e.index])})", name, e.index) from None
    if on_invalid == "skip" and result.num_invalid:
        warnings.warn(result.summary(name), RuntimeWarning, stacklevel=2)
    return result


def resolve_reward_fn(spec: str | Callable) -> RewardFn:
    """A reward function given itself or by import path: ``"pkg.module:attr"`` or ``"pkg.module.attr"``.

    The path is imported with :func:`importlib.import_module` (which runs the module's top-level code, as
    any import does) and the attribute looked up with ``getattr``; nothing is ``eval``-ed. After the colon
    a dotted attribute path is allowed (``"pkg.module:Class.method"``). Without a colon the longest
    importable module prefix is used. The result must be a callable that is not a class: a factory such
    as :func:`alignkit.rewards.rules.exact_match` must be called first, so name a module-level instance
    (e.g. ``alignkit.rewards.rules:gsm8k_exact_match``) instead.

    >>> resolve_reward_fn("alignkit.rewards.rules:gsm8k_exact_match")(["q"], ["#### 42"], answer=["42"])
    [1.0]
    >>> resolve_reward_fn("alignkit.rewards.nope:f")
    Traceback (most recent call last):
        ...
    ValueError: reward function 'alignkit.rewards.nope:f': no module named 'alignkit.rewards.nope'
    """
    if callable(spec) and not isinstance(spec, str):
        if inspect.isclass(spec):
            raise TypeError(f"reward function {spec!r} is a class; pass an instance (or a function)")
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"a reward function is a callable or an import path string, got {type(spec).__name__}")
    obj = resolve_import_path(spec, "reward function")
    if inspect.isclass(obj):
        raise ValueError(f"reward function {spec!r} is a class; name a function or a module-level instance")
    if not callable(obj):
        kind = type(obj).__name__
        raise ValueError(f"reward function {spec!r} names an object of type {kind}, which is not callable")
    return obj


def resolve_import_path(spec: str, what: str = "object") -> Any:
    """The object named by ``"pkg.module:attr"`` (or ``"pkg.module.attr"``); errors say ``what`` it was for.

    Only :func:`importlib.import_module` and ``getattr`` are used: nothing is ``eval``-ed.
    """
    text = spec.strip()
    module_path, sep, attr_path = text.partition(":")
    parts = module_path.split(".") + (attr_path.split(".") if sep else [])
    if not text or not all(p.isidentifier() and not p.startswith("__") for p in parts) or (sep and not attr_path):
        raise ValueError(
            f"{what} {spec!r} is not an import path; write 'package.module:function' or "
            "'package.module.function' (Python identifiers separated by dots, no dunder names)"
        )
    if sep:
        module = _import(module_path, spec, required=True, what=what)
        attrs = attr_path.split(".")
    else:
        names = module_path.split(".")
        if len(names) < 2:
            raise ValueError(f"{what} {spec!r} names no attribute; write 'package.module:function'")
        module, attrs = None, []
        for cut in range(len(names) - 1, 0, -1):  # longest importable prefix, leaving >= 1 attribute
            module = _import(".".join(names[:cut]), spec, required=cut == 1, what=what)
            if module is not None:
                attrs = names[cut:]
                break
    obj: Any = module
    for k, attr in enumerate(attrs):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            owner = ".".join([module.__name__, *attrs[:k]])
            raise ValueError(f"{what} {spec!r}: {owner!r} has no attribute {attr!r}") from None
    return obj


def _import(module_path: str, spec: str, required: bool, what: str):
    """Import ``module_path``; None when it does not exist and ``required`` is False."""
    try:
        return importlib.import_module(module_path)
    except ModuleNotFoundError as e:
        # Only "this module (or a parent) does not exist" is a bad path; a missing dependency *inside* an
        # existing module is a real error and propagates with its own message.
        missing = e.name or ""
        if not (module_path == missing or module_path.startswith(missing + ".")):
            raise
        if required:
            raise ValueError(f"{what} {spec!r}: no module named {missing!r}") from None
        return None
