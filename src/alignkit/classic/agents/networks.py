"""Small MLPs for gymnasium agents: policies (Categorical / diagonal Gaussian), V(s), Q(s, .), r(s, a).

Shapes: ``B`` = batch of states, ``D`` = flattened observation size, ``K`` = number of discrete actions,
``M`` = dimension of a continuous action.

Initialisation follows CleanRL ``ppo.py`` (implementation detail 2, "orthogonal initialization of weights
and constant initialization of biases"): hidden layers orthogonal with gain sqrt(2), the policy's output
layer gain 0.01 (near-uniform initial policy), value outputs gain 1, biases 0. Hidden activation tanh, two
hidden layers of 64 (CleanRL's ``Agent`` for classic control).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal

__all__ = [
    "mlp",
    "Policy",
    "CategoricalPolicy",
    "GaussianPolicy",
    "ValueNet",
    "QNet",
    "RewardNet",
    "make_policy",
    "obs_dim",
    "is_discrete",
]


def obs_dim(space: gym.Space) -> int:
    """Flattened size D of a Box observation space."""
    if not isinstance(space, gym.spaces.Box):
        raise ValueError(f"observation space must be a Box, got {space}")
    return int(np.prod(space.shape))


def is_discrete(space: gym.Space) -> bool:
    """True for ``Discrete`` action spaces, False for ``Box``; anything else is an error."""
    if isinstance(space, gym.spaces.Discrete):
        return True
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 1:
        return False
    raise ValueError(f"action space must be Discrete or a 1-d Box, got {space}")


def _layer(n_in: int, n_out: int, gain: float) -> nn.Linear:
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.constant_(layer.bias, 0.0)
    return layer


def mlp(n_in: int, n_out: int, hidden: Sequence[int] = (64, 64), out_gain: float = 1.0) -> nn.Sequential:
    """``[B, n_in] -> [B, n_out]``: Linear-tanh blocks, orthogonal init (gain sqrt 2), last layer gain ``out_gain``."""
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [_layer(width, h, math.sqrt(2.0)), nn.Tanh()]
        width = h
    layers.append(_layer(width, n_out, out_gain))
    return nn.Sequential(*layers)


class Policy(nn.Module, ABC):
    """pi(a|s). Subclasses define :meth:`distribution`; actions are ``[B]`` long or ``[B, M]`` float."""

    discrete: bool

    @abstractmethod
    def distribution(self, obs: torch.Tensor) -> Distribution:
        """``obs [B, D]`` -> a distribution with batch shape ``[B]`` (Gaussian: event shape ``[M]``)."""

    @abstractmethod
    def log_prob(self, dist: Distribution, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) ``[B]`` (summed over the M independent action dimensions of a Gaussian)."""

    @abstractmethod
    def entropy(self, dist: Distribution) -> torch.Tensor:
        """H(pi(.|s)) ``[B]``."""

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Sample (or take the mode of) pi(.|s): ``obs [B, D]`` -> ``(actions, log_probs [B])``."""
        dist = self.distribution(obs)
        actions = self.mode(dist) if deterministic else dist.sample()
        return actions, self.log_prob(dist, actions)

    @abstractmethod
    def mode(self, dist: Distribution) -> torch.Tensor:
        """The most likely action: argmax for Categorical, the mean for a Gaussian."""

    @abstractmethod
    def env_action(self, actions: torch.Tensor) -> np.ndarray:
        """Convert sampled actions to what ``env.step`` takes (a Gaussian's are clipped to the bounds)."""


class CategoricalPolicy(Policy):
    """pi(a|s) = softmax(logits(s))_a over K actions; ``logits: [B, D] -> [B, K]``."""

    discrete = True

    def __init__(self, d_obs: int, n_actions: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.net = mlp(d_obs, n_actions, hidden, out_gain=0.01)

    def distribution(self, obs: torch.Tensor) -> Categorical:
        return Categorical(logits=self.net(obs))

    def log_prob(self, dist: Distribution, actions: torch.Tensor) -> torch.Tensor:
        return dist.log_prob(actions.long())

    def entropy(self, dist: Distribution) -> torch.Tensor:
        return dist.entropy()

    def mode(self, dist: Distribution) -> torch.Tensor:
        return dist.probs.argmax(-1)

    def env_action(self, actions: torch.Tensor) -> np.ndarray:
        return actions.cpu().numpy().astype(np.int64)


class GaussianPolicy(Policy):
    """pi(a|s) = N(mu(s), diag(exp(2 log_std))) with a state-independent ``log_std [M]`` (CleanRL
    ``ppo_continuous_action.py``). ``mu: [B, D] -> [B, M]``. Samples are unbounded; :meth:`env_action`
    clips them to the action box (the log-prob stays that of the unclipped sample, as in CleanRL).
    """

    discrete = False

    def __init__(self, d_obs: int, space: gym.spaces.Box, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        m = int(space.shape[0])
        self.mu = mlp(d_obs, m, hidden, out_gain=0.01)
        self.log_std = nn.Parameter(torch.zeros(m))
        self.register_buffer("low", torch.as_tensor(space.low, dtype=torch.float32))
        self.register_buffer("high", torch.as_tensor(space.high, dtype=torch.float32))

    def distribution(self, obs: torch.Tensor) -> Normal:
        mean = self.mu(obs)
        return Normal(mean, self.log_std.exp().expand_as(mean))

    def log_prob(self, dist: Distribution, actions: torch.Tensor) -> torch.Tensor:
        return dist.log_prob(actions).sum(-1)

    def entropy(self, dist: Distribution) -> torch.Tensor:
        return dist.entropy().sum(-1)

    def mode(self, dist: Distribution) -> torch.Tensor:
        return dist.mean

    def env_action(self, actions: torch.Tensor) -> np.ndarray:
        return torch.maximum(torch.minimum(actions, self.high), self.low).cpu().numpy()


class ValueNet(nn.Module):
    """V(s): ``obs [B, D] -> [B]``."""

    def __init__(self, d_obs: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.net = mlp(d_obs, 1, hidden, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs).squeeze(-1)


class QNet(nn.Module):
    """Q(s, .) for K discrete actions: ``obs [B, D] -> [B, K]`` (a DQN-style head, one output per action)."""

    def __init__(self, d_obs: int, n_actions: int, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.net = mlp(d_obs, n_actions, hidden, out_gain=1.0)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)

    def q(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Q(s, a): ``obs [B, D], actions [B] -> [B]``."""
        return self.net(obs).gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)


class RewardNet(nn.Module):
    """Learnt reward r_hat(s, a): ``obs [B, D], actions [B] or [B, M] -> [B]``.

    Discrete actions enter one-hot, continuous ones as they are; the MLP sees ``[obs, action]``.
    """

    def __init__(self, d_obs: int, action_space: gym.Space, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.discrete = is_discrete(action_space)
        self.n_act = int(action_space.n) if self.discrete else int(action_space.shape[0])
        self.net = mlp(d_obs + self.n_act, 1, hidden, out_gain=1.0)

    def forward(self, obs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            a = torch.nn.functional.one_hot(actions.long(), self.n_act).to(obs.dtype)
        else:
            a = actions.to(obs.dtype)
        return self.net(torch.cat([obs, a], dim=-1)).squeeze(-1)


def make_policy(observation_space: gym.Space, action_space: gym.Space, hidden: Sequence[int] = (64, 64)) -> Policy:
    """A Categorical policy for ``Discrete`` actions, a diagonal Gaussian for a 1-d ``Box``."""
    d = obs_dim(observation_space)
    if is_discrete(action_space):
        return CategoricalPolicy(d, int(action_space.n), hidden)
    return GaussianPolicy(d, action_space, hidden)
