"""Evaluate a policy: the mean *undiscounted* return over ``episodes`` fresh episodes (and record them).

``episodes`` sub-environments run one episode each, in parallel (reset seeds ``seed, seed + 1, ...``), so
the result depends only on the policy, the seed and the torch RNG state. Returns are the environment's own
rewards (for preference-based RL: the *true* return, not the learnt one).
"""

from __future__ import annotations

import numpy as np
import torch

from .networks import Policy
from .rollout import make_vec_env

__all__ = ["evaluate_policy", "run_episodes"]


def evaluate_policy(
    policy: Policy,
    env_id: str,
    episodes: int = 10,
    seed: int = 10_000,
    deterministic: bool = False,
    max_steps: int = 100_000,
) -> dict[str, float | list[float]]:
    """Mean undiscounted return of ``policy`` over ``episodes`` episodes of ``env_id``.

    Returns ``{"mean", "std", "returns": [...], "lengths": [...]}`` (see :func:`run_episodes`).
    """
    out = run_episodes(policy, env_id, episodes, seed, deterministic, max_steps)
    out.pop("obs")
    out.pop("actions")
    return out


def run_episodes(
    policy: Policy,
    env_id: str,
    episodes: int = 10,
    seed: int = 10_000,
    deterministic: bool = False,
    max_steps: int = 100_000,
    record: bool = False,
) -> dict:
    """Run ``episodes`` episodes of ``policy`` on ``env_id``, optionally recording (s_t, a_t).

    Args:
        policy: the policy to evaluate (put in eval mode for the call, gradients off).
        env_id: gymnasium id.
        episodes: number of episodes (one per sub-environment).
        seed: reset seed of the first sub-environment.
        deterministic: True takes the mode of pi(.|s) (argmax / Gaussian mean); False samples, the policy
            as it was trained.
        max_steps: safety cap on vector steps (an episode without a time limit is an error, not a hang).
        record: also return the visited states and the actions taken (behaviour cloning's demonstrations).
    Returns:
        ``{"mean": float, "std": float, "returns": [episodes floats], "lengths": [...], "obs": [K, D] or None,
        "actions": [K] / [K, M] or None}`` with K the total number of steps of all episodes.
    """
    if episodes < 1:
        raise ValueError(f"eval episodes must be >= 1, got {episodes}")
    envs = make_vec_env(env_id, episodes, seed)
    try:
        obs, _ = envs.reset(seed=seed)
        returns = np.zeros(episodes)
        lengths = np.zeros(episodes, dtype=np.int64)
        running = np.ones(episodes, dtype=bool)
        was_training = policy.training
        policy.eval()
        steps = 0
        seen_obs, seen_actions = [], []
        while running.any():
            if steps >= max_steps:
                raise RuntimeError(f"evaluation of {env_id} did not finish {episodes} episodes in {max_steps} steps")
            obs_t = torch.as_tensor(obs, dtype=torch.float32).reshape(episodes, -1)
            with torch.no_grad():
                actions, _ = policy.act(obs_t, deterministic)
            if record:
                keep = torch.as_tensor(running)
                seen_obs.append(obs_t[keep])
                seen_actions.append(actions[keep])
            obs, reward, terminated, truncated, _ = envs.step(policy.env_action(actions))
            returns += np.where(running, reward, 0.0)
            lengths += running
            running &= ~(np.asarray(terminated, bool) | np.asarray(truncated, bool))
            steps += 1
        policy.train(was_training)
    finally:
        envs.close()
    return {"mean": float(returns.mean()), "std": float(returns.std()), "returns": returns.tolist(),
            "lengths": lengths.tolist(), "obs": torch.cat(seen_obs) if record else None,
            "actions": torch.cat(seen_actions) if record else None}
