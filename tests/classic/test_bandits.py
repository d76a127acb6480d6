"""The k-armed testbed reproduces the orderings of Sutton & Barto (2nd ed.) ch. 2 figures.

The figure tests use 2000 runs x 1000 steps like the book and a fixed seed; the margins below are several
times the run-to-run noise of a 2000-run average over 100 steps (about 0.01 in reward, 1% in % optimal).
The numbers measured with seed 0 are quoted next to each assertion.
"""

import json
from dataclasses import fields

import numpy as np
import pytest

from alignkit.classic.bandits import (
    UCB,
    EpsilonGreedy,
    GradientBandit,
    parse_agent,
    parse_agents,
    plot_bandit_curves,
    run_testbed,
)
from alignkit.classic.tabular_cli import BanditConfig, run_bandit

LAST = slice(-100, None)  # the last 100 of 1000 steps


@pytest.fixture(scope="module")
def testbed():
    agents = ["greedy", "eps0.1", "ucb2", "optimistic5", EpsilonGreedy(epsilon=0.1, alpha=0.1)]
    return run_testbed(agents, k=10, runs=2000, steps=1000, seed=0)


def test_fig_2_2_epsilon_greedy_beats_greedy(testbed):
    # S&B Fig. 2.2: greedy levels off near 1.0 average reward, epsilon = 0.1 climbs to about 1.4
    # (seed 0, last 100 steps: greedy 1.05, eps 0.1 1.36)
    greedy = testbed["greedy"].avg_reward[LAST].mean()
    eps = testbed["eps0.1"].avg_reward[LAST].mean()
    assert 0.9 < greedy < 1.2
    assert eps > 1.25
    assert eps > greedy + 0.2
    # and in % optimal action: greedy is stuck near 1/3, eps 0.1 reaches about 80% (36% vs 79%)
    assert testbed["eps0.1"].pct_optimal[LAST].mean() > testbed["greedy"].pct_optimal[LAST].mean() + 30


def test_fig_2_4_ucb_beats_epsilon_greedy(testbed):
    # S&B Fig. 2.4: UCB with c = 2 earns more than epsilon-greedy with epsilon = 0.1 after the first steps
    # (seed 0, last 100 steps: 1.49 vs 1.36)
    assert testbed["ucb2"].avg_reward[LAST].mean() > testbed["eps0.1"].avg_reward[LAST].mean() + 0.05


def test_fig_2_3_optimistic_greedy_beats_realistic_epsilon_greedy(testbed):
    # S&B Fig. 2.3: optimistic greedy (Q1 = 5, alpha = 0.1) vs realistic eps-greedy (Q1 = 0, eps = 0.1,
    # alpha = 0.1): the optimistic one ends with the higher % optimal action (seed 0: 86% vs 76%)
    optimistic = testbed["optimistic5"].pct_optimal[LAST].mean()
    realistic = testbed["eps0.1-alpha0.1"].pct_optimal[LAST].mean()
    assert optimistic > realistic + 5


def test_fig_2_5_gradient_bandit_baseline_helps():
    # S&B Fig. 2.5: with q* ~ N(+4, 1), the gradient bandit with the reward baseline finds the best arm far
    # more often than without it (seed 0, alpha 0.1, last 100 steps: 84% vs 51%)
    results = run_testbed("gradient0.1,gradient0.1-nobaseline", runs=2000, steps=1000, seed=0, q_mean=4.0)
    with_baseline = results["gradient0.1"].pct_optimal[LAST].mean()
    without = results["gradient0.1-nobaseline"].pct_optimal[LAST].mean()
    assert with_baseline > 75
    assert with_baseline > without + 20


def test_ucb_tries_every_arm_once_first():
    # untried arms have an infinite bonus (eq. 2.10), so in the first k steps each run pulls each arm once
    # and hits its (unique) optimal arm exactly once: mean % optimal over those steps is exactly 100 / k
    res = run_testbed([UCB(c=2.0)], k=5, runs=300, steps=5, seed=3)["ucb2"]
    assert res.pct_optimal.mean() == pytest.approx(100 / 5)


def test_curves_are_reproducible_and_do_not_depend_on_the_other_agents():
    alone = run_testbed("eps0.1", runs=50, steps=30, seed=7)["eps0.1"]
    together = run_testbed("greedy,eps0.1", runs=50, steps=30, seed=7)["eps0.1"]
    np.testing.assert_array_equal(alone.avg_reward, together.avg_reward)
    np.testing.assert_array_equal(alone.pct_optimal, together.pct_optimal)
    assert alone.avg_reward.shape == alone.pct_optimal.shape == (30,)
    other_seed = run_testbed("eps0.1", runs=50, steps=30, seed=8)["eps0.1"]
    assert not np.array_equal(alone.avg_reward, other_seed.avg_reward)


@pytest.mark.parametrize(("spec", "agent"), [
    ("greedy", EpsilonGreedy()),
    ("eps0.01", EpsilonGreedy(epsilon=0.01)),
    ("optimistic5", EpsilonGreedy(initial=5.0, alpha=0.1)),
    ("eps0.1-alpha0.1", EpsilonGreedy(epsilon=0.1, alpha=0.1)),
    ("greedy-q-1.5", EpsilonGreedy(initial=-1.5)),
    ("ucb2", UCB(c=2.0)),
    ("gradient0.1", GradientBandit(alpha=0.1)),
    ("gradient0.4-nobaseline", GradientBandit(alpha=0.4, baseline=False)),
])
def test_parse_agent_round_trips(spec, agent):
    assert parse_agent(spec) == agent
    assert agent.name == spec
    assert parse_agent(agent.name) == agent


@pytest.mark.parametrize(("spec", "match"), [
    ("softmax", "unknown agent 'softmax'"),
    ("eps1.5", "epsilon must be in"),
    ("ucb2-nobaseline", "ucb takes no modifiers"),
    ("eps0.1-alpha0", "alpha"),
])
def test_bad_agent_names_list_the_valid_forms(spec, match):
    with pytest.raises(ValueError, match=match) as info:
        parse_agent(spec)
    assert "agents:" in str(info.value) and "valid forms" in str(info.value) and "ucb<C>" in str(info.value)


def test_parse_agents_rejects_empty_and_duplicates():
    with pytest.raises(ValueError, match="at least one"):
        parse_agents(" , ")
    with pytest.raises(ValueError, match="duplicate"):
        parse_agents("eps0.1,eps0.10")


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"runs": -1}, "runs must be >= 1"),
    ({"steps": 0}, "steps must be >= 1"),
    ({"k": 1}, "k"),
    ({"agents": "greedy,bogus"}, "agents: unknown agent 'bogus'.*valid forms"),
])
def test_bandit_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BanditConfig(**kwargs)


def test_bandit_config_fields_carry_help_for_the_cli():
    for f in fields(BanditConfig):
        assert f.metadata.get("help"), f"BanditConfig.{f.name} has no help"


def test_run_bandit_writes_plot_and_summary(tmp_path, capsys):
    config = BanditConfig(runs=20, steps=50, agents="greedy,eps0.1,ucb2,optimistic5,gradient0.1",
                          output_dir=str(tmp_path / "bandit"))
    summary = run_bandit(config)
    assert (tmp_path / "bandit" / "bandit.png").read_bytes()[:4] == b"\x89PNG"
    on_disk = json.loads((tmp_path / "bandit" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert list(summary["results"]) == ["greedy", "eps0.1", "ucb2", "optimistic5", "gradient0.1"]
    assert 0 <= summary["results"]["ucb2"]["final_pct_optimal"] <= 100
    assert "eps0.1" in capsys.readouterr().out


def test_plot_bandit_curves_accepts_a_list(tmp_path):
    results = run_testbed("greedy", runs=5, steps=10, seed=0)
    path = plot_bandit_curves(list(results.values()), tmp_path / "curves.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
