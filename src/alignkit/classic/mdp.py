"""Finite MDPs as arrays, and the dynamic programming that solves them exactly.

Notation follows lecture seed 004 ("Markov Decision Processes, formal definition"): a finite MDP
``(S, A, T, R)`` with ``T(s'|s, a)`` and rewards ``R_{t+1}``, discount ``0 <= gamma <= 1``, return
``G_t = R_{t+1} + gamma G_{t+1}``. Shapes use ``S`` = number of states, ``A`` = number of actions.

Equations implemented (seed 004; Sutton & Barto 2nd ed. eqs. 4.5, 3.19, 3.20):

- expected reward            r(s, a)   = sum_{s'} T(s'|s, a) R(s, a, s')
- action value of V          Q(s, a)   = r(s, a) + gamma * sum_{s'} T(s'|s, a) V(s')
- policy evaluation          V_pi(s)   = sum_a pi(a|s) Q_{V_pi}(s, a)
- Bellman optimality         V*(s)     = max_a sum_{s', r} P(s', r|s, a) [r + gamma V*(s')]
                             Q*(s, a)  = sum_{s', r} P(s', r|s, a) [r + gamma max_{a'} Q*(s', a')]

Terminal states are absorbing with value 0 by definition: the solvers fix ``V(s) = 0`` and
``Q(s, .) = 0`` there and ignore their rows of ``transitions`` and ``rewards``. That convention is what
makes ``gamma = 1`` usable at all: an episodic return is finite only because every trajectory (under the
policy being evaluated, or under the optimal one) ends in a terminal state that pays nothing afterwards.
When that fails (a policy that loops forever collecting -0.04 per step) the iteration cannot converge, and
the solvers raise :class:`NotConvergedError` naming ``gamma`` instead of returning a number that is not a
value.

Policies are either deterministic, an int array of shape ``(S,)`` holding one action index per state, or
stochastic, a float array of shape ``(S, A)`` whose rows are ``pi(.|s)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Two values of Q closer than this count as a tie when picking a greedy action (see :func:`greedy_policy`).
TIE_ATOL = 1e-9


class NotConvergedError(RuntimeError):
    """An iterative solver used up ``max_iters`` sweeps without the value changing by less than ``tol``."""


@dataclass
class TabularMDP:
    """A finite MDP held as dense numpy arrays.

    Fields:
        transitions: ``T(s'|s, a)``, float array of shape ``(S, A, S)``; every row ``transitions[s, a]`` is a
            probability distribution over next states (non-negative, sums to 1 within 1e-8).
        rewards: reward for the transition, shape ``(S, A, S)`` (``R(s, a, s')``) or ``(S, A)`` (``r(s, a)``,
            the same whatever the next state).
        gamma: discount factor in ``[0, 1]``.
        terminal: bool array of shape ``(S,)``; terminal states are absorbing with value 0 (module docstring).
            ``None`` means no terminal states.
        state_names / action_names: labels used in error messages and printouts; default ``"0", "1", ...``.

    Arrays are converted to float64 (``terminal`` to bool) and validated on construction; a bad row names
    its state and action, e.g. ``transitions[s='(1,1)', a='up', :] sums to 0.9``.
    """

    transitions: np.ndarray
    rewards: np.ndarray
    gamma: float = 1.0
    terminal: np.ndarray | None = None
    state_names: tuple[str, ...] = field(default=())
    action_names: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        P = np.asarray(self.transitions, dtype=np.float64)
        if P.ndim != 3 or P.shape[0] != P.shape[2] or P.shape[0] == 0 or P.shape[1] == 0:
            raise ValueError(f"transitions must have shape (S, A, S) with S, A >= 1, got {P.shape}")
        n_states, n_actions = P.shape[0], P.shape[1]
        self.transitions = P
        self.state_names = tuple(str(n) for n in self.state_names) or tuple(str(i) for i in range(n_states))
        self.action_names = tuple(str(n) for n in self.action_names) or tuple(str(i) for i in range(n_actions))
        if len(self.state_names) != n_states:
            raise ValueError(f"state_names has {len(self.state_names)} names for {n_states} states")
        if len(self.action_names) != n_actions:
            raise ValueError(f"action_names has {len(self.action_names)} names for {n_actions} actions")

        if not np.isfinite(P).all():
            s, a, s2 = np.argwhere(~np.isfinite(P))[0]
            raise ValueError(f"{self._where(s, a, s2)} is {P[s, a, s2]}; transition probabilities must be finite")
        if (P < 0).any():
            s, a, s2 = np.argwhere(P < 0)[0]
            raise ValueError(f"{self._where(s, a, s2)} = {P[s, a, s2]:.6g} is negative; transition probabilities "
                             "must be >= 0")
        row_sums = P.sum(axis=2)
        bad = np.abs(row_sums - 1.0) > 1e-8
        if bad.any():
            s, a = np.argwhere(bad)[0]
            raise ValueError(f"{self._where(s, a)} sums to {row_sums[s, a]:.6g}; each row T(.|s, a) must sum "
                             f"to 1 ({int(bad.sum())} bad row(s) in all)")

        R = np.asarray(self.rewards, dtype=np.float64)
        if R.shape not in ((n_states, n_actions, n_states), (n_states, n_actions)):
            raise ValueError(f"rewards must have shape (S, A, S) = {(n_states, n_actions, n_states)} or (S, A) = "
                             f"{(n_states, n_actions)}, got {R.shape}")
        if not np.isfinite(R).all():
            s, a = np.argwhere(~np.isfinite(R))[0][:2]
            raise ValueError(f"rewards for s={self.state_names[s]!r}, a={self.action_names[a]!r} are not finite")
        self.rewards = R

        gamma = float(self.gamma)
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {self.gamma}")
        self.gamma = gamma

        if self.terminal is None:
            self.terminal = np.zeros(n_states, dtype=bool)
        term = np.asarray(self.terminal)
        if term.shape != (n_states,):
            raise ValueError(f"terminal must have shape (S,) = ({n_states},), got {term.shape}")
        self.terminal = term.astype(bool)

    def _where(self, s: int, a: int, s_next: int | None = None) -> str:
        """``transitions[s='name', a='name', :]`` (or ``s'='name'``) for error messages."""
        last = ":" if s_next is None else f"s'={self.state_names[s_next]!r}"
        return f"transitions[s={self.state_names[s]!r}, a={self.action_names[a]!r}, {last}]"

    @property
    def n_states(self) -> int:
        return self.transitions.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transitions.shape[1]

    def expected_rewards(self) -> np.ndarray:
        """``r(s, a) = sum_{s'} T(s'|s, a) R(s, a, s')``, shape ``(S, A)``; 0 in terminal states."""
        r = self.rewards if self.rewards.ndim == 2 else np.einsum("ijk,ijk->ij", self.transitions, self.rewards)
        return np.where(self.terminal[:, None], 0.0, r)


# ------------------------------------------------------------------------------------------ backups
def q_from_v(mdp: TabularMDP, V: np.ndarray) -> np.ndarray:
    """One-step lookahead: ``Q(s, a) = r(s, a) + gamma * sum_{s'} T(s'|s, a) V(s')``.

    Args:
        V: state values, shape ``(S,)``.
    Returns:
        Q, shape ``(S, A)``, with ``Q[s, :] = 0`` for terminal ``s``.
    """
    V = np.asarray(V, dtype=np.float64)
    if V.shape != (mdp.n_states,):
        raise ValueError(f"V must have shape (S,) = ({mdp.n_states},), got {V.shape}")
    Q = mdp.expected_rewards() + mdp.gamma * (mdp.transitions @ V)
    Q[mdp.terminal] = 0.0
    return Q


def greedy_actions(Q: np.ndarray, atol: float = TIE_ATOL) -> np.ndarray:
    """Which actions are greedy: bool ``(S, A)``, True where ``Q[s, a]`` is within ``atol`` of ``max_a Q[s, a]``.

    The tolerance keeps rounding noise in the last bits of ``Q`` from breaking ties arbitrarily.
    """
    Q = np.asarray(Q, dtype=np.float64)
    return Q >= Q.max(axis=1, keepdims=True) - atol


def greedy_policy(Q: np.ndarray, atol: float = TIE_ATOL) -> np.ndarray:
    """Deterministic greedy policy of ``Q`` (shape ``(S, A)``) -> int array ``(S,)``, ties to the lowest index."""
    return np.argmax(greedy_actions(Q, atol), axis=1)


def _policy_matrix(mdp: TabularMDP, policy: np.ndarray) -> np.ndarray:
    """Deterministic ``(S,)`` or stochastic ``(S, A)`` policy -> ``pi(a|s)`` of shape ``(S, A)``, validated."""
    policy = np.asarray(policy)
    S, A = mdp.n_states, mdp.n_actions
    if policy.shape == (S,):
        if not np.issubdtype(policy.dtype, np.integer):
            raise ValueError(f"a deterministic policy of shape (S,) must hold integer action indices, got "
                             f"dtype {policy.dtype}")
        if ((policy < 0) | (policy >= A)).any():
            s = int(np.argwhere((policy < 0) | (policy >= A))[0, 0])
            raise ValueError(f"policy[s={mdp.state_names[s]!r}] = {policy[s]} is not an action index in [0, {A})")
        return np.eye(A)[policy]
    if policy.shape == (S, A):
        pi = policy.astype(np.float64)
        bad = (pi < 0).any(axis=1) | (np.abs(pi.sum(axis=1) - 1.0) > 1e-8)
        if bad.any():
            s = int(np.argwhere(bad)[0, 0])
            raise ValueError(f"policy[s={mdp.state_names[s]!r}, :] = {pi[s]} is not a probability distribution")
        return pi
    raise ValueError(f"policy must have shape (S,) = ({S},) (deterministic) or (S, A) = ({S}, {A}) (stochastic), "
                     f"got {policy.shape}")


def _not_converged(what: str, mdp: TabularMDP, max_iters: int, delta: float, tol: float) -> NotConvergedError:
    msg = f"{what} did not converge in max_iters={max_iters} sweeps (last change {delta:.3g} > tol={tol:g})"
    if mdp.gamma == 1.0:
        msg += ("; with gamma=1 values are finite only if every trajectory reaches a terminal state (absorbing, "
                "zero reward): some state can loop forever collecting non-zero reward. Use gamma < 1, make the "
                "terminal states reachable, or raise max_iters if the values are merely converging slowly")
    else:
        msg += f" with gamma={mdp.gamma:g}; raise max_iters or tol"
    return NotConvergedError(msg)


# ------------------------------------------------------------------------------------------ solvers
def policy_evaluation(mdp: TabularMDP, policy: np.ndarray, tol: float = 1e-10, max_iters: int = 100_000,
                      V0: np.ndarray | None = None) -> np.ndarray:
    """Iterative policy evaluation (Sutton & Barto sec. 4.1), synchronous sweeps.

    ``V_{k+1}(s) = sum_a pi(a|s) [r(s, a) + gamma sum_{s'} T(s'|s, a) V_k(s')]``, from ``V0`` (default 0),
    until ``max_s |V_{k+1}(s) - V_k(s)| < tol``.

    Args:
        policy: int ``(S,)`` (deterministic) or float ``(S, A)`` (stochastic, rows sum to 1).
        V0: optional starting values, shape ``(S,)`` (policy iteration warm-starts from the previous V).
    Returns:
        V_pi, shape ``(S,)``, 0 at terminal states.
    Raises:
        NotConvergedError: after ``max_iters`` sweeps (always the case for a policy that, with gamma=1,
            loops forever collecting non-zero reward).
    """
    pi = _policy_matrix(mdp, policy)
    r_pi = (pi * mdp.expected_rewards()).sum(axis=1)  # (S,)
    P_pi = np.einsum("sa,sat->st", pi, mdp.transitions)  # (S, S)
    live = ~mdp.terminal
    V = np.zeros(mdp.n_states) if V0 is None else np.where(live, np.asarray(V0, dtype=np.float64), 0.0)
    delta = np.inf
    for _ in range(max_iters):
        V_new = np.where(live, r_pi + mdp.gamma * (P_pi @ V), 0.0)
        delta = float(np.max(np.abs(V_new - V)))
        V = V_new
        if delta < tol:
            return V
    raise _not_converged("policy evaluation", mdp, max_iters, delta, tol)


def value_iteration(
    mdp: TabularMDP, tol: float = 1e-10, max_iters: int = 100_000
) -> tuple[np.ndarray, np.ndarray, int]:
    """Value iteration: repeat the Bellman optimality backup of seed 004 until the values stop moving.

    ``V_{k+1}(s) = max_a [r(s, a) + gamma sum_{s'} T(s'|s, a) V_k(s')]`` from ``V_0 = 0``, synchronous
    sweeps, stopping at the first sweep with ``max_s |V_{k+1}(s) - V_k(s)| < tol``. (For gamma < 1 the
    remaining error is then at most ``tol * gamma / (1 - gamma)``.)

    The policy returned is greedy with respect to ``q_from_v(V)``; among tied greedy actions it takes one that
    leads to a terminal state (:func:`proper_policy` restricted to the greedy actions), then the lowest index.
    That matters for gamma=1 with no living reward: every action that avoids a -1 ties at V=1 there,
    walking into a wall forever included, and a plain argmax would happily pick it.

    Returns:
        ``(V, policy, iterations)``: V* of shape ``(S,)``; the greedy deterministic policy, int ``(S,)``; the
        number of sweeps done.
    Raises:
        NotConvergedError: after ``max_iters`` sweeps; with gamma=1 this means some state can avoid the
            terminal states forever while collecting non-zero reward, and the message says so.
    """
    V = np.zeros(mdp.n_states)
    delta = np.inf
    for it in range(1, max_iters + 1):
        V_new = q_from_v(mdp, V).max(axis=1)  # terminal rows of Q are 0, so V_new is 0 there
        delta = float(np.max(np.abs(V_new - V)))
        V = V_new
        if delta < tol:
            return V, proper_policy(mdp, allowed=greedy_actions(q_from_v(mdp, V))), it
    raise _not_converged("value iteration", mdp, max_iters, delta, tol)


def proper_policy(mdp: TabularMDP, allowed: np.ndarray | None = None) -> np.ndarray:
    """A deterministic policy that reaches a terminal state with probability 1 from every state that can.

    Backward reachability: level 0 is the terminal set; a state gets level ``k`` and the lowest-index allowed
    action that has positive probability of moving to a level ``< k`` state. Following it, each step has a
    chance of getting one level closer, so termination is certain. States that cannot reach a terminal state
    with allowed actions (every state, if there are no terminals) get their lowest-index allowed action.
    Policy iteration starts from this policy, because with gamma=1 evaluating an improper starting policy
    (walking into a wall forever at -0.04 per step) diverges.

    Args:
        allowed: optional bool ``(S, A)``, the actions that may be chosen (e.g. :func:`greedy_actions`); each
            state needs at least one. Default: all.
    Returns:
        int array of shape ``(S,)``.
    """
    if allowed is None:
        allowed = np.ones((mdp.n_states, mdp.n_actions), dtype=bool)
    allowed = np.asarray(allowed, dtype=bool)
    if allowed.shape != (mdp.n_states, mdp.n_actions) or not allowed.any(axis=1).all():
        raise ValueError(f"allowed must be bool (S, A) = ({mdp.n_states}, {mdp.n_actions}) with at least one "
                         "action per state")
    policy = np.argmax(allowed, axis=1)
    reached = mdp.terminal.copy()
    while True:
        # can[s, a]: allowed action a from s has positive probability of landing in an already-reached state
        can = (mdp.transitions[:, :, reached] > 0).any(axis=2) & allowed & ~reached[:, None]
        new = can.any(axis=1)
        if not new.any():
            return policy
        policy[new] = np.argmax(can[new], axis=1)
        reached |= new


def policy_iteration(mdp: TabularMDP, initial_policy: np.ndarray | None = None, tol: float = 1e-10,
                     max_iters: int = 1_000, eval_max_iters: int = 100_000) -> tuple[np.ndarray, np.ndarray, int]:
    """Policy iteration (Howard; Sutton & Barto sec. 4.3): evaluate, improve greedily, until stable.

    Each round evaluates the current policy with :func:`policy_evaluation` (warm-started from the previous
    values) and replaces ``pi(s)`` by a greedy action of ``q_from_v(V_pi)``, keeping the current action
    whenever it is within ``TIE_ATOL`` of the best (without that rule, ties make it cycle forever). It stops
    when no state changes action.

    Args:
        initial_policy: int ``(S,)``; default :func:`proper_policy` (needed for gamma=1, harmless otherwise).
        tol, eval_max_iters: passed to :func:`policy_evaluation`.
        max_iters: most improvement rounds.
    Returns:
        ``(V, policy, iterations)``: values of the final policy ``(S,)``, the policy int ``(S,)``, and the
        number of evaluate-improve rounds (the last one changed nothing).
    Raises:
        NotConvergedError: when a policy cannot be evaluated (see :func:`policy_evaluation`) or the policy
            still changes after ``max_iters`` rounds.
    """
    policy = proper_policy(mdp) if initial_policy is None else np.asarray(initial_policy).copy()
    _policy_matrix(mdp, policy)  # validates shape and action range
    if policy.ndim != 1:
        raise ValueError(f"initial_policy must be deterministic, shape (S,) = ({mdp.n_states},), got {policy.shape}")
    V = None
    for it in range(1, max_iters + 1):
        V = policy_evaluation(mdp, policy, tol=tol, max_iters=eval_max_iters, V0=V)
        Q = q_from_v(mdp, V)
        keep = Q[np.arange(mdp.n_states), policy] >= Q.max(axis=1) - TIE_ATOL
        improved = np.where(keep, policy, greedy_policy(Q))  # (S,)
        if np.array_equal(improved, policy):
            return V, policy, it
        policy = improved
    raise NotConvergedError(f"policy iteration still changed the policy after max_iters={max_iters} rounds "
                            f"(gamma={mdp.gamma:g})")
