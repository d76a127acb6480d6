"""TabularMDP validation and the dynamic-programming solvers on MDPs small enough to solve by hand."""

import numpy as np
import pytest

from alignkit.classic.mdp import (
    NotConvergedError,
    TabularMDP,
    greedy_actions,
    policy_evaluation,
    policy_iteration,
    proper_policy,
    q_from_v,
    value_iteration,
)


def two_state_mdp(gamma: float = 0.5) -> TabularMDP:
    """s0 --a0, r=1--> s1;  s0 --a1, r=0--> s0;  s1 --a0, r=2--> s1;  s1 --a1, r=0--> s0 (all deterministic)."""
    P = np.zeros((2, 2, 2))
    P[0, 0, 1] = P[0, 1, 0] = P[1, 0, 1] = P[1, 1, 0] = 1.0
    R = np.array([[1.0, 0.0], [2.0, 0.0]])
    return TabularMDP(P, R, gamma=gamma, state_names=("s0", "s1"), action_names=("go", "back"))


def test_policy_evaluation_deterministic_by_hand():
    # pi = (go, go): V(s1) = 2 + 0.5 V(s1) -> V(s1) = 4;  V(s0) = 1 + 0.5 * 4 = 3
    V = policy_evaluation(two_state_mdp(), np.array([0, 0]))
    np.testing.assert_allclose(V, [3.0, 4.0], atol=1e-8)


def test_policy_evaluation_stochastic_by_hand():
    # pi(s0) = 50/50 go/back, pi(s1) = go: V(s1) = 4 as above;
    # V(s0) = 0.5 (1 + 0.5 * 4) + 0.5 (0 + 0.5 V(s0)) = 1.5 + 0.25 V(s0) -> V(s0) = 2
    pi = np.array([[0.5, 0.5], [1.0, 0.0]])
    np.testing.assert_allclose(policy_evaluation(two_state_mdp(), pi), [2.0, 4.0], atol=1e-8)


def test_q_from_v_by_hand():
    # Q(s, a) = r(s, a) + gamma V(s'):  Q(s0, go) = 1 + 0.5*4 = 3,  Q(s0, back) = 0 + 0.5*3 = 1.5,
    #                                   Q(s1, go) = 2 + 0.5*4 = 4,  Q(s1, back) = 0 + 0.5*3 = 1.5
    Q = q_from_v(two_state_mdp(), np.array([3.0, 4.0]))
    np.testing.assert_allclose(Q, [[3.0, 1.5], [4.0, 1.5]])


def test_value_iteration_and_policy_iteration_solve_the_two_state_mdp():
    mdp = two_state_mdp()
    V, policy, iterations = value_iteration(mdp)
    np.testing.assert_allclose(V, [3.0, 4.0], atol=1e-8)
    np.testing.assert_array_equal(policy, [0, 0])
    assert iterations > 1
    V2, policy2, _ = policy_iteration(mdp, initial_policy=np.array([1, 1]))
    np.testing.assert_allclose(V2, V, atol=1e-8)
    np.testing.assert_array_equal(policy2, policy)


def test_reward_per_next_state_equals_expected_reward():
    # R(s, a, s') of shape (S, A, S) is averaged over T(s'|s, a): a coin flip paying 2 or 0 is worth 1
    P = np.array([[[0.5, 0.5]], [[0.0, 1.0]]])
    R = np.array([[[2.0, 0.0]], [[0.0, 0.0]]])
    mdp = TabularMDP(P, R, gamma=0.9, terminal=np.array([False, True]))
    np.testing.assert_allclose(mdp.expected_rewards(), [[1.0], [0.0]])
    # V(s0) = 1 + 0.9 * 0.5 V(s0)  ->  V(s0) = 1 / 0.55
    np.testing.assert_allclose(policy_evaluation(mdp, np.array([0, 0])), [1 / 0.55, 0.0], atol=1e-8)


def test_terminal_states_have_value_zero_and_their_rows_are_ignored():
    # the terminal state's own self-loop pays 5 per step; as it is terminal that must not count
    P = np.zeros((2, 1, 2))
    P[0, 0, 1] = P[1, 0, 1] = 1.0
    R = np.array([[1.0], [5.0]])
    mdp = TabularMDP(P, R, gamma=1.0, terminal=np.array([False, True]))
    V, _, _ = value_iteration(mdp)
    np.testing.assert_allclose(V, [1.0, 0.0])
    np.testing.assert_allclose(q_from_v(mdp, V), [[1.0], [0.0]])


def test_rows_not_summing_to_one_name_the_state_and_action():
    P = two_state_mdp().transitions.copy()
    P[1, 1] = [0.3, 0.6]
    with pytest.raises(ValueError, match=r"transitions\[s='s1', a='back', :\] sums to 0.9"):
        TabularMDP(P, np.zeros((2, 2)), gamma=0.5, state_names=("s0", "s1"), action_names=("go", "back"))


def test_negative_probability_names_the_transition():
    P = two_state_mdp().transitions.copy()
    P[0, 0] = [-0.5, 1.5]
    with pytest.raises(ValueError, match=r"transitions\[s='0', a='0', s'='0'\] = -0.5 is negative"):
        TabularMDP(P, np.zeros((2, 2)))


@pytest.mark.parametrize("gamma", [-0.1, 1.01])
def test_gamma_outside_unit_interval_is_rejected(gamma):
    with pytest.raises(ValueError, match="gamma must be in"):
        two_state_mdp(gamma)


def test_bad_shapes_are_rejected():
    P = two_state_mdp().transitions
    with pytest.raises(ValueError, match=r"shape \(S, A, S\)"):
        TabularMDP(P[:, :, :1], np.zeros((2, 2)))
    with pytest.raises(ValueError, match="rewards must have shape"):
        TabularMDP(P, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="terminal must have shape"):
        TabularMDP(P, np.zeros((2, 2)), terminal=np.array([True]))
    with pytest.raises(ValueError, match="state_names has 1 names for 2 states"):
        TabularMDP(P, np.zeros((2, 2)), state_names=("only",))


def test_bad_policies_are_rejected():
    mdp = two_state_mdp()
    with pytest.raises(ValueError, match=r"policy\[s='s1'\] = 2 is not an action index"):
        policy_evaluation(mdp, np.array([0, 2]))
    with pytest.raises(ValueError, match=r"policy\[s='s0', :\].*not a probability distribution"):
        policy_evaluation(mdp, np.array([[0.5, 0.6], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="integer action indices"):
        policy_evaluation(mdp, np.array([0.0, 1.0]))


def test_gamma_one_without_termination_names_gamma():
    # one state looping on itself with reward 1: with gamma=1 the return is infinite, not a number to return
    mdp = TabularMDP(np.ones((1, 1, 1)), np.ones((1, 1)), gamma=1.0)
    with pytest.raises(NotConvergedError, match="value iteration did not converge.*with gamma=1"):
        value_iteration(mdp, max_iters=200)
    with pytest.raises(NotConvergedError, match="policy evaluation did not converge.*with gamma=1"):
        policy_evaluation(mdp, np.array([0]), max_iters=200)


def test_slow_convergence_with_gamma_below_one_is_reported_too():
    mdp = two_state_mdp(gamma=0.999)
    with pytest.raises(NotConvergedError, match="gamma=0.999"):
        value_iteration(mdp, max_iters=10)


def test_proper_policy_reaches_the_terminal_from_every_state():
    # a chain 0 -> 1 -> 2 (terminal); action 0 stays put, action 1 moves right
    P = np.zeros((3, 2, 3))
    for s in range(3):
        P[s, 0, s] = 1.0
        P[s, 1, min(s + 1, 2)] = 1.0
    mdp = TabularMDP(P, np.full((3, 2), -1.0), gamma=1.0, terminal=np.array([False, False, True]))
    policy = proper_policy(mdp)
    np.testing.assert_array_equal(policy[:2], [1, 1])
    np.testing.assert_allclose(policy_evaluation(mdp, policy), [-2.0, -1.0, 0.0])
    # policy iteration from the default (proper) start works with gamma=1 and a cost per step ...
    V, policy, _ = policy_iteration(mdp)
    np.testing.assert_allclose(V, [-2.0, -1.0, 0.0])
    # ... while an improper start (stay put forever at -1 per step) cannot be evaluated
    with pytest.raises(NotConvergedError, match="gamma=1"):
        policy_iteration(mdp, initial_policy=np.array([0, 0, 0]), eval_max_iters=100)


def test_greedy_actions_treat_rounding_noise_as_a_tie():
    Q = np.array([[1.0, 1.0 + 1e-13, 0.5]])
    np.testing.assert_array_equal(greedy_actions(Q), [[True, True, False]])


def test_tabular_modules_import_only_numpy_matplotlib_and_the_standard_library():
    # DESIGN.md: alignkit.classic uses alignkit.core only; these modules need not even that
    import ast
    import pathlib
    import subprocess
    import sys

    import alignkit.classic

    root = pathlib.Path(alignkit.classic.__file__).parent
    allowed = {"numpy", "matplotlib", "torch", "__future__"} | set(sys.stdlib_module_names)
    for name in ("__init__", "mdp", "gridworld", "bandits", "tabular_cli"):
        for node in ast.walk(ast.parse((root / f"{name}.py").read_text())):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                modules = [("." * node.level) + (node.module or "")]
            else:
                continue
            for module in modules:
                ok = module.split(".")[0] in allowed or module.startswith(".") and not module.startswith("..")
                assert ok or module.startswith("alignkit.core"), f"classic/{name}.py imports {module}"
    # the package file is a docstring only: importing it loads none of its modules (nor matplotlib)
    code = "import sys, alignkit.classic; print(sorted(m for m in sys.modules if m.startswith(('alignkit.c', 'matp'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['alignkit.classic']"
