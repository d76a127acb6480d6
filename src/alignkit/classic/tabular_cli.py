"""Configs and runners behind ``alignkit classic gridworld`` and ``alignkit classic bandit``.

Each command has a dataclass whose fields carry ``metadata["help"]`` (and ``"choices"`` where the values are
a fixed set), from which the CLI builds its options, and a ``run_*`` function that prints a short report,
writes a PNG and ``summary.json`` into ``output_dir`` and returns the summary. Configs validate on
construction (and ``validate()`` can be called again): a bad value raises ValueError naming the setting and
what is allowed.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .bandits import AGENT_FORMS, parse_agents, plot_bandit_curves, run_testbed
from .gridworld import (
    ACTIONS,
    CELLS,
    EXITS,
    START,
    format_policy,
    format_values,
    make_gridworld,
    plot_values,
    state_index,
)
from .mdp import policy_iteration, value_iteration
from .options import option

METHODS = {"value_iteration": value_iteration, "policy_iteration": policy_iteration}


@dataclass
class GridworldConfig:
    """Solve the 4x3 grid world of seed 004 / AIMA exactly (see ``alignkit.classic.gridworld``)."""

    gamma: float = option(0.9, "discount factor in [0, 1] (seed 004 shows 1 and 0.9)")
    slip: float = option(0.0, "probability of moving perpendicular to the intended direction, split 50/50, "
                              "in [0, 1) (0 = deterministic; AIMA uses 0.2)")
    living_reward: float = option(0.0, "reward per move in a non-exit cell (AIMA uses -0.04); exits pay +1 / -1")
    solver: str = option("value_iteration", "dynamic-programming solver", choices=tuple(METHODS))
    output_dir: str = option("runs/classic-gridworld", "where values.png and summary.json go")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        if not 0.0 <= self.slip < 1.0:
            raise ValueError(f"slip must be in [0, 1), got {self.slip}")
        if self.solver not in METHODS:
            raise ValueError(f"solver must be one of {', '.join(METHODS)}, got {self.solver!r}")
        if self.gamma == 1.0 and self.living_reward > 0:
            raise ValueError(f"living_reward={self.living_reward} > 0 with gamma=1 has no finite optimal value "
                             "(bump into a wall forever and collect it); use gamma < 1 or living_reward <= 0")


def run_gridworld(config: GridworldConfig) -> dict:
    """Solve the grid world, print the value table and the policy arrows, write ``values.png`` and
    ``summary.json`` into ``config.output_dir``; return the summary.

    Summary keys: the config fields, ``iterations`` (sweeps for value iteration, evaluate-improve rounds for
    policy iteration), ``start_value`` (V at (1,1)), ``values`` and ``policy`` keyed by cell name ``"(c,r)"``
    (exit cells get the policy ``"exit"``), ``seconds``.
    """
    config.validate()
    mdp = make_gridworld(gamma=config.gamma, slip=config.slip, living_reward=config.living_reward)
    t0 = time.perf_counter()
    V, policy, iterations = METHODS[config.solver](mdp)
    seconds = time.perf_counter() - t0
    title = (f"grid world, {config.solver.replace('_', ' ')}: gamma={config.gamma:g}, slip={config.slip:g}, "
             f"living reward={config.living_reward:g}")
    print(title)
    print(format_values(V))
    print()
    print(format_policy(policy))
    print(f"{iterations} iterations, {seconds * 1000:.1f} ms")

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_values(V, policy, out / "values.png", title=title.replace(": ", ":\n", 1))  # two lines: never clipped
    exits = {state_index(cell) for cell in EXITS}
    summary = {
        **asdict(config),
        "iterations": int(iterations),
        "start_value": float(V[state_index(START)]),
        "values": {mdp.state_names[s]: float(V[s]) for s in range(len(CELLS))},
        "policy": {mdp.state_names[s]: "exit" if s in exits else ACTIONS[int(policy[s])] for s in range(len(CELLS))},
        "seconds": seconds,
        "plot": str(png),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


@dataclass
class BanditConfig:
    """Run agents on the k-armed testbed of Sutton & Barto ch. 2 (see ``alignkit.classic.bandits``)."""

    k: int = option(10, "number of arms (>= 2)")
    runs: int = option(2000, "independent bandit problems averaged over (>= 1)")
    steps: int = option(1000, "pulls per run (>= 1)")
    agents: str = option("greedy,eps0.1,eps0.01",
                         "comma-separated agents, e.g. greedy,eps0.1,eps0.01,ucb2,optimistic5,gradient0.1,"
                         "gradient0.1-nobaseline (forms: " + "; ".join(AGENT_FORMS) + ")")
    seed: int = option(0, "seed of the problems and of each agent's choices")
    q_mean: float = option(0.0, "mean of the true arm values q*(a) ~ N(q_mean, 1) (S&B Fig. 2.5 uses 4)")
    output_dir: str = option("runs/classic-bandit", "where bandit.png and summary.json go")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.k < 2:
            raise ValueError(f"k (arms) must be >= 2, got {self.k}")
        if self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        parse_agents(self.agents)  # ValueError naming "agents" and the valid forms


def run_bandit(config: BanditConfig) -> dict:
    """Run the testbed, print final reward / % optimal per agent, write ``bandit.png`` and ``summary.json``
    into ``config.output_dir``; return the summary.

    Summary keys: the config fields, ``seconds``, and ``results``: per agent name, ``label``,
    ``mean_reward`` (over all steps), and ``final_reward`` / ``final_pct_optimal`` (means over the last 10%
    of the steps).
    """
    config.validate()
    t0 = time.perf_counter()
    results = run_testbed(config.agents, k=config.k, runs=config.runs, steps=config.steps, seed=config.seed,
                          q_mean=config.q_mean)
    seconds = time.perf_counter() - t0
    print(f"{config.k}-armed testbed, {config.runs} runs x {config.steps} steps, q* ~ N({config.q_mean:g}, 1)")
    print(f"{'agent':<28}{'mean reward':>12}{'final reward':>14}{'final % optimal':>17}")
    summary_results = {}
    for name, res in results.items():
        final_reward, final_optimal = res.tail(0.1)
        summary_results[name] = {"label": res.label, "mean_reward": float(res.avg_reward.mean()),
                                 "final_reward": final_reward, "final_pct_optimal": final_optimal}
        print(f"{name:<28}{res.avg_reward.mean():>12.3f}{final_reward:>14.3f}{final_optimal:>17.1f}")
    print(f"(final = mean over the last 10% of the steps; {seconds:.1f} s)")

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_bandit_curves(results, out / "bandit.png",
                             title=f"{config.k}-armed testbed, {config.runs} runs, q* ~ N({config.q_mean:g}, 1)")
    summary = {**asdict(config), "seconds": seconds, "results": summary_results, "plot": str(png)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
