"""The reward-KL frontier: how much reward a policy gained for how far it moved from its reference policy.

Each point is a policy: ``{"run": label, "method": family, "step": int or None, "kl": nats, "reward": learnt
reward, "gold": gold score or None}``, where ``kl`` is KL(pi || pi_ref) of whole responses. One curve per run:

* Best-of-N from the reference policy, for n = 1, 2, 4, ...: ``kl`` is the analytic bound log n - (n-1)/n
  (``trainers.best_of_n.kl_bound``), the scores are the mean over prompts of the best-of-n completion's
  (:func:`best_of_n_points`);
* a trained policy at several checkpoints (PPO at one beta, DPO at one beta...): its sampled completions'
  scores and the k1 estimate mean_i sum_t [log pi(y_it) - log pi_ref(y_it)] of the sequence KL;
* a run directory's ``metrics.jsonl`` (:func:`points_from_metrics`): its ``kl`` and ``score`` (and ``gold``, if
  logged) at every logged step.

Reward over-optimisation (Gao et al. 2022) shows as a curve whose learnt reward still rises with KL while its
gold score falls; :func:`plot_frontier` draws the two side by side on a shared KL axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["best_of_n_points", "points_from_metrics", "plot_frontier", "METHOD_COLOURS"]

# one colour family per method (matplotlib's tab palette), so PPO at three betas reads as one method
METHOD_COLOURS = {"Best-of-N": "#222222", "PPO": "#1f77b4", "PPO, no KL": "#d62728", "DPO": "#2ca02c",
                  "REINFORCE": "#9467bd", "TRPO": "#8c564b"}


def best_of_n_points(reward: torch.Tensor, gold: torch.Tensor | None, ns: Sequence[int],
                     run: str = "Best-of-N") -> list[dict]:
    """Best-of-n for each n in ``ns``: the mean learnt reward and gold score of the completion the learnt reward
    picks among n, estimated from N samples per prompt.

    Args:
        reward: [P, N] learnt rewards of N i.i.d. completions for each of P prompts.
        gold: [P, N] gold scores of the same completions, or None.
        ns: the n to report; each must divide N (the N samples are cut into N/n disjoint groups of n, each
            group's pick counted once: every sample is used, and each group is an independent best-of-n draw).

    Returns one point per n with ``kl = log n - (n-1)/n`` (nats) and ``step = n``.
    """
    from ..trainers.best_of_n import kl_bound

    if reward.dim() != 2 or (gold is not None and gold.shape != reward.shape):
        raise ValueError(f"reward must be [P, N] and gold the same shape, got {tuple(reward.shape)} and "
                         f"{None if gold is None else tuple(gold.shape)}")
    prompts, samples = reward.shape
    points = []
    for n in ns:
        if n < 1 or samples % n:
            raise ValueError(f"n={n}: must be >= 1 and divide the {samples} samples per prompt")
        groups = reward.reshape(prompts, samples // n, n)
        pick = groups.argmax(-1, keepdim=True)  # [P, N/n, 1]: the learnt reward's choice in each group
        point = {"run": run, "method": "Best-of-N", "step": n, "kl": kl_bound(n),
                 "reward": float(groups.gather(-1, pick).mean()), "gold": None}
        if gold is not None:
            point["gold"] = float(gold.reshape(prompts, samples // n, n).gather(-1, pick).mean())
        points.append(point)
    return points


def points_from_metrics(records: list[dict], run: str, method: str | None = None) -> list[dict]:
    """The frontier of one run directory from its metrics records: a point at every record with finite ``kl``
    and ``score`` (``gold`` taken from a ``gold`` or ``eval/gold`` key when logged). [] when the run logs no
    sequence KL (offline trainers: SFT, reward model, DPO)."""
    points = []
    for r in records:
        kl, score = r.get("kl"), r.get("score")
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (kl, score)):
            continue
        gold = r.get("gold", r.get("eval/gold"))
        points.append({"run": run, "method": method or run, "step": r.get("step"), "kl": float(kl),
                       "reward": float(score), "gold": float(gold) if isinstance(gold, (int, float)) else None})
    return points


def plot_frontier(points: list[dict], path: str | Path, title: str = "Reward-KL frontier") -> Path:
    """A PNG of the frontier: gold score (left, when any point has one) and learnt reward (right) against KL to
    the reference (nats, shared x axis); one line per run in the order first seen, coloured by method, a
    marker per checkpoint, the last checkpoint ringed; Best-of-N dashed and labelled with its n."""
    from matplotlib.figure import Figure

    from .report import save_figure

    if not points:
        raise ValueError("no frontier points to plot")
    runs: dict[str, list[dict]] = {}
    for p in points:
        runs.setdefault(p["run"], []).append(p)
    panels = [("gold", "gold score (hidden labeller)")] if any(p["gold"] is not None for p in points) else []
    panels.append(("reward", "learnt reward (reward model)"))
    fig = Figure(figsize=(6.2 * len(panels), 4.6))
    axes = fig.subplots(1, len(panels), squeeze=False, sharex=True)[0]
    shades: dict[str, int] = {}
    for run, pts in runs.items():
        method = pts[0]["method"]
        colour = METHOD_COLOURS.get(method, None)
        shade = shades[method] = shades.get(method, -1) + 1
        bon = method == "Best-of-N"
        for ax, (key, _) in zip(axes, panels, strict=True):
            xy = [(p["kl"], p[key]) for p in pts if p[key] is not None]
            if not xy:
                continue
            xs, ys = zip(*xy, strict=True)
            line, = ax.plot(xs, ys, linestyle="--" if bon else "-", marker="s" if bon else "o", markersize=3.5,
                            linewidth=1.6, color=colour, alpha=1.0 - 0.28 * min(shade, 2), label=run)
            ax.plot(xs[-1:], ys[-1:], marker="o", markersize=9, fillstyle="none", color=line.get_color())
            if bon:  # label every other n: 1, 4, 16, 64
                for i, (p, x, y) in enumerate(zip(pts, xs, ys, strict=True)):
                    if i % 2 == 0 or i == len(pts) - 1:
                        ax.annotate(f"n={p['step']}", (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7)
    wide = max(p["kl"] for p in points) > 10  # KL spans decades: linear up to 1 nat, logarithmic beyond
    for ax, (_, label) in zip(axes, panels, strict=True):
        if wide:
            ax.set_xscale("symlog", linthresh=1.0, linscale=0.6)
        ax.set_xlabel("KL to the reference policy (nats per response" + (", log scale above 1)" if wide else ")"))
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.axvline(0, color="#999", linewidth=0.8)
    axes[-1].legend(fontsize=8, loc="best")
    return save_figure(fig, title + " (a marker per checkpoint, the last one ringed)", path, dpi=90, fontsize=11)
