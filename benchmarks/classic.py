"""Classic-control suite: PPO, TRPO and preference-based PPO on CartPole-v1, 3 seeds each.

Run ``python -m benchmarks classic`` (or ``python -m benchmarks.classic``) from the repo root; ``--quick``
runs one seed for a few thousand steps (a smoke test, no targets judged).

Each run is one :func:`alignkit.classic.gym_runner.run_gym` call with its defaults (CleanRL's PPO CartPole
settings: 4 envs x 128 steps, lr 2.5e-4 annealed, 4 epochs x 4 minibatches, gamma 0.99, lambda 0.95, clip 0.2,
ent 0.01, vf 0.5; TRPO: 4 envs x 512 steps, max_kl 0.01, critic Adam 1e-3 x 10 epochs; pref_ppo: PPO's
settings on a reward model learnt from 16 synthetic segment pairs (25 steps) per update).

"Return" of a run = its **final evaluation**: the mean undiscounted return of 20 fresh episodes of the final
policy with sampled actions (``run_gym``'s ``final_eval_return_mean``). Also reported: the mean of the last
20 training episodes, and the first step at which that rolling mean reached 475.

Targets (issue 7): every PPO seed >= 475 after 500k steps; every TRPO seed >= 475 after 200k steps;
preference PPO's mean return >= 80% of PPO's mean return (same 500k budget, true env reward).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from pathlib import Path

from alignkit.classic.gym_runner import GymConfig, run_gym
from benchmarks.common import Table, fmt

ENV_ID = "CartPole-v1"
SEEDS = (1, 2, 3)
#: algo -> environment-step budget of the full suite.
BUDGETS = {"ppo": 500_000, "trpo": 200_000, "pref_ppo": 500_000}
SOLVED = 475.0
PREF_FRACTION = 0.8


def _first_step_at(metrics_path: Path, threshold: float) -> int | None:
    """First global_step whose rolling mean of the last 20 training episodes is >= threshold."""
    for line in metrics_path.read_text().splitlines():
        row = json.loads(line)
        if row.get("return_mean_last20") is not None and row["return_mean_last20"] >= threshold:
            return row["global_step"]
    return None


def run_one(algo: str, seed: int, total_steps: int, out_dir: Path) -> dict:
    config = GymConfig(env_id=ENV_ID, algo=algo, seed=seed, total_steps=total_steps,
                       output_dir=str(out_dir / f"{algo}-seed{seed}"))
    summary = run_gym(config)
    return {
        "algo": algo, "seed": seed, "total_steps": total_steps, "global_step": summary["global_step"],
        "final_eval_return": summary["final_eval_return_mean"], "final_eval_std": summary["final_eval_return_std"],
        "train_return_last20": summary["train_return_last20"],
        "first_step_rolling_ge_475": _first_step_at(Path(config.output_dir) / "metrics.jsonl", SOLVED),
        "wall_time_s": summary["wall_time_s"],
        "seconds_per_100k_steps": summary["wall_time_s"] / summary["global_step"] * 100_000,
        "pref_heldout_agreement": summary.get("pref_heldout_agreement"),
    }


def run(quick: bool = False) -> dict:
    seeds = SEEDS[:1] if quick else SEEDS
    budgets = {algo: 8192 for algo in BUDGETS} if quick else dict(BUDGETS)
    rows = []
    with tempfile.TemporaryDirectory(prefix="alignkit-classic-bench-") as tmp:
        for algo, steps in budgets.items():
            for seed in seeds:
                row = run_one(algo, seed, steps, Path(tmp))
                print(f"  {algo} seed {seed}: eval {row['final_eval_return']:.1f}, last-20 train "
                      f"{row['train_return_last20']:.1f}, {row['wall_time_s']:.0f} s", file=sys.stderr, flush=True)
                rows.append(row)
    mean = {algo: statistics.mean(r["final_eval_return"] for r in rows if r["algo"] == algo) for algo in budgets}
    targets = []
    if not quick:
        for algo in ("ppo", "trpo"):
            worst = min(r["final_eval_return"] for r in rows if r["algo"] == algo)
            targets.append({"target": f"{algo}: every seed's return after {budgets[algo] // 1000}k steps",
                            "measured": worst, "threshold": f">= {SOLVED:g}", "pass": worst >= SOLVED})
        ratio = mean["pref_ppo"] / mean["ppo"]
        targets.append({"target": "pref_ppo mean return / ppo mean return (500k steps, true reward)",
                        "measured": ratio, "threshold": f">= {PREF_FRACTION:g}", "pass": ratio >= PREF_FRACTION})
    return {"config": {"env_id": ENV_ID, "seeds": list(seeds), "budgets": budgets, "eval_episodes": 20,
                       "eval": "mean undiscounted return of 20 episodes of the final policy, sampled actions"},
            "rows": rows, "mean_return": mean, "targets": targets}


def tables(result: dict) -> list[Table]:
    rows = [[r["algo"], r["seed"], f"{r['global_step'] // 1000}k", fmt(r["final_eval_return"], ".1f"),
             fmt(r["final_eval_std"], ".1f"), fmt(r["train_return_last20"], ".1f"),
             "-" if r["first_step_rolling_ge_475"] is None else f"{r['first_step_rolling_ge_475'] // 1000}k",
             fmt(r["wall_time_s"], ".0f"), fmt(r["seconds_per_100k_steps"], ".1f")] for r in result["rows"]]
    out = [Table(f"Classic control on {result['config']['env_id']}",
                 ["algo", "seed", "steps", "eval return", "eval std", "last-20 train", "rolling >= 475 at",
                  "wall s", "s / 100k steps"], rows,
                 ["eval return: " + result["config"]["eval"],
                  "last-20 train: mean return of the last 20 training episodes"])]
    if result["targets"]:
        out.append(Table("Targets", ["target", "measured", "threshold", "result"],
                         [[t["target"], fmt(t["measured"], ".3g"), t["threshold"], "PASS" if t["pass"] else "FAIL"]
                          for t in result["targets"]]))
    return out


if __name__ == "__main__":
    from benchmarks.__main__ import main

    raise SystemExit(main(["classic", *sys.argv[1:]]))
