"""``alignkit report RUN_A RUN_B ... output_dir=DIR``: one page comparing several run directories.

The page holds the reward-KL frontier of the runs that log a sequence KL and a score (online trainers: each
logged step is a point, see :func:`alignkit.training.frontier.points_from_metrics`), then, for each plot group
(score, KL, losses, length), the metrics that two or more runs logged, on shared axes, one colour per run, and
a link to each run's own report. Like every report it is written from the run directories alone and references
only files that exist (the runs' reports by relative path).
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from pathlib import Path

from .frontier import plot_frontier, points_from_metrics
from .report import PLOT_GROUPS, group_of, html_image, html_table, plot_comparison, read_metrics, write_report

__all__ = ["run_labels", "write_comparison"]

COMPARED_GROUPS = ("score", "kl", "losses", "length")
MAX_KEYS_PER_FIGURE = 6


def run_labels(run_dirs: Sequence[str | Path]) -> list[str]:
    """A short label per run: its directory name, or its path when two runs share a name."""
    names = [Path(d).resolve().name for d in run_dirs]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, run_dirs, strict=True)]


def _trainer_of(run_dir: Path) -> str | None:
    config = run_dir / "config.json"
    if config.exists():
        return json.loads(config.read_text()).get("trainer")
    return None


def write_comparison(run_dirs: Sequence[str | Path], output_dir: str | Path) -> Path:
    """Write ``<output_dir>/report.html`` (and its ``plots/``) comparing ``run_dirs``; returns its path."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    dirs = [Path(d) for d in run_dirs]
    labels = run_labels(dirs)
    records = {label: read_metrics(d / "metrics.jsonl") for label, d in zip(labels, dirs, strict=True)}
    trainers = {label: _trainer_of(d) for label, d in zip(labels, dirs, strict=True)}
    rows = [{"run": label, "trainer": trainers[label] or "", "logged steps": len(records[label]),
             "directory": str(d)} for label, d in zip(labels, dirs, strict=True)]
    sections = [("Runs", html_table(rows))]
    points = [p for label in labels for p in points_from_metrics(records[label], label, method=trainers[label])]
    if points:
        drawn = sorted({p["run"] for p in points}, key=labels.index)
        left_out = [label for label in labels if label not in drawn]
        note = (f"<p class='muted'>not drawn (no kl and score logged): {html.escape(', '.join(left_out))}</p>"
                if left_out else "")
        plot_frontier(points, out / "plots" / "frontier.png", title="Score against KL to the reference")
        sections.append(("The reward-KL frontier",
                         "<p>Each logged step of a run is a point: its mean score against its sequence KL to the "
                         "reference policy (nats per response).</p>" + note
                         + html_image("plots/frontier.png", "reward-KL frontier")))
    for group in sorted((g for g in PLOT_GROUPS if g.name in COMPARED_GROUPS), key=lambda g: g.order):
        keys = {}
        for run_records in records.values():
            for key in dict.fromkeys(k for r in run_records for k in r):
                if group_of(key) == group.name:
                    keys[key] = keys.get(key, 0) + 1
        shared = [k for k, count in keys.items() if count >= 2][:MAX_KEYS_PER_FIGURE]
        png = plot_comparison(records, shared, out / "plots" / f"compare_{group.name}.png", title=group.title)
        if png is not None:
            sections.append((f"{group.title}, runs on shared axes",
                             html_image(png.relative_to(out).as_posix(), group.title)))
    links = "".join(f"<li><a href='{html.escape(Path(os.path.relpath(d / 'report.html', out)).as_posix())}'>"
                    f"{html.escape(label)}</a></li>"
                    for label, d in zip(labels, dirs, strict=True) if (d / "report.html").exists())
    if links:
        sections.append(("Reports of each run", f"<ul>{links}</ul>"))
    return write_report(out, title=f"alignkit: {len(dirs)} runs compared", sections=sections)
