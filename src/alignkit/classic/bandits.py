"""The k-armed bandit testbed of Sutton & Barto (2nd ed., ch. 2), vectorised over independent runs.

Lecture seed 004 ("Multi-Armed Bandits"): an MDP with a single state, where the goal is to maximise reward
over repeated choices, ``q*(a) = E[R_t | A_t = a]``, and the central problem is exploration vs.
exploitation. The testbed (S&B sec. 2.3): each run draws a fresh problem ``q*(a) ~ N(q_mean, 1)`` for
``a = 1..k``; pulling arm ``a`` pays ``R ~ N(q*(a), 1)``. Curves are averages over runs, so all ``runs``
problems are stepped together as numpy arrays of shape ``(runs, k)`` and one Python loop runs over time
(2000 runs x 1000 steps take well under a second per agent).

Agents (each a small frozen dataclass; :func:`parse_agent` reads the short names the CLI uses):

- :class:`EpsilonGreedy` -- action values ``Q`` by sample averages (eq. 2.3, step ``1/N(a)``) or a constant
  step size ``alpha`` (eq. 2.5); greedy with probability ``1 - epsilon``, uniform otherwise.
  ``epsilon = 0`` is the greedy agent; ``initial = 5`` with ``alpha = 0.1`` is the optimistic agent of
  Fig. 2.3 (sec. 2.6).
- :class:`UCB` -- ``A_t = argmax_a [Q_t(a) + c sqrt(ln t / N_t(a))]``, untried arms first (eq. 2.10).
- :class:`GradientBandit` -- softmax preferences ``H``; ``H(A_t) += alpha (R_t - Rbar_t)(1 - pi(A_t))``,
  ``H(a) -= alpha (R_t - Rbar_t) pi(a)`` for the others (eq. 2.12); ``Rbar_t`` is the average of the rewards
  before step t (``Rbar_1 = R_1``), or 0 without a baseline.

Greedy choices break ties uniformly at random, as in the book. Every agent gets its own random stream
derived from ``(seed, name)``, and all agents face the same ``q*`` problems, so a name's curve does not
change with the other agents in the list.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .plotting import save_figure

#: The forms :func:`parse_agent` accepts (numbers are any float literal).
AGENT_FORMS = ("greedy", "eps<EPSILON>", "optimistic<Q0>", "ucb<C>", "gradient<ALPHA>", "gradient<ALPHA>-nobaseline",
               "suffixes for greedy / eps / optimistic: -alpha<STEP> (constant step size), -alphaavg (sample "
               "average), -q<Q0> (initial value)")


def _g(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class EpsilonGreedy:
    """Epsilon-greedy on action-value estimates.

    Fields:
        epsilon: probability of a uniformly random arm, in ``[0, 1]``; 0 = greedy.
        initial: ``Q_1(a)`` for every arm (0 = realistic; 5 = optimistic, Fig. 2.3).
        alpha: constant step size in ``(0, 1]``, or None for the sample average ``1 / N(a)``.
    """

    epsilon: float = 0.0
    initial: float = 0.0
    alpha: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if self.alpha is not None and not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha (step size) must be in (0, 1], got {self.alpha}")

    @property
    def name(self) -> str:
        """Short name, the one :func:`parse_agent` reads back."""
        if self.initial > 0.0 and self.epsilon == 0.0:
            head = f"optimistic{_g(self.initial)}"
            return head if self.alpha == 0.1 else f"{head}-alpha{_g(self.alpha) if self.alpha else 'avg'}"
        head = "greedy" if self.epsilon == 0.0 else f"eps{_g(self.epsilon)}"
        if self.initial != 0.0:
            head += f"-q{_g(self.initial)}"
        return head if self.alpha is None else f"{head}-alpha{_g(self.alpha)}"

    @property
    def label(self) -> str:
        """Legend text for plots."""
        parts = ["greedy" if self.epsilon == 0 else f"ε-greedy ε={_g(self.epsilon)}"]
        if self.initial:
            parts.append(f"Q1={_g(self.initial)}")
        parts.append("sample average" if self.alpha is None else f"α={_g(self.alpha)}")
        return ", ".join(parts)


@dataclass(frozen=True)
class UCB:
    """Upper-confidence-bound action selection with sample-average values; ``c >= 0`` scales the bonus."""

    c: float = 2.0

    def __post_init__(self) -> None:
        if self.c < 0:
            raise ValueError(f"UCB c must be >= 0, got {self.c}")

    @property
    def name(self) -> str:
        return f"ucb{_g(self.c)}"

    @property
    def label(self) -> str:
        return f"UCB c={_g(self.c)}"


@dataclass(frozen=True)
class GradientBandit:
    """Gradient bandit (softmax over preferences) with step size ``alpha > 0``, with or without a baseline."""

    alpha: float = 0.1
    baseline: bool = True

    def __post_init__(self) -> None:
        if self.alpha <= 0:
            raise ValueError(f"gradient bandit alpha must be > 0, got {self.alpha}")

    @property
    def name(self) -> str:
        return f"gradient{_g(self.alpha)}" + ("" if self.baseline else "-nobaseline")

    @property
    def label(self) -> str:
        return f"gradient α={_g(self.alpha)}, " + ("with baseline" if self.baseline else "without baseline")


Agent = EpsilonGreedy | UCB | GradientBandit
_NUMBER = r"([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)"


def parse_agent(spec: str) -> Agent:
    """Read a short agent name: ``greedy``, ``eps0.1``, ``optimistic5`` (Q1=5, alpha 0.1, greedy), ``ucb2``,
    ``gradient0.1``, ``gradient0.1-nobaseline``; ``greedy`` / ``eps..`` / ``optimistic..`` take ``-alpha0.1``
    for a constant step size (``-alphaavg``: sample average) and ``-q5`` for the initial value, e.g.
    ``eps0.1-alpha0.1`` is Fig. 2.3's realistic agent. ``parse_agent(agent.name)`` gives ``agent`` back.
    ValueError names the spec and the valid forms.
    """
    text = spec.strip().lower()
    try:
        head, *mods = re.split(r"-(?=[a-z])", text)  # a "-" before a digit is a sign or an exponent
        if head == "greedy":
            kind, number = "greedy", None
        else:
            m = re.fullmatch(r"(eps|optimistic|ucb|gradient)" + _NUMBER, head)
            if m is None:
                raise ValueError(f"unknown agent {spec!r}")
            kind, number = m.group(1), float(m.group(2))
        if kind == "ucb":
            if mods:
                raise ValueError(f"ucb takes no modifiers, got {spec!r}")
            return UCB(c=number)
        if kind == "gradient":
            if mods not in ([], ["nobaseline"]):
                raise ValueError(f"gradient takes only -nobaseline, got {spec!r}")
            return GradientBandit(alpha=number, baseline=not mods)
        epsilon = number if kind == "eps" else 0.0
        initial = number if kind == "optimistic" else 0.0
        alpha = 0.1 if kind == "optimistic" else None
        for mod in mods:
            if mod == "alphaavg":
                alpha = None
            elif (m := re.fullmatch(r"alpha" + _NUMBER, mod)) is not None:
                alpha = float(m.group(1))
            elif (m := re.fullmatch(r"q(-?)" + _NUMBER, mod)) is not None:
                initial = float(m.group(1) + m.group(2))
            else:
                raise ValueError(f"unknown modifier -{mod} in {spec!r}")
        return EpsilonGreedy(epsilon=epsilon, initial=initial, alpha=alpha)
    except ValueError as e:
        raise ValueError(f"agents: {e}; valid forms: {', '.join(AGENT_FORMS)}") from None


def parse_agents(specs: str | Sequence[str | Agent]) -> list[Agent]:
    """A comma-separated string (``"greedy,eps0.1,ucb2"``) or a list of names / agents -> agents, no duplicates."""
    items = [s for s in specs.split(",") if s.strip()] if isinstance(specs, str) else list(specs)
    agents = [parse_agent(a) if isinstance(a, str) else a for a in items]
    if not agents:
        raise ValueError(f"agents: give at least one; valid forms: {', '.join(AGENT_FORMS)}")
    names = [a.name for a in agents]
    if len(set(names)) != len(names):
        raise ValueError(f"agents: duplicate names in {names}")
    return agents


@dataclass
class BanditResult:
    """Learning curves of one agent, averaged over runs.

    Fields:
        name / label: the agent's short name and legend text.
        avg_reward: mean reward at each step, shape ``(steps,)``.
        pct_optimal: percentage (0..100) of runs choosing an optimal arm at each step, shape ``(steps,)``.
    """

    name: str
    label: str
    avg_reward: np.ndarray
    pct_optimal: np.ndarray

    def tail(self, fraction: float = 0.1) -> tuple[float, float]:
        """(mean reward, mean % optimal) over the last ``fraction`` of the steps (at least one step)."""
        n = max(1, int(round(len(self.avg_reward) * fraction)))
        return float(self.avg_reward[-n:].mean()), float(self.pct_optimal[-n:].mean())


def _argmax_random_ties(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row-wise argmax of ``x`` (shape ``(runs, k)``) with ties broken uniformly at random -> ``(runs,)``."""
    is_max = x == x.max(axis=1, keepdims=True)
    return np.argmax(np.where(is_max, rng.random(x.shape), -1.0), axis=1)


def run_agent(agent: Agent, q_star: np.ndarray, steps: int, rng: np.random.Generator) -> BanditResult:
    """Run ``agent`` on every problem of ``q_star`` (shape ``(runs, k)``) for ``steps`` steps at once."""
    runs, k = q_star.shape
    rows = np.arange(runs)
    optimal = q_star == q_star.max(axis=1, keepdims=True)  # (runs, k); ties count as optimal
    avg_reward = np.empty(steps)
    pct_optimal = np.empty(steps)

    if isinstance(agent, GradientBandit):
        H = np.zeros((runs, k))  # preferences H_t(a)
        reward_sum = np.zeros(runs)
        for t in range(1, steps + 1):
            pi = np.exp(H - H.max(axis=1, keepdims=True))
            pi /= pi.sum(axis=1, keepdims=True)  # softmax, eq. 2.11
            u = rng.random((runs, 1))
            a = np.minimum((np.cumsum(pi, axis=1) < u).sum(axis=1), k - 1)  # sample A_t ~ pi
            r = q_star[rows, a] + rng.standard_normal(runs)
            if agent.baseline:
                baseline = r if t == 1 else reward_sum / (t - 1)  # Rbar_t: mean of R_1..R_{t-1}; Rbar_1 = R_1
            else:
                baseline = 0.0
            reward_sum += r
            step = agent.alpha * (r - baseline)  # (runs,)
            H -= step[:, None] * pi  # H(a) -= alpha (R - Rbar) pi(a) for every a ...
            H[rows, a] += step  # ... and += alpha (R - Rbar) for A_t: together (1{a = A_t} - pi(a)), eq. 2.12
            avg_reward[t - 1] = r.mean()
            pct_optimal[t - 1] = 100.0 * optimal[rows, a].mean()
    else:
        initial = agent.initial if isinstance(agent, EpsilonGreedy) else 0.0
        Q = np.full((runs, k), float(initial))  # value estimates Q_t(a)
        N = np.zeros((runs, k))  # pull counts N_t(a)
        for t in range(1, steps + 1):
            if isinstance(agent, UCB):
                with np.errstate(divide="ignore", invalid="ignore"):  # log(1)/0 at t=1
                    bonus = agent.c * np.sqrt(np.log(t) / N)  # inf for untried arms: they go first
                a = _argmax_random_ties(np.where(N > 0, Q + bonus, np.inf), rng)
                alpha = None
            else:
                a = _argmax_random_ties(Q, rng)
                if agent.epsilon > 0:
                    explore = rng.random(runs) < agent.epsilon
                    a = np.where(explore, rng.integers(k, size=runs), a)
                alpha = agent.alpha
            r = q_star[rows, a] + rng.standard_normal(runs)
            N[rows, a] += 1
            step = 1.0 / N[rows, a] if alpha is None else alpha  # eq. 2.3 (sample average) or 2.5
            Q[rows, a] += step * (r - Q[rows, a])
            avg_reward[t - 1] = r.mean()
            pct_optimal[t - 1] = 100.0 * optimal[rows, a].mean()
    return BanditResult(agent.name, agent.label, avg_reward, pct_optimal)


def make_testbed(runs: int, k: int = 10, q_mean: float = 0.0, seed: int = 0) -> np.ndarray:
    """``runs`` independent k-armed problems, ``q*(a) ~ N(q_mean, 1)`` -> shape ``(runs, k)``."""
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    if k < 2:
        raise ValueError(f"k (number of arms) must be >= 2, got {k}")
    return np.random.default_rng([seed, 0]).normal(q_mean, 1.0, size=(runs, k))


def run_testbed(agents: str | Sequence[str | Agent], k: int = 10, runs: int = 2000, steps: int = 1000,
                seed: int = 0, q_mean: float = 0.0) -> dict[str, BanditResult]:
    """Run every agent on the same ``runs`` problems of the k-armed testbed.

    Args:
        agents: ``"greedy,eps0.1,ucb2"``, or a list of names and/or agent objects (see :func:`parse_agent`).
        k: arms; runs: independent problems averaged over; steps: pulls per run.
        seed: seeds the problems and (with each agent's name) its action choices and reward noise.
        q_mean: mean of ``q*`` (Fig. 2.5 uses +4).
    Returns:
        ``{agent.name: BanditResult}`` in the order given.
    """
    agent_list = parse_agents(agents)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    q_star = make_testbed(runs, k, q_mean, seed)
    results = {}
    for agent in agent_list:
        rng = np.random.default_rng([seed, 1, zlib.crc32(agent.name.encode())])
        results[agent.name] = run_agent(agent, q_star, steps, rng)
    return results


def plot_bandit_curves(results: dict[str, BanditResult] | Sequence[BanditResult], path: str | Path,
                       title: str = "") -> Path:
    """Write a PNG with two panels, like S&B Fig. 2.2: average reward and % optimal action against steps."""
    from matplotlib.figure import Figure  # no pyplot: the user's matplotlib backend is left alone

    items = list(results.values()) if isinstance(results, dict) else list(results)
    fig = Figure(figsize=(8, 7))
    top, bottom = fig.subplots(2, 1, sharex=True)
    for res in items:
        steps = np.arange(1, len(res.avg_reward) + 1)
        top.plot(steps, res.avg_reward, label=res.label, linewidth=1)
        bottom.plot(steps, res.pct_optimal, label=res.label, linewidth=1)
    top.set_ylabel("average reward")
    bottom.set_ylabel("% optimal action")
    bottom.set_ylim(0, 100)
    bottom.set_xlabel("steps")
    top.legend(fontsize=8)
    top.set_title(title or "k-armed testbed")
    return save_figure(fig, path)
