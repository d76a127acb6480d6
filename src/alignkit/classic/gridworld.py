"""The 4x3 grid world of lecture seed 004 and Russell & Norvig (AIMA 3rd ed., Fig. 17.1), as a TabularMDP.

::

    row 3 |  .    .    .   +1 |      columns 1..4 left to right, rows 1..3 bottom to top;
    row 2 |  .   ###   .   -1 |      wall at (2,2); start at (1,1)
    row 1 |  S    .    .    . |
            c1   c2   c3   c4

Conventions (chosen so the numbers of seed 004 come out exactly):

- Cells ``(4,3)`` and ``(4,2)`` are *exit* states: every action there pays the terminal reward (+1 / -1)
  and moves to an extra absorbing state ``"done"`` (the MDP's only terminal state, value 0). So
  ``V*(4,3) = 1`` and ``V*(4,2) = -1`` whatever gamma is, and a cell ``n`` moves away from the +1 exit is
  worth ``gamma**n``: with gamma = 0.9, ``V*(3,3) = 0.9``, ``V*(2,3) = 0.81``, ``V*(1,1) = 0.9**5``; with
  gamma = 1 they are all 1 (seed 004, the two "deterministic optimal policy" slides). Had the +1 been paid
  on *entering* (4,3), V*(3,3) would be 1, not 0.9.
- Every other cell pays ``living_reward`` per action taken there (AIMA's ``R(s) = -0.04``, received in
  the state you leave). With ``slip=0.2, gamma=1, living_reward=-0.04`` this reproduces AIMA Fig. 17.3
  (``V(1,1) = 0.705``, ``V(3,3) = 0.918``).
- Moves: the intended direction with probability ``1 - slip``, each of the two perpendicular directions
  with ``slip / 2``; a move into the wall or off the grid leaves the agent where it is.

State order: the 11 cells row by row from the bottom (``(1,1), (2,1), (3,1), (4,1), (1,2), (3,2), ...,
(4,3)``), then ``"done"``; value arrays have shape ``(12,)``, deterministic policies int ``(12,)``.
Actions: ``0 = up, 1 = down, 2 = left, 3 = right``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .mdp import TabularMDP
from .plotting import save_figure

COLUMNS, ROWS = 4, 3
WALL = (2, 2)
START = (1, 1)
#: Exit cells and the reward their (single, forced) exit pays.
EXITS: dict[tuple[int, int], float] = {(4, 3): 1.0, (4, 2): -1.0}
ACTIONS = ("up", "down", "left", "right")
ARROWS = ("↑", "↓", "←", "→")
_MOVES = {0: (0, 1), 1: (0, -1), 2: (-1, 0), 3: (1, 0)}  # action -> (d_column, d_row)
_PERPENDICULAR = {0: (2, 3), 1: (2, 3), 2: (0, 1), 3: (0, 1)}

#: The grid cells in state order, as (column, row).
CELLS: tuple[tuple[int, int], ...] = tuple(
    (c, r) for r in range(1, ROWS + 1) for c in range(1, COLUMNS + 1) if (c, r) != WALL
)
#: Index of the absorbing "done" state, after the cells.
DONE = len(CELLS)
N_STATES = DONE + 1


def state_index(cell: tuple[int, int]) -> int:
    """Index of ``(column, row)`` in the state order; ValueError for the wall or a cell off the grid."""
    try:
        return CELLS.index(tuple(cell))
    except ValueError:
        raise ValueError(f"{cell} is not a grid cell; cells are {CELLS} (wall at {WALL})") from None


def _step(cell: tuple[int, int], action: int) -> tuple[int, int]:
    dc, dr = _MOVES[action]
    c, r = cell[0] + dc, cell[1] + dr
    if not (1 <= c <= COLUMNS and 1 <= r <= ROWS) or (c, r) == WALL:
        return cell
    return (c, r)


def make_gridworld(gamma: float = 0.9, slip: float = 0.0, living_reward: float = 0.0) -> TabularMDP:
    """Build the grid world MDP (module docstring for the conventions).

    Args:
        gamma: discount in ``[0, 1]``.
        slip: probability of moving perpendicular to the intended direction, split equally between the two
            sides; in ``[0, 1)``. 0 = deterministic; AIMA uses 0.2.
        living_reward: reward per action in a non-exit cell (AIMA: -0.04).
    Returns:
        TabularMDP with transitions ``(12, 4, 12)``, rewards ``(12, 4)``, terminal = only ``"done"``.
    """
    if not 0.0 <= slip < 1.0:
        raise ValueError(f"slip must be in [0, 1), got {slip}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    P = np.zeros((N_STATES, len(ACTIONS), N_STATES))
    R = np.zeros((N_STATES, len(ACTIONS)))
    for s, cell in enumerate(CELLS):
        if cell in EXITS:
            P[s, :, DONE] = 1.0
            R[s, :] = EXITS[cell]
            continue
        R[s, :] = living_reward
        for a in range(len(ACTIONS)):
            P[s, a, state_index(_step(cell, a))] += 1.0 - slip
            for side in _PERPENDICULAR[a]:
                P[s, a, state_index(_step(cell, side))] += slip / 2
    P[DONE, :, DONE] = 1.0
    terminal = np.zeros(N_STATES, dtype=bool)
    terminal[DONE] = True
    names = tuple(f"({c},{r})" for c, r in CELLS) + ("done",)
    return TabularMDP(P, R, gamma=gamma, terminal=terminal, state_names=names, action_names=ACTIONS)


def _check_length(name: str, x: np.ndarray) -> None:
    if x.shape != (N_STATES,):
        raise ValueError(f"{name} must have shape ({N_STATES},) (11 cells + 'done'), got {x.shape}")


def format_values(V: np.ndarray, decimals: int = 3) -> str:
    """Values as a text table laid out like the grid: top row (row 3) first, the wall as ``####``.

    Args:
        V: shape ``(12,)`` in state order (the ``"done"`` entry is not shown).
    """
    V = np.asarray(V, dtype=np.float64)
    _check_length("V", V)
    width = decimals + 5
    lines = []
    for r in range(ROWS, 0, -1):
        cells = [("#" * 4).rjust(width) if (c, r) == WALL else f"{V[state_index((c, r))]:{width}.{decimals}f}"
                 for c in range(1, COLUMNS + 1)]
        lines.append(f"row {r} |" + " ".join(cells) + " |")
    lines.append(" " * 6 + " ".join(f"c{c}".rjust(width) for c in range(1, COLUMNS + 1)))
    return "\n".join(lines)


def format_policy(policy: np.ndarray) -> str:
    """A deterministic policy as arrows ↑↓←→ laid out like the grid; exits show ``+1`` / ``-1``, the wall ``#``.

    Args:
        policy: int array of shape ``(12,)`` (action indices, state order).
    """
    policy = np.asarray(policy)
    _check_length("policy", policy)
    lines = []
    for r in range(ROWS, 0, -1):
        marks = []
        for c in range(1, COLUMNS + 1):
            if (c, r) == WALL:
                marks.append("#")
            elif (c, r) in EXITS:
                marks.append(f"{EXITS[(c, r)]:+g}")
            else:
                marks.append(ARROWS[int(policy[state_index((c, r))])])
        lines.append(f"row {r} |" + "".join(m.rjust(4) for m in marks) + " |")
    lines.append(" " * 6 + "".join(f"c{c}".rjust(4) for c in range(1, COLUMNS + 1)))
    return "\n".join(lines)


def plot_values(V: np.ndarray, policy: np.ndarray, path: str | Path, title: str = "") -> Path:
    """Write a PNG of the grid: cells coloured by value, the value and the policy's arrow in each cell.

    Args:
        V: shape ``(12,)``; policy: int ``(12,)``; path: the PNG file to write (parent directories made).
    Returns:
        the path written.
    """
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: the user's matplotlib backend is left alone

    V = np.asarray(V, dtype=np.float64)
    policy = np.asarray(policy)
    _check_length("V", V)
    _check_length("policy", policy)
    grid = np.full((ROWS, COLUMNS), np.nan)  # grid[row from top, column]
    for s, (c, r) in enumerate(CELLS):
        grid[ROWS - r, c - 1] = V[s]
    limit = max(1e-12, float(np.nanmax(np.abs(grid))))
    cmap = matplotlib.colormaps["RdYlGn"].with_extremes(bad="dimgray")  # the wall (NaN) in grey

    fig = Figure(figsize=(6, 4.5))
    ax = fig.subplots()
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-limit, vmax=limit)
    for s, (c, r) in enumerate(CELLS):
        x, y = c - 1, ROWS - r
        mark = "exit" if (c, r) in EXITS else ARROWS[int(policy[s])]
        colour = "white" if abs(V[s]) > 0.8 * limit else "black"  # readable on the darkest cells
        ax.text(x, y - 0.15, f"{V[s]:.3f}", ha="center", va="center", fontsize=12, color=colour)
        ax.text(x, y + 0.22, mark, ha="center", va="center", fontsize=14, color=colour)
    ax.text(WALL[0] - 1, ROWS - WALL[1], "wall", ha="center", va="center", color="white")
    ax.set_xticks(range(COLUMNS), [str(c) for c in range(1, COLUMNS + 1)])
    ax.set_yticks(range(ROWS), [str(r) for r in range(ROWS, 0, -1)])
    ax.set_xlabel("column")
    ax.set_ylabel("row")
    ax.set_title(title or "grid world: V and greedy policy")
    return save_figure(fig, path)
