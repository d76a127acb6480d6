"""Vector environments and the rollout collector shared by every on-policy agent.

Shapes: ``N`` environments, ``T`` steps per rollout, ``D`` flattened observation size, ``M`` continuous
action size. A :class:`Rollout` is env-major with time on dim 1 (``[N, T, ...]``), the layout of
:func:`alignkit.core.gae_from_transitions` (time on the last dim of ``[N, T]``).

Episode ends (Pardo et al. 2018, "Time Limits in Reinforcement Learning"; DESIGN.md habit 3):

* ``terminated[n, t]``: the next state is terminal, its value is 0.
* ``truncated[n, t]``: a time limit cut the episode; the next state is an ordinary state whose value is
  bootstrapped. ``next_obs[n, t]`` is then the episode's *final* observation, never the reset one, so
  ``next_values[n, t] = V(final_obs)``.
* ``bootstrap_truncated=False`` records truncations as terminations (the common bug, kept as a switch so
  that a test can show what it costs).

gymnasium 1.x vector environments reset finished sub-environments by themselves (``autoreset_mode``):

* ``NEXT_STEP`` (the 1.x default, and the only mode of the fast ``CartPoleVectorEnv``): the step that ends
  an episode returns the final observation as ``obs``; the *next* call ignores the action, resets, and
  returns reward 0 and no flags. That reset step is not a transition: it is stored with ``valid = False``
  and every loss skips it.
* ``SAME_STEP``: the step that ends an episode returns the reset observation, and the final one in
  ``infos["final_obs"]`` (mask ``infos["_final_obs"]``). Every step is a transition.
* ``DISABLED`` is refused.

``global_step`` counts calls to ``env.step`` times N, reset steps included, so a budget in steps is an
upper bound on the transitions an agent learnt from.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from alignkit.core import gae_from_transitions

from .networks import Policy

__all__ = ["make_vec_env", "Rollout", "RolloutCollector", "registered_env_ids"]

ValueFn = Callable[[torch.Tensor], torch.Tensor]


def registered_env_ids() -> list[str]:
    """Ids of gymnasium's registry without a namespace (CartPole-v1, Pendulum-v1, ...), sorted."""
    return sorted(name for name in gym.registry if "/" not in name)


def make_vec_env(env_id: str, num_envs: int, seed: int | None = None) -> gym.vector.VectorEnv:
    """``num_envs`` copies of ``env_id``: the environment's own vector implementation when it has one (fast
    CartPole), else a ``SyncVectorEnv`` in ``SAME_STEP`` autoreset mode. Unknown ids raise ValueError.

    ``seed`` seeds the action space (observations are seeded by the first ``reset(seed=...)``).
    """
    try:
        spec = gym.spec(env_id)
    except gym.error.Error as e:
        raise ValueError(
            f"env_id={env_id!r} is not a registered gymnasium environment ({e}); choose one of "
            f"{', '.join(registered_env_ids())}"
        ) from None
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}")
    if spec.vector_entry_point is not None:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="vector_entry_point")
    else:
        envs = gym.make_vec(env_id, num_envs=num_envs, vectorization_mode="sync",
                            vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP})
    if seed is not None:
        envs.action_space.seed(seed)
    return envs


def _autoreset_mode(envs: gym.vector.VectorEnv) -> gym.vector.AutoresetMode:
    mode = envs.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
    mode = gym.vector.AutoresetMode(mode)
    if mode == gym.vector.AutoresetMode.DISABLED:
        raise ValueError("vector envs with autoreset_mode=DISABLED are not supported; use NEXT_STEP or SAME_STEP")
    return mode


@dataclass
class Rollout:
    """T steps of N environments. All tensors are ``[N, T]`` unless noted.

    obs, next_obs: ``[N, T, D]``; next_obs is the true s_{t+1} (the final observation at an episode end).
    actions: ``[N, T]`` (discrete) or ``[N, T, M]``; logprobs: log pi_old(a_t|s_t) at sampling time.
    rewards, terminated, truncated (bool), valid (bool: False at NEXT_STEP reset steps).
    values, next_values: V(s_t), V(s_{t+1}) from the ``value_fn`` given to :meth:`RolloutCollector.collect`
    (zeros without one). episode_returns / episode_lengths: undiscounted returns of episodes that ended in
    this rollout. global_step: env steps taken so far, this rollout included.
    """

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor
    rewards: torch.Tensor
    terminated: torch.Tensor
    truncated: torch.Tensor
    valid: torch.Tensor
    next_obs: torch.Tensor
    values: torch.Tensor
    next_values: torch.Tensor
    global_step: int
    episode_returns: list[float] = field(default_factory=list)
    episode_lengths: list[int] = field(default_factory=list)

    @property
    def num_envs(self) -> int:
        return self.rewards.shape[0]

    @property
    def num_steps(self) -> int:
        return self.rewards.shape[1]

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, T, ...]`` -> ``[V, ...]``: the valid transitions only, env-major order."""
        return x[self.valid]

    def gae(self, gamma: float, lam: float, rewards: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(advantages, returns)`` ``[N, T]`` by :func:`alignkit.core.gae_from_transitions` on this rollout.

        ``rewards`` replaces the environment's rewards (preference-based RL); terminations stay the env's.
        Reset steps (``valid = False``) follow an episode end, whose ``done`` flag cuts the recursion, so
        they never reach a real step's advantage; their own entries are meaningless and must be masked.
        """
        r = self.rewards if rewards is None else rewards
        return gae_from_transitions(r, self.values, self.next_values, self.terminated, self.truncated, gamma, lam)

    def compute_values(self, value_fn: ValueFn) -> None:
        """Fill ``values`` and ``next_values`` with one batched, gradient-free pass of ``value_fn``."""
        n, t = self.rewards.shape
        with torch.no_grad():
            self.values = value_fn(self.obs.reshape(n * t, -1)).reshape(n, t)
            self.next_values = value_fn(self.next_obs.reshape(n * t, -1)).reshape(n, t)


class RolloutCollector:
    """Steps a vector env with a policy, ``num_steps`` steps per :meth:`collect`; keeps the env state between
    calls (episodes continue across rollouts, as in CleanRL).

    Args:
        envs: a gymnasium vector env (NEXT_STEP or SAME_STEP autoreset).
        num_steps: T, steps per rollout.
        seed: seeds the first reset (sub-env i gets seed + i).
        bootstrap_truncated: True: truncation keeps its flag so that V(final_obs) is bootstrapped.
            False: truncation is recorded as termination (value 0 after a time limit; wrong, see module doc).
    """

    def __init__(self, envs: gym.vector.VectorEnv, num_steps: int, seed: int, bootstrap_truncated: bool = True):
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        self.envs = envs
        self.num_steps = num_steps
        self.bootstrap_truncated = bootstrap_truncated
        self.mode = _autoreset_mode(envs)
        self.num_envs = envs.num_envs
        obs, _ = envs.reset(seed=seed)
        self.obs = torch.as_tensor(obs, dtype=torch.float32).reshape(self.num_envs, -1)
        self.prev_done = np.zeros(self.num_envs, dtype=bool)
        self.ep_return = np.zeros(self.num_envs, dtype=np.float64)
        self.ep_length = np.zeros(self.num_envs, dtype=np.int64)
        self.global_step = 0

    def _true_next_obs(self, next_obs: np.ndarray, done: np.ndarray, infos: dict) -> np.ndarray:
        """s_{t+1} of every sub-env: in SAME_STEP mode the final observation replaces the reset one."""
        if self.mode != gym.vector.AutoresetMode.SAME_STEP or not done.any():
            return next_obs
        out = np.array(next_obs, copy=True)
        has_final = infos.get("_final_obs", done)
        for i in np.flatnonzero(has_final):
            out[i] = infos["final_obs"][i]
        return out

    def collect(self, policy: Policy, value_fn: ValueFn | None = None) -> Rollout:
        """Run ``num_steps`` steps of ``policy`` (sampled actions, no gradient) and return the rollout."""
        n, t_max = self.num_envs, self.num_steps
        obs_buf, next_obs_buf, act_buf = [], [], []
        logp = torch.zeros(n, t_max)
        rewards = torch.zeros(n, t_max)
        term = torch.zeros(n, t_max, dtype=torch.bool)
        trunc = torch.zeros(n, t_max, dtype=torch.bool)
        valid = torch.ones(n, t_max, dtype=torch.bool)
        returns, lengths = [], []
        next_step_mode = self.mode == gym.vector.AutoresetMode.NEXT_STEP
        for t in range(t_max):
            with torch.no_grad():
                actions, logprobs = policy.act(self.obs)
            next_obs, reward, terminated, truncated, infos = self.envs.step(policy.env_action(actions))
            reward = np.asarray(reward, dtype=np.float64)
            terminated, truncated = np.asarray(terminated, bool), np.asarray(truncated, bool)
            done = terminated | truncated
            is_valid = ~self.prev_done if next_step_mode else np.ones(n, dtype=bool)
            true_next = self._true_next_obs(np.asarray(next_obs), done, infos)
            obs_buf.append(self.obs)
            next_obs_buf.append(torch.as_tensor(true_next, dtype=torch.float32).reshape(n, -1))
            act_buf.append(actions)
            logp[:, t] = logprobs
            rewards[:, t] = torch.as_tensor(reward, dtype=torch.float32)
            if self.bootstrap_truncated:
                term[:, t] = torch.as_tensor(terminated)
                trunc[:, t] = torch.as_tensor(truncated)
            else:
                term[:, t] = torch.as_tensor(done)
            valid[:, t] = torch.as_tensor(is_valid)
            self.ep_return += np.where(is_valid, reward, 0.0)
            self.ep_length += is_valid
            for i in np.flatnonzero(done & is_valid):
                returns.append(float(self.ep_return[i]))
                lengths.append(int(self.ep_length[i]))
                self.ep_return[i], self.ep_length[i] = 0.0, 0
            if next_step_mode:
                self.prev_done = done & is_valid
            self.obs = torch.as_tensor(next_obs, dtype=torch.float32).reshape(n, -1)
        self.global_step += n * t_max
        rollout = Rollout(
            obs=torch.stack(obs_buf, 1), actions=torch.stack(act_buf, 1), logprobs=logp, rewards=rewards,
            terminated=term, truncated=trunc, valid=valid, next_obs=torch.stack(next_obs_buf, 1),
            values=torch.zeros(n, t_max), next_values=torch.zeros(n, t_max), global_step=self.global_step,
            episode_returns=returns, episode_lengths=lengths,
        )
        if value_fn is not None:
            rollout.compute_values(value_fn)
        return rollout
