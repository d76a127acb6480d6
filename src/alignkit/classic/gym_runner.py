"""Train a gymnasium agent from one config: ``GymConfig`` + ``run_gym`` (what ``alignkit classic gym`` runs).

``run_gym(config)`` builds the vector env, the agent named by ``config.algo`` (a table of builders, one per
algorithm), trains it for ``total_steps`` environment steps, evaluates the final policy, and writes into
``output_dir``:

- ``metrics.jsonl``: one JSON line per update (``phase``, ``update``, ``global_step``, episodic return stats
  of the episodes that ended in that update and the rolling mean of the last 20, the agent's losses,
  ``seconds`` since the start);
- ``learning_curve.png``: training return against environment steps, and the final evaluation;
- ``summary.json``: the returned summary (final eval return, wall time, steps);
- ``policy.pt``: the final policy (``{"env_id", "hidden_size", "state_dict"}``), loadable as a BC expert.

Returns: "episodic return" is the undiscounted return of a training episode (sampled actions, the current
policy); "eval return" is the mean over ``eval_episodes`` fresh episodes of the final policy (sampled
actions unless ``eval_deterministic``). For ``pref_ppo`` both are TRUE returns, never the learnt reward.
"""

from __future__ import annotations

import json
import math
import time
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path

import gymnasium as gym
import torch

from .agents.a2c import A2CAgent
from .agents.base import num_updates, train_on_policy
from .agents.bc import collect_demonstrations, fit_behaviour_cloning
from .agents.evaluation import evaluate_policy
from .agents.networks import Policy, QNet, RewardNet, ValueNet, is_discrete, make_policy, obs_dim
from .agents.ppo import PPOAgent
from .agents.preference import PreferencePPOAgent
from .agents.qac import QActorCriticAgent
from .agents.reinforce import ReinforceAgent
from .agents.rollout import Rollout, RolloutCollector, make_vec_env
from .agents.trpo import TRPOAgent
from .options import option
from .plotting import save_figure

__all__ = ["GymConfig", "run_gym", "ALGOS", "ALGO_DEFAULTS", "DISCRETE_ONLY"]

ALGOS: tuple[str, ...] = ("reinforce", "a2c", "qac", "ppo", "trpo", "bc", "pref_ppo")
#: Algorithms whose networks need a Discrete action space.
DISCRETE_ONLY: tuple[str, ...] = ("qac",)
#: Rollout length T and learning rate used when the config leaves them at 0. ``bc`` trains its expert with
#: PPO's. trpo's rate is the critic's (the policy moves by the trust-region step).
ALGO_DEFAULTS: dict[str, dict[str, float]] = {
    "reinforce": {"num_steps": 256, "learning_rate": 1e-3},
    "a2c": {"num_steps": 5, "learning_rate": 7e-4},
    "qac": {"num_steps": 5, "learning_rate": 7e-4},
    "ppo": {"num_steps": 128, "learning_rate": 2.5e-4},
    "trpo": {"num_steps": 512, "learning_rate": 1e-3},
    "bc": {"num_steps": 128, "learning_rate": 2.5e-4},
    "pref_ppo": {"num_steps": 128, "learning_rate": 2.5e-4},
}
ROLLING_EPISODES = 20


def _defaults_help(key: str) -> str:
    return ", ".join(f"{algo} {values[key]:g}" for algo, values in ALGO_DEFAULTS.items())


@dataclass
class GymConfig:
    """One gymnasium training run. The CLI is generated from these fields' metadata."""

    env_id: str = option("CartPole-v1", "gymnasium environment id (Box observations; Discrete or 1-d Box actions)")
    algo: str = option("ppo", "algorithm: reinforce, a2c, qac (Q actor-critic, discrete only), ppo, trpo, "
                       "bc (behaviour cloning of a PPO or given expert), pref_ppo (PPO on a learnt preference "
                       "reward)", choices=ALGOS)
    total_steps: int = option(100_000, "environment steps to train for (bc: the expert's PPO steps)")
    seed: int = option(1, "seed of torch, the environments' resets and the action spaces")
    num_envs: int = option(4, "parallel environments N")
    num_steps: int = option(0, "steps per environment per rollout T (0 = the algorithm's: "
                            f"{_defaults_help('num_steps')})")
    learning_rate: float = option(0.0, "Adam learning rate (trpo: the critic's; 0 = the algorithm's: "
                                  f"{_defaults_help('learning_rate')})")
    gamma: float = option(0.99, "discount factor")
    gae_lambda: float = option(0.95, "GAE lambda (a2c, ppo, trpo, pref_ppo); 1 = n-step returns")
    anneal_lr: bool = option(True, "ppo / pref_ppo: decay the learning rate linearly to 0")
    update_epochs: int = option(4, "ppo / pref_ppo: passes over each rollout")
    num_minibatches: int = option(4, "ppo / pref_ppo: minibatches per pass (trpo: critic minibatches)")
    clip_coef: float = option(0.2, "ppo / pref_ppo: ratio clip epsilon (also the value clip)")
    clip_vloss: bool = option(True, "ppo / pref_ppo: clip the value loss around the rollout-time values")
    ent_coef: float = option(0.01, "entropy bonus weight (reinforce, a2c, qac, ppo, pref_ppo)")
    vf_coef: float = option(0.5, "value-loss weight in the combined loss (a2c, ppo, pref_ppo)")
    max_grad_norm: float = option(0.5, "global gradient-norm clip (0 = off)")
    norm_adv: bool = option(True, "whiten advantages (ppo per minibatch, trpo and reinforce per batch; a2c never)")
    target_kl: float = option(0.0, "ppo / pref_ppo: stop the epochs once approx_kl exceeds this (0 = off)")
    max_kl: float = option(0.01, "trpo: trust-region radius on the mean KL(pi_old || pi)")
    cg_damping: float = option(0.1, "trpo: Fisher damping")
    cg_iters: int = option(10, "trpo: conjugate-gradient iterations")
    critic_epochs: int = option(10, "trpo: passes of critic regression per update")
    q_baseline: bool = option(False, "qac: weight grad log pi by Q(s,a) - E_pi Q(s,.) instead of Q(s,a)")
    bootstrap_truncated: bool = option(True, "bootstrap V(final observation) at time-limit truncations "
                                       "(False treats them as terminations: wrong, for comparison)")
    hidden_size: int = option(64, "width of the two hidden tanh layers of every network")
    bc_expert_checkpoint: str = option("", "bc: policy.pt of an earlier run to clone (empty = train a PPO expert "
                                       "for total_steps first)")
    bc_episodes: int = option(20, "bc: expert episodes to record")
    bc_expert_deterministic: bool = option(True, "bc: the expert demonstrates its most likely action")
    bc_epochs: int = option(30, "bc: passes over the demonstrations")
    bc_batch_size: int = option(256, "bc: state-action pairs per minibatch")
    bc_learning_rate: float = option(1e-3, "bc: Adam learning rate of the cloned policy")
    segment_length: int = option(25, "pref_ppo: steps per trajectory segment")
    pref_pairs_per_update: int = option(16, "pref_ppo: new labelled segment pairs per update")
    pref_buffer_size: int = option(4096, "pref_ppo: labelled pairs kept (FIFO)")
    pref_reward_updates: int = option(8, "pref_ppo: reward-model Adam steps per update")
    pref_batch_size: int = option(64, "pref_ppo: pairs per reward-model step")
    pref_temperature: float = option(1.0, "pref_ppo: synthetic labeller's Bradley-Terry temperature on true "
                                     "segment returns (0 = always the better segment)")
    reward_learning_rate: float = option(1e-3, "pref_ppo: Adam learning rate of the reward model")
    eval_episodes: int = option(20, "episodes of the final evaluation")
    eval_deterministic: bool = option(False, "evaluate the policy's most likely action instead of sampling")
    torch_threads: int = option(1, "torch CPU threads (small MLPs run fastest on 1)")
    output_dir: str = option("runs/classic-gym", "where metrics.jsonl, learning_curve.png, summary.json go")

    def resolved(self, key: str) -> float:
        """``num_steps`` / ``learning_rate`` with 0 replaced by the algorithm's default."""
        value = getattr(self, key)
        return ALGO_DEFAULTS[self.algo][key] if value == 0 else value

    def validate(self) -> None:
        """Raise ValueError naming the setting (and the valid choices) for a run that cannot work."""
        if self.algo not in ALGOS:
            raise ValueError(f"algo={self.algo!r} is not one of {', '.join(ALGOS)}")
        positive = ("total_steps", "num_envs", "update_epochs", "num_minibatches", "critic_epochs", "cg_iters",
                    "hidden_size", "bc_episodes", "bc_epochs", "bc_batch_size", "segment_length",
                    "pref_pairs_per_update", "pref_buffer_size", "pref_batch_size", "eval_episodes", "torch_threads")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_steps", "learning_rate", "ent_coef", "vf_coef", "max_grad_norm", "target_kl",
                     "pref_reward_updates", "pref_temperature"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {getattr(self, name)}")
        for name in ("clip_coef", "max_kl", "bc_learning_rate", "reward_learning_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.cg_damping < 0:
            raise ValueError(f"cg_damping must be >= 0, got {self.cg_damping}")
        if self.bc_expert_checkpoint and not Path(self.bc_expert_checkpoint).is_file():
            raise ValueError(f"bc_expert_checkpoint: no such file {self.bc_expert_checkpoint!r} (a policy.pt that "
                             "alignkit classic gym wrote)")
        observation_space, action_space = _spaces(self.env_id)
        obs_dim(observation_space)
        if not is_discrete(action_space) and self.algo in DISCRETE_ONLY:
            supported = ", ".join(a for a in ALGOS if a not in DISCRETE_ONLY)
            raise ValueError(f"algo={self.algo!r} needs a Discrete action space, but env_id={self.env_id!r} has "
                             f"{action_space}; for continuous actions choose one of {supported}")
        num_steps = int(self.resolved("num_steps"))
        if self.algo != "bc" or not self.bc_expert_checkpoint:
            num_updates(self.total_steps, self.num_envs, num_steps)
        if self.algo in ("ppo", "pref_ppo", "bc") and self.num_envs * num_steps < 2 * self.num_minibatches:
            raise ValueError(f"num_envs x num_steps = {self.num_envs * num_steps} transitions cannot fill "
                             f"num_minibatches={self.num_minibatches} minibatches of at least 2")
        if self.algo == "pref_ppo" and self.segment_length > num_steps:
            raise ValueError(f"segment_length={self.segment_length} is longer than a rollout (num_steps={num_steps})")


def _spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    envs = make_vec_env(env_id, 1)
    try:
        return envs.single_observation_space, envs.single_action_space
    finally:
        envs.close()


def _hidden(config: GymConfig) -> tuple[int, int]:
    return (config.hidden_size, config.hidden_size)


def _ppo(config: GymConfig, policy: Policy, d_obs: int) -> PPOAgent:
    return PPOAgent(policy, ValueNet(d_obs, _hidden(config)), learning_rate=config.resolved("learning_rate"),
                    anneal_lr=config.anneal_lr, gamma=config.gamma, gae_lambda=config.gae_lambda,
                    update_epochs=config.update_epochs, num_minibatches=config.num_minibatches,
                    clip_coef=config.clip_coef, clip_vloss=config.clip_vloss, ent_coef=config.ent_coef,
                    vf_coef=config.vf_coef, max_grad_norm=config.max_grad_norm, norm_adv=config.norm_adv,
                    target_kl=config.target_kl)


def _build_reinforce(config, policy, d_obs, action_space):
    return ReinforceAgent(policy, ValueNet(d_obs, _hidden(config)), learning_rate=config.resolved("learning_rate"),
                          gamma=config.gamma, ent_coef=config.ent_coef, max_grad_norm=config.max_grad_norm,
                          normalize_advantages=config.norm_adv)


def _build_a2c(config, policy, d_obs, action_space):
    return A2CAgent(policy, ValueNet(d_obs, _hidden(config)), learning_rate=config.resolved("learning_rate"),
                    gamma=config.gamma, gae_lambda=config.gae_lambda, ent_coef=config.ent_coef,
                    vf_coef=config.vf_coef, max_grad_norm=config.max_grad_norm)


def _build_qac(config, policy, d_obs, action_space):
    lr = config.resolved("learning_rate")
    return QActorCriticAgent(policy, QNet(d_obs, int(action_space.n), _hidden(config)), learning_rate=lr,
                             critic_learning_rate=lr, gamma=config.gamma, ent_coef=config.ent_coef,
                             q_baseline=config.q_baseline, max_grad_norm=config.max_grad_norm)


def _build_ppo(config, policy, d_obs, action_space):
    return _ppo(config, policy, d_obs)


def _build_trpo(config, policy, d_obs, action_space):
    return TRPOAgent(policy, ValueNet(d_obs, _hidden(config)), max_kl=config.max_kl, damping=config.cg_damping,
                     cg_iters=config.cg_iters, critic_learning_rate=config.resolved("learning_rate"),
                     critic_epochs=config.critic_epochs, critic_minibatches=config.num_minibatches,
                     gamma=config.gamma, gae_lambda=config.gae_lambda, norm_adv=config.norm_adv,
                     max_grad_norm=config.max_grad_norm)


def _build_pref_ppo(config, policy, d_obs, action_space):
    return PreferencePPOAgent(_ppo(config, policy, d_obs), RewardNet(d_obs, action_space, _hidden(config)),
                              reward_learning_rate=config.reward_learning_rate, segment_length=config.segment_length,
                              pairs_per_update=config.pref_pairs_per_update, buffer_size=config.pref_buffer_size,
                              reward_updates=config.pref_reward_updates, reward_batch_size=config.pref_batch_size,
                              temperature=config.pref_temperature)


# algo -> builder(config, policy, obs_dim, action_space) -> agent. bc trains its expert with PPO.
AGENT_BUILDERS = {"reinforce": _build_reinforce, "a2c": _build_a2c, "qac": _build_qac, "ppo": _build_ppo,
                  "trpo": _build_trpo, "bc": _build_ppo, "pref_ppo": _build_pref_ppo}


def build_agent(config: GymConfig, observation_space: gym.Space, action_space: gym.Space):
    """The agent of ``config.algo`` with a fresh policy (bc: the PPO agent that trains the expert)."""
    policy = make_policy(observation_space, action_space, _hidden(config))
    return AGENT_BUILDERS[config.algo](config, policy, obs_dim(observation_space), action_space)


def _finite(x):
    """JSON-safe: NaN / inf become None."""
    return x if not isinstance(x, float) or math.isfinite(x) else None


class _MetricsLog:
    """Appends one JSON line per update to ``metrics.jsonl`` and keeps the rows for the plot."""

    def __init__(self, path: Path, start: float):
        self.path, self.start = path, start
        self.rows: list[dict] = []
        self.recent: deque[float] = deque(maxlen=ROLLING_EPISODES)
        path.write_text("")

    def write(self, row: dict) -> None:
        row = {key: _finite(value) for key, value in row.items()}
        row["seconds"] = time.perf_counter() - self.start
        self.rows.append(row)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def on_update(self, phase: str):
        def callback(index: int, rollout: Rollout, metrics: dict[str, float]) -> None:
            episodes = rollout.episode_returns
            self.recent.extend(episodes)
            stats = {"episodes": len(episodes),
                     "episodic_return_mean": sum(episodes) / len(episodes) if episodes else None,
                     "episodic_return_min": min(episodes) if episodes else None,
                     "episodic_return_max": max(episodes) if episodes else None,
                     "return_mean_last20": sum(self.recent) / len(self.recent) if self.recent else None}
            self.write({"phase": phase, "update": index, "global_step": rollout.global_step, **stats, **metrics})
        return callback


def _plot(rows: list[dict], summary: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: the user's matplotlib backend is left alone

    fig = Figure(figsize=(11, 4))
    ax_ret, ax_loss = fig.subplots(1, 2)
    rl = [r for r in rows if r["phase"] in ("train", "expert") and r["return_mean_last20"] is not None]
    if rl:
        label = "expert (PPO) training return" if rl[0]["phase"] == "expert" else "training return"
        ax_ret.plot([r["global_step"] for r in rl], [r["return_mean_last20"] for r in rl],
                    label=f"{label}, mean of last {ROLLING_EPISODES} episodes")
    ax_ret.axhline(summary["final_eval_return_mean"], color="k", linestyle="--",
                   label=f"final eval ({summary['eval_episodes']} episodes): {summary['final_eval_return_mean']:.1f}")
    if "expert_eval_return_mean" in summary:
        ax_ret.axhline(summary["expert_eval_return_mean"], color="tab:green", linestyle=":",
                       label=f"expert eval: {summary['expert_eval_return_mean']:.1f}")
    ax_ret.set_xlabel("environment steps")
    ax_ret.set_ylabel("undiscounted return" + (" (true reward)" if summary["algo"] == "pref_ppo" else ""))
    ax_ret.set_title(f"{summary['algo']} on {summary['env_id']} (seed {summary['seed']})")
    ax_ret.legend(fontsize=8)
    bc_rows = [r for r in rows if r["phase"] == "bc"]
    if bc_rows:  # behaviour cloning: the fit's negative log-likelihood per epoch
        ax_loss.plot([r["update"] + 1 for r in bc_rows], [r["bc_loss"] for r in bc_rows], label="bc_loss")
        ax_loss.set_xlabel("behaviour-cloning epoch")
    else:
        for key in ("policy_loss", "value_loss", "td_loss", "rm_loss"):
            pts = [(r["global_step"], r[key]) for r in rows if r.get(key) is not None]
            if pts:
                ax_loss.plot(*zip(*pts, strict=True), label=key)
        ax_loss.set_xlabel("environment steps")
        ax_loss.set_yscale("symlog")
    ax_loss.set_title("losses")
    ax_loss.legend(fontsize=8)
    save_figure(fig, path)


def _train(config: GymConfig, log: _MetricsLog, phase: str):
    """Build and train the agent of ``config``; returns (agent, updates, global_step)."""
    envs = make_vec_env(config.env_id, config.num_envs, config.seed)
    try:
        agent = build_agent(config, envs.single_observation_space, envs.single_action_space)
        collector = RolloutCollector(envs, int(config.resolved("num_steps")), config.seed, config.bootstrap_truncated)
        updates = train_on_policy(agent, collector, config.total_steps, log.on_update(phase))
        return agent, updates, collector.global_step
    finally:
        envs.close()


def _load_policy(path: str, config: GymConfig) -> Policy:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint["env_id"] != config.env_id:
        raise ValueError(f"bc_expert_checkpoint={path!r} was trained on {checkpoint['env_id']}, not env_id="
                         f"{config.env_id!r}")
    observation_space, action_space = _spaces(config.env_id)
    policy = make_policy(observation_space, action_space, (checkpoint["hidden_size"],) * 2)
    policy.load_state_dict(checkpoint["state_dict"])
    return policy


def _run_bc(config: GymConfig, log: _MetricsLog, summary: dict) -> Policy:
    """Expert (trained with PPO or loaded) -> demonstrations -> maximum-likelihood fit. Returns the clone."""
    if config.bc_expert_checkpoint:
        expert, summary["updates"], summary["global_step"] = _load_policy(config.bc_expert_checkpoint, config), 0, 0
    else:
        agent, summary["updates"], summary["global_step"] = _train(config, log, "expert")
        expert = agent.policy
    expert_eval = evaluate_policy(expert, config.env_id, config.eval_episodes, config.seed + 10_000,
                                  config.eval_deterministic)
    demos = collect_demonstrations(expert, config.env_id, config.bc_episodes, config.seed + 20_000,
                                   config.bc_expert_deterministic)
    observation_space, action_space = _spaces(config.env_id)
    clone = make_policy(observation_space, action_space, _hidden(config))
    fit_behaviour_cloning(clone, demos["obs"], demos["actions"], config.bc_epochs, config.bc_batch_size,
                          config.bc_learning_rate,
                          on_epoch=lambda epoch, m: log.write({"phase": "bc", "update": epoch, **m}))
    summary.update(expert_eval_return_mean=expert_eval["mean"], demonstration_return_mean=demos["mean"],
                   demonstration_pairs=int(demos["obs"].shape[0]))
    return clone


def run_gym(config: GymConfig) -> dict:
    """Train ``config.algo`` on ``config.env_id``, evaluate, write the run files; returns the summary dict.

    Summary keys: env_id, algo, seed, total_steps, global_step (env steps taken), updates, wall_time_s,
    final_eval_return_mean / _std (``eval_episodes`` episodes of the final policy), eval_episodes,
    eval_deterministic, train_return_last20 (mean of the last 20 training episodes), config; bc adds
    expert_eval_return_mean, demonstration_return_mean, demonstration_pairs, bc_fraction_of_expert;
    pref_ppo adds pref_labels and pref_heldout_agreement (last update).
    """
    config.validate()
    threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    try:
        return _run(config)
    finally:
        torch.set_num_threads(threads)


def _run(config: GymConfig) -> dict:
    torch.manual_seed(config.seed)
    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    log = _MetricsLog(out / "metrics.jsonl", start)
    summary: dict = {"env_id": config.env_id, "algo": config.algo, "seed": config.seed,
                     "total_steps": config.total_steps}
    if config.algo == "bc":
        policy = _run_bc(config, log, summary)
    else:
        agent, summary["updates"], summary["global_step"] = _train(config, log, "train")
        policy = agent.policy
    evaluation = evaluate_policy(policy, config.env_id, config.eval_episodes, config.seed + 10_000,
                                 config.eval_deterministic)
    trained = [r for r in log.rows if r["phase"] in ("train", "expert")]
    summary.update(
        wall_time_s=time.perf_counter() - start,
        final_eval_return_mean=evaluation["mean"], final_eval_return_std=evaluation["std"],
        eval_episodes=config.eval_episodes, eval_deterministic=config.eval_deterministic,
        train_return_last20=trained[-1]["return_mean_last20"] if trained else None,
    )
    if config.algo == "bc":
        summary["bc_fraction_of_expert"] = evaluation["mean"] / summary["expert_eval_return_mean"]
    if config.algo == "pref_ppo":
        summary["pref_labels"] = trained[-1].get("pref_labels")
        summary["pref_heldout_agreement"] = trained[-1].get("pref_heldout_agreement")
    summary["config"] = asdict(config)
    torch.save({"env_id": config.env_id, "hidden_size": config.hidden_size, "state_dict": policy.state_dict()},
               out / "policy.pt")
    _plot(log.rows, summary, out / "learning_curve.png")
    (out / "summary.json").write_text(json.dumps({k: _finite(v) for k, v in summary.items()}, indent=2) + "\n")
    return summary

