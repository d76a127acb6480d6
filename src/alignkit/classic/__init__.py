"""Classic reinforcement learning: the small, exactly solvable problems the LM methods grow out of.

The modules are imported by name; this package file imports nothing, so ``import alignkit.classic`` stays
free and a module needing an optional dependency never loads by accident.

- ``alignkit.classic.mdp``: :class:`~alignkit.classic.mdp.TabularMDP` and dynamic programming on it
  (policy evaluation, value iteration, policy iteration), the Bellman equations of lecture seed 004.
- ``alignkit.classic.gridworld``: the 4x3 grid world of seed 004 / Russell & Norvig (AIMA Fig. 17.1),
  built as a ``TabularMDP``, with text tables, arrow policies and a PNG plot.
- ``alignkit.classic.bandits``: the 10-armed testbed of Sutton & Barto ch. 2, vectorised over runs
  (epsilon-greedy, optimistic initial values, UCB, gradient bandit).
- ``alignkit.classic.tabular_cli``: one config dataclass and one ``run_*`` function per command
  (``alignkit classic gridworld``, ``alignkit classic bandit``).

Other modules of this package (gymnasium agents and environments) document themselves.

Modules here import only the standard library, numpy, torch, matplotlib (lazily, for plots) and
``alignkit.core`` (see ``tests/test_architecture.py`` and DESIGN.md).
"""
