"""Gymnasium agents: policy-gradient and actor-critic methods on classic-control environments.

Each agent file states its exact variant at the top, with citations:

- :mod:`.reinforce`: REINFORCE with reward-to-go and a learnt V(s) baseline (seed 004).
- :mod:`.a2c`: advantage actor-critic with a V critic and GAE / n-step advantages (seed 004).
- :mod:`.qac`: actor-critic with a Q(s, a) critic learnt by TD (seed 002, Algorithm 3).
- :mod:`.ppo`: PPO-clip with CleanRL's implementation details (seed 002 / 004, Schulman et al. 2017).
- :mod:`.trpo`: TRPO with the core natural-gradient step (Schulman et al. 2015; seed 002).
- :mod:`.bc`: behaviour cloning from expert demonstrations (seed 002).
- :mod:`.preference`: PPO on a reward model learnt from segment preferences (Christiano et al. 2017).

Shared pieces: :mod:`.networks` (policies, V, Q, reward nets), :mod:`.rollout` (vector envs and the
collector that keeps terminated and truncated apart), :mod:`.evaluation`, :mod:`.base` (the loop).
All formulas (GAE, reward-to-go, the PPO and BT losses, CG / TRPO) come from :mod:`alignkit.core`.
"""

from .a2c import A2CAgent
from .base import Agent, num_updates, train_on_policy
from .bc import collect_demonstrations, fit_behaviour_cloning
from .evaluation import evaluate_policy, run_episodes
from .networks import CategoricalPolicy, GaussianPolicy, Policy, QNet, RewardNet, ValueNet, make_policy
from .ppo import PPOAgent
from .preference import PreferencePPOAgent
from .qac import QActorCriticAgent
from .reinforce import ReinforceAgent
from .rollout import Rollout, RolloutCollector, make_vec_env
from .trpo import TRPOAgent

__all__ = [
    "A2CAgent",
    "Agent",
    "CategoricalPolicy",
    "GaussianPolicy",
    "PPOAgent",
    "Policy",
    "PreferencePPOAgent",
    "QActorCriticAgent",
    "QNet",
    "ReinforceAgent",
    "RewardNet",
    "Rollout",
    "RolloutCollector",
    "TRPOAgent",
    "ValueNet",
    "collect_demonstrations",
    "evaluate_policy",
    "fit_behaviour_cloning",
    "make_policy",
    "make_vec_env",
    "num_updates",
    "run_episodes",
    "train_on_policy",
]
