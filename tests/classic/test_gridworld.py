"""The 4x3 grid world: the values of lecture seed 004 and AIMA Fig. 17.3, and VI / PI agreement."""

import itertools
import json
from dataclasses import fields

import numpy as np
import pytest

from alignkit.classic.gridworld import (
    ACTIONS,
    CELLS,
    DONE,
    format_policy,
    format_values,
    make_gridworld,
    plot_values,
    state_index,
)
from alignkit.classic.mdp import greedy_actions, policy_evaluation, policy_iteration, q_from_v, value_iteration
from alignkit.classic.tabular_cli import GridworldConfig, run_gridworld


def V_at(V, cell):
    return V[state_index(cell)]


@pytest.mark.parametrize("method", [value_iteration, policy_iteration])
def test_seed_004_values_gamma_1(method):
    # Seed 004, "deterministic optimal policy, gamma = 1": V*(4,3) = V*(3,3) = V*(2,3) = V*(1,1) = 1, V*(4,2) = -1
    V, _, _ = method(make_gridworld(gamma=1.0))
    for cell in [(4, 3), (3, 3), (2, 3), (1, 1)]:
        assert V_at(V, cell) == pytest.approx(1.0, abs=1e-6)
    assert V_at(V, (4, 2)) == pytest.approx(-1.0, abs=1e-6)


@pytest.mark.parametrize("method", [value_iteration, policy_iteration])
def test_seed_004_values_gamma_09(method):
    # Seed 004, "deterministic optimal policy, gamma = 0.9": V*(4,3) = 1, V*(3,3) = 0.9, V*(2,3) = 0.81,
    # V*(1,1) = 0.9**5 = 0.59 (five moves up, up, right, right, right before the exit), V*(4,2) = -1
    V, policy, _ = method(make_gridworld(gamma=0.9))
    expected = {(4, 3): 1.0, (3, 3): 0.9, (2, 3): 0.81, (1, 1): 0.9**5, (4, 2): -1.0}
    for cell, value in expected.items():
        assert V_at(V, cell) == pytest.approx(value, abs=1e-6), cell
    assert V[DONE] == 0.0


def test_aima_fig_17_3_values():
    # Russell & Norvig, AIMA 3rd ed. Fig. 17.3: utilities of the 4x3 world with R(s) = -0.04, gamma = 1 and
    # the 0.8 / 0.1 / 0.1 motion model (slip = 0.2); printed to three decimals
    V, policy, _ = value_iteration(make_gridworld(gamma=1.0, slip=0.2, living_reward=-0.04))
    aima = {(1, 3): 0.812, (2, 3): 0.868, (3, 3): 0.918, (4, 3): 1.0,
            (1, 2): 0.762, (3, 2): 0.660, (4, 2): -1.0,
            (1, 1): 0.705, (2, 1): 0.655, (3, 1): 0.611, (4, 1): 0.388}
    for cell, value in aima.items():
        assert V_at(V, cell) == pytest.approx(value, abs=5e-4), cell
    # and AIMA Fig. 17.2 (R(s) = -0.04): the optimal policy goes up from (1,1) and takes the long way round
    # from (3,1) and (4,1), i.e. left, away from the -1
    up, left = ACTIONS.index("up"), ACTIONS.index("left")
    assert policy[state_index((1, 1))] == up
    assert policy[state_index((3, 1))] == left
    assert policy[state_index((4, 1))] == left


SETTINGS = list(itertools.product([0.5, 0.9, 0.99, 1.0], [0.0, 0.2, 0.5], [0.0, -0.04, -0.5]))


@pytest.mark.parametrize(("gamma", "slip", "living_reward"), SETTINGS)
def test_value_iteration_and_policy_iteration_agree(gamma, slip, living_reward):
    mdp = make_gridworld(gamma=gamma, slip=slip, living_reward=living_reward)
    V_vi, pi_vi, _ = value_iteration(mdp)
    V_pi, pi_pi, _ = policy_iteration(mdp)
    np.testing.assert_allclose(V_vi, V_pi, atol=1e-6)
    # both policies are greedy w.r.t. V*, and achieve V* (with gamma = 1 and no living reward many actions
    # tie, so only where the greedy action is unique must they be the same action)
    optimal = greedy_actions(q_from_v(mdp, V_vi), atol=1e-6)
    states = np.arange(mdp.n_states)
    assert optimal[states, pi_vi].all() and optimal[states, pi_pi].all()
    unique = optimal.sum(axis=1) == 1
    np.testing.assert_array_equal(pi_vi[unique], pi_pi[unique])
    for policy in (pi_vi, pi_pi):
        np.testing.assert_allclose(policy_evaluation(mdp, policy), V_vi, atol=1e-6)


def test_value_iteration_policy_reaches_the_exit_with_gamma_1():
    # gamma = 1, no living reward: every action that avoids the -1 ties at V = 1, walking into a wall forever
    # included. The returned policy must still lead to the +1 exit: follow it from the start.
    mdp = make_gridworld(gamma=1.0)
    _, policy, _ = value_iteration(mdp)
    s, steps = state_index((1, 1)), 0
    while s != DONE and steps < 20:
        s = int(np.argmax(mdp.transitions[s, policy[s]]))
        steps += 1
    assert s == DONE and steps == 6  # 5 moves + the exit action at (4,3)


def test_transitions_with_slip():
    # from (1,1) intending "up": 0.8 to (1,2); slipping left hits the grid edge (stay, 0.1); right to (2,1) 0.1
    P = make_gridworld(slip=0.2).transitions[state_index((1, 1)), ACTIONS.index("up")]
    assert P[state_index((1, 2))] == pytest.approx(0.8)
    assert P[state_index((1, 1))] == pytest.approx(0.1)
    assert P[state_index((2, 1))] == pytest.approx(0.1)
    # (1,2) moving right bumps into the wall at (2,2) and stays
    P = make_gridworld().transitions[state_index((1, 2)), ACTIONS.index("right")]
    assert P[state_index((1, 2))] == 1.0


@pytest.mark.parametrize(("kwargs", "match"), [({"slip": 1.0}, "slip"), ({"slip": -0.1}, "slip"),
                                               ({"gamma": 1.5}, "gamma")])
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_gridworld(**kwargs)


def test_state_index_rejects_the_wall():
    with pytest.raises(ValueError, match="wall"):
        state_index((2, 2))
    assert len(CELLS) == 11


def test_format_values_and_policy_lay_out_the_grid_top_row_first():
    V, policy, _ = value_iteration(make_gridworld(gamma=0.9))
    values = format_values(V).splitlines()
    assert values[0].startswith("row 3") and values[2].startswith("row 1")
    assert "####" in values[1] and "-1.000" in values[1]
    assert values[0].split("|")[1].split() == ["0.729", "0.810", "0.900", "1.000"]
    arrows = format_policy(policy).splitlines()
    assert arrows[0].split("|")[1].split() == ["→", "→", "→", "+1"]
    assert arrows[1].split("|")[1].split() == ["↑", "#", "↑", "-1"]
    with pytest.raises(ValueError, match="shape"):
        format_values(V[:5])


def test_plot_values_writes_a_png(tmp_path):
    V, policy, _ = value_iteration(make_gridworld(gamma=0.9, slip=0.2))
    path = plot_values(V, policy, tmp_path / "sub" / "values.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"gamma": 1.5}, r"gamma must be in \[0, 1\]"),
    ({"slip": 1.0}, r"slip must be in \[0, 1\)"),
    ({"solver": "sarsa"}, "solver must be one of value_iteration, policy_iteration"),
    ({"gamma": 1.0, "living_reward": 0.1}, "living_reward"),
])
def test_gridworld_config_rejects_bad_values(kwargs, match):
    with pytest.raises(ValueError, match=match):
        GridworldConfig(**kwargs)


def test_gridworld_config_fields_carry_help_for_the_cli():
    for f in fields(GridworldConfig):
        assert f.metadata.get("help"), f"GridworldConfig.{f.name} has no help"
    assert {f.name: f.metadata.get("choices") for f in fields(GridworldConfig)}["solver"] == (
        "value_iteration", "policy_iteration")


def test_run_gridworld_writes_plot_and_summary(tmp_path, capsys):
    config = GridworldConfig(gamma=1.0, slip=0.2, living_reward=-0.04, solver="policy_iteration",
                             output_dir=str(tmp_path / "gw"))
    summary = run_gridworld(config)
    assert (tmp_path / "gw" / "values.png").read_bytes()[:4] == b"\x89PNG"
    on_disk = json.loads((tmp_path / "gw" / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["start_value"] == pytest.approx(0.705, abs=5e-4)  # AIMA Fig. 17.3
    assert on_disk["policy"]["(1,1)"] == "up" and on_disk["policy"]["(4,3)"] == "exit"
    out = capsys.readouterr().out
    assert "####" in out and "→" in out
