"""Gymnasium agents: smoke runs of every algorithm, truncation bootstrapping on an analytic environment,
reproducibility, config validation, and small learning checks (PPO, behaviour cloning, preference model)."""

from __future__ import annotations

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.distributions import Categorical

from alignkit.classic.agents import (
    CategoricalPolicy,
    PPOAgent,
    RolloutCollector,
    ValueNet,
    collect_demonstrations,
    evaluate_policy,
    fit_behaviour_cloning,
    make_policy,
    make_vec_env,
    train_on_policy,
)
from alignkit.classic.agents.networks import RewardNet
from alignkit.classic.agents.preference import (
    PreferenceBuffer,
    ordering_agreement,
    sample_segments,
    split_pairs,
    train_reward_model,
)
from alignkit.classic.gym_runner import ALGOS, GymConfig, build_agent, run_gym

# ---------------------------------------------------------------------------------------------- helpers


class CyclingEnv(gym.Env):
    """Never terminates, reward 1 per step, observation one-hot(t mod 4) (SB3 ``test_gae``'s infinite-horizon
    env). Under a time limit H the true (time-limit-free) value of every state is 1 / (1 - gamma)."""

    observation_space = gym.spaces.Box(0.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        obs = np.zeros(4, np.float32)
        obs[self.t % 4] = 1.0
        return obs

    def step(self, action):
        self.t += 1
        return self._obs(), 1.0, False, False, {}


def cycling_envs(mode: gym.vector.AutoresetMode, num_envs: int = 4, limit: int = 10) -> gym.vector.VectorEnv:
    return gym.vector.SyncVectorEnv([lambda: gym.wrappers.TimeLimit(CyclingEnv(), limit)] * num_envs,
                                    autoreset_mode=mode)


class LinearExpert(CategoricalPolicy):
    """A given CartPole expert: push right iff w . obs > 0 (nearly deterministic logits). Scores 500."""

    def __init__(self):
        super().__init__(4, 2)
        self.w = torch.tensor([0.0, 0.5, 1.0, 0.5])

    def distribution(self, obs):
        s = 50.0 * (obs @ self.w)
        return Categorical(logits=torch.stack([-s, s], -1))


def _read_metrics(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


MODES = [gym.vector.AutoresetMode.NEXT_STEP, gym.vector.AutoresetMode.SAME_STEP]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny MLPs: one thread is fastest, and several oversubscribe a shared machine badly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

# ---------------------------------------------------------------------------------------------- collector


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
def test_collector_records_final_observation_and_skips_reset_steps(mode):
    envs = cycling_envs(mode, num_envs=2, limit=10)
    collector = RolloutCollector(envs, num_steps=25, seed=0)
    rollout = collector.collect(CategoricalPolicy(4, 2))
    # 25 steps from t=0: episodes end at steps 9 and 19 (t = 10 and 20 in the env's count).
    assert rollout.truncated.sum().item() == 2 * 2
    assert not rollout.terminated.any()
    final = rollout.next_obs[rollout.truncated]
    # The final observation of a 10-step episode is one-hot(10 mod 4 = 2), never the reset one-hot(0).
    assert torch.equal(final, torch.tensor([[0.0, 0.0, 1.0, 0.0]]).expand_as(final))
    expected_invalid = 2 * 2 if mode == gym.vector.AutoresetMode.NEXT_STEP else 0
    assert (~rollout.valid).sum().item() == expected_invalid
    assert rollout.flat(rollout.rewards).eq(1.0).all()  # reset steps (reward 0) are never transitions
    assert rollout.episode_lengths == [10, 10, 10, 10] and rollout.episode_returns == [10.0] * 4


def test_collector_bootstrap_flag_turns_truncation_into_termination():
    collector = RolloutCollector(cycling_envs(MODES[0], 1), num_steps=12, seed=0, bootstrap_truncated=False)
    rollout = collector.collect(CategoricalPolicy(4, 2))
    assert rollout.terminated.sum().item() == 1 and not rollout.truncated.any()


# ------------------------------------------------------------------------------ analytic bootstrapping


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.name)
@pytest.mark.parametrize("bootstrap", [True, False], ids=["bootstrap", "truncation-as-termination"])
def test_value_of_time_limited_infinite_horizon_env(mode, bootstrap):
    """DESIGN.md habit 10 (SB3 test_gae): V(s0) -> 1/(1-gamma) only when truncation is bootstrapped.

    gamma = 0.9, time limit 10: the time-limit-free value is 10. Treating the limit as termination, state 0
    is visited at t = 0, 4, 8 with finite-horizon returns (1 - 0.9^10)/0.1 = 6.51, (1 - 0.9^6)/0.1 = 4.69 and
    (1 - 0.9^2)/0.1 = 1.90, mean 4.37 (GAE's lambda-returns through the shared V land near it).
    """
    torch.manual_seed(0)
    value_net = ValueNet(4)
    agent = PPOAgent(CategoricalPolicy(4, 2), value_net, learning_rate=3e-3, anneal_lr=False, gamma=0.9,
                     gae_lambda=0.95)
    collector = RolloutCollector(cycling_envs(mode), num_steps=32, seed=0, bootstrap_truncated=bootstrap)
    train_on_policy(agent, collector, total_steps=4 * 32 * 40)
    with torch.no_grad():
        v_s0 = float(value_net(torch.eye(4)[:1]))
    if bootstrap:
        assert abs(v_s0 - 10.0) < 0.5
    else:
        assert 3.5 < v_s0 < 6.0


# ----------------------------------------------------------------------------------------- smoke runs

SMOKE = [(algo, "CartPole-v1") for algo in ALGOS] + [("ppo", "Pendulum-v1"), ("trpo", "Pendulum-v1"),
                                                     ("bc", "Pendulum-v1")] + [
    # the other classic-control tasks: discrete 3-action Acrobot / MountainCar, 1-d continuous MountainCar
    ("a2c", "Acrobot-v1"), ("qac", "MountainCar-v0"), ("ppo", "MountainCarContinuous-v0")]


@pytest.mark.parametrize(("algo", "env_id"), SMOKE)
def test_run_gym_smoke(algo, env_id, tmp_path):
    config = GymConfig(env_id=env_id, algo=algo, total_steps=2048, num_steps=64 if algo != "trpo" else 256,
                       eval_episodes=3, bc_episodes=2, bc_epochs=3, segment_length=20, output_dir=str(tmp_path))
    summary = run_gym(config)
    for name in ("metrics.jsonl", "learning_curve.png", "summary.json", "policy.pt"):
        assert (tmp_path / name).stat().st_size > 0
    rows = _read_metrics(tmp_path / "metrics.jsonl")
    assert rows and all(math.isfinite(r["seconds"]) for r in rows)
    loss_keys = {"policy_loss", "value_loss", "td_loss", "bc_loss", "rm_loss", "surrogate_after"}
    losses = [r[k] for r in rows for k in loss_keys if k in r]
    assert losses and all(v is not None and math.isfinite(v) for v in losses)
    assert math.isfinite(summary["final_eval_return_mean"])
    assert json.loads((tmp_path / "summary.json").read_text())["algo"] == algo
    if algo != "bc":
        assert summary["global_step"] == 2048 // (4 * config.num_steps) * 4 * config.num_steps


@pytest.mark.parametrize(("algo", "env_id"), [(a, "CartPole-v1") for a in ALGOS if a != "bc"]
                         + [("ppo", "Pendulum-v1"), ("a2c", "Pendulum-v1")])
def test_agents_change_parameters_with_finite_metrics(algo, env_id):
    torch.manual_seed(0)
    config = GymConfig(env_id=env_id, algo=algo, num_steps=64, segment_length=20)
    envs = make_vec_env(env_id, 4, seed=0)
    agent = build_agent(config, envs.single_observation_space, envs.single_action_space)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    collected = []
    train_on_policy(agent, RolloutCollector(envs, 64, seed=0), 4 * 64 * 2, lambda i, r, m: collected.append(m))
    assert all(math.isfinite(v) for m in collected for k, v in m.items() if not k.startswith("pref_"))
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.policy.parameters(), strict=True))


# ------------------------------------------------------------------------------------ reproducibility


def test_same_seed_same_results(tmp_path):
    def metrics(seed, name):
        run_gym(GymConfig(algo="ppo", seed=seed, total_steps=2048, eval_episodes=3, output_dir=str(tmp_path / name)))
        rows = _read_metrics(tmp_path / name / "metrics.jsonl")
        return [{k: v for k, v in r.items() if k != "seconds" and not k.startswith("time/")} for r in rows]

    first, second, other = metrics(7, "a"), metrics(7, "b"), metrics(8, "c")
    assert first == second
    assert first != other
    a = json.loads((tmp_path / "a" / "summary.json").read_text())
    b = json.loads((tmp_path / "b" / "summary.json").read_text())
    assert a["final_eval_return_mean"] == b["final_eval_return_mean"]


# ---------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("overrides", "words"), [
    ({"algo": "dqn"}, ["algo='dqn'", "ppo", "pref_ppo"]),
    ({"env_id": "NoSuchEnv-v0"}, ["env_id='NoSuchEnv-v0'", "CartPole-v1"]),
    ({"total_steps": 100}, ["total_steps=100", "num_envs x num_steps"]),
    ({"env_id": "Pendulum-v1", "algo": "qac"}, ["algo='qac'", "Discrete", "ppo"]),
    ({"gamma": 1.5}, ["gamma"]),
])
def test_bad_settings_raise_value_error(overrides, words, tmp_path):
    with pytest.raises(ValueError) as info:
        run_gym(GymConfig(output_dir=str(tmp_path), **overrides))
    for word in words:
        assert word in str(info.value)


def test_every_config_field_has_help():
    from dataclasses import fields

    for f in fields(GymConfig):
        assert f.metadata.get("help"), f.name
    assert dict((f.name, f.metadata.get("choices")) for f in fields(GymConfig))["algo"] == ALGOS


# ---------------------------------------------------------------------------------------- learning


def test_behaviour_cloning_reaches_most_of_the_experts_return():
    torch.manual_seed(0)
    expert = LinearExpert()
    demos = collect_demonstrations(expert, "CartPole-v1", episodes=8, seed=0)
    assert demos["mean"] == 500.0 and demos["obs"].shape[0] == 8 * 500
    envs = make_vec_env("CartPole-v1", 1)
    clone = make_policy(envs.single_observation_space, envs.single_action_space)
    history = fit_behaviour_cloning(clone, demos["obs"], demos["actions"], epochs=15, batch_size=128,
                                    learning_rate=3e-3)
    assert history[-1]["bc_loss"] < history[0]["bc_loss"]
    assert history[-1]["accuracy"] > 0.95
    expert_return = evaluate_policy(expert, "CartPole-v1", 10, seed=123, deterministic=True)["mean"]
    clone_return = evaluate_policy(clone, "CartPole-v1", 10, seed=123, deterministic=True)["mean"]
    assert clone_return >= 0.8 * expert_return


def test_preference_reward_model_orders_held_out_segments():
    """r_hat trained with the core Bradley-Terry loss on synthetic labels ranks unseen segment pairs by
    their true return (pairs with equal true return are left out of the score)."""
    torch.manual_seed(0)
    envs = make_vec_env("CartPole-v1", 8, seed=0)
    policy = make_policy(envs.single_observation_space, envs.single_action_space)
    collector = RolloutCollector(envs, num_steps=128, seed=0)
    train_segments = sample_segments(collector.collect(policy), 25, 2 * 512)
    held_out_segments = sample_segments(collector.collect(policy), 25, 2 * 256)
    reward_net = RewardNet(4, envs.single_action_space)
    buffer = PreferenceBuffer(1024)
    chosen, rejected, _ = split_pairs(train_segments, temperature=1.0)
    buffer.add(chosen, rejected)
    test_a, test_b, _ = split_pairs(held_out_segments, temperature=1.0)
    before = ordering_agreement(reward_net, test_a, test_b)
    optimiser = torch.optim.Adam(reward_net.parameters(), lr=1e-3)
    metrics = train_reward_model(reward_net, optimiser, buffer, steps=300, batch_size=64)
    after = ordering_agreement(reward_net, test_a, test_b)
    assert math.isfinite(metrics["rm_loss"])
    assert after > 0.8, (before, after)


@pytest.mark.slow
def test_ppo_learns_cartpole(tmp_path):
    summary = run_gym(GymConfig(algo="ppo", seed=1, total_steps=50_000, eval_episodes=20,
                                output_dir=str(tmp_path)))
    assert summary["final_eval_return_mean"] > 150, summary


def test_tied_segments_are_equally_preferable_and_stored_in_both_orders():
    """Christiano et al. 2017, section 2.2.3: equally preferable segments get mu uniform; in both orders their
    BT loss 1/2[-log sigma(d) - log sigma(-d)] has gradient sigma(d) - 1/2, pulling d to 0."""
    from alignkit.classic.agents.preference import Segments

    length = 3
    returns = torch.tensor([3.0, 1.0, 2.0, 3.0, 2.0, 2.0])  # pairs (0,3) tie, (1,4) 2 beats 1, (2,5) tie
    segments = Segments(torch.arange(6.0)[:, None, None].expand(6, length, 4).clone(),
                        torch.zeros(6, length, dtype=torch.long), torch.ones(6, length), returns)
    chosen, rejected, flipped = split_pairs(segments, temperature=0.0)
    pairs = sorted(zip(chosen.obs[:, 0, 0].tolist(), rejected.obs[:, 0, 0].tolist(), strict=True))
    assert pairs == [(0.0, 3.0), (2.0, 5.0), (3.0, 0.0), (4.0, 1.0), (5.0, 2.0)]  # ties twice, 4 beats 1 once
    assert flipped == 0.0
