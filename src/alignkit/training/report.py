"""``report.html``: one page per run directory, openable in a browser with no server.

The page is built from what the run directory already holds, so it can be (re)written at any time, also
for a run that stopped early (``alignkit report RUN_DIR``):

* ``metrics.jsonl`` -> PNG plots under ``plots/`` (matplotlib, Agg backend), one figure per group:
  score / reward, KL, losses, response length, other diagnostics, seconds per stage;
* ``samples.jsonl`` -> a table of sample completions (the first and the last step that wrote samples);
* ``resolved_config.yaml`` or ``config.json`` -> the settings;
* an optional ``summary`` dict and extra sections given by the caller (the quickstart's table).

Every file the HTML references is written before the HTML or checked to exist; paths are relative to the
run directory, so the directory can be copied or zipped as a whole. Nothing is fetched from the network.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .metrics import read_jsonl as _read_jsonl

__all__ = ["PLOT_GROUPS", "read_metrics", "read_samples", "metric_series", "group_of", "plot_metrics",
           "plot_comparison", "save_figure", "smooth", "axis_label", "write_report", "append_samples", "html_table",
           "html_image"]


@dataclass(frozen=True)
class PlotGroup:
    """One figure of the report: the metric keys whose name matches ``pattern`` (first group wins)."""

    name: str
    title: str
    pattern: str
    order: int  # position on the page


# A key goes to the first group whose pattern it matches (so "value_loss" is a loss, not a value);
# "data/" and "skipped" keys are bookkeeping and not plotted.
PLOT_GROUPS: tuple[PlotGroup, ...] = (
    PlotGroup("losses", "Losses", r"loss", 2),
    PlotGroup("kl", "KL to the reference and KL control",
              r"(^|[/_])(kl|approx_kl|kl_coef|non_score_reward)($|[/_])", 1),
    PlotGroup("score", "Score / reward", r"^(eval/)?(score|score_std|accuracy|margin|reward_chosen|reward_rejected|"
                                         r"rewards/.*|total_reward|gold.*|learnt_reward|return.*)$", 0),
    PlotGroup("length", "Response length and EOS rate", r"^(eval/)?(response_length|eos_rate|tokens)$", 3),
    PlotGroup("time", "Seconds per stage", r"^time/", 5),
    PlotGroup("other", "Other diagnostics", r"^(?!data/|skipped)", 4),
)


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (non-finite values come back as floats)."""
    return [{k: float(v) if isinstance(v, str) and v in _NON_FINITE else v for k, v in record.items()}
            for record in _read_jsonl(path)]


_NON_FINITE = ("nan", "inf", "-inf", "NaN", "Infinity", "-Infinity")  # how MetricsLogger writes them


def _step_of(record: dict):
    """The x value of a record: ``step`` (trainers) or ``global_step`` (classic agents: environment steps)."""
    return record.get("step", record.get("global_step"))


def read_samples(path: str | Path) -> list[dict]:
    """The rows of a ``samples.jsonl``."""
    return _read_jsonl(path)


def append_samples(run_dir: str | Path, step: int, rows: Sequence[dict]) -> None:
    """Append sample rows (``{"prompt", "completion", ...}``) tagged with ``step`` to ``samples.jsonl``."""
    path = Path(run_dir) / "samples.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for row in rows:
            f.write(json.dumps({"step": step, **row}) + "\n")


def metric_series(records: list[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """``{key: (steps, values)}`` for every numeric metric, in first-seen order."""
    series: dict[str, tuple[list[float], list[float]]] = {}
    for r in records:
        step = _step_of(r)
        if step is None:
            continue
        for k, v in r.items():
            if k in ("step", "global_step", "time_s") or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            xs, ys = series.setdefault(k, ([], []))
            xs.append(float(step))
            ys.append(float(v))
    return series


def group_of(key: str) -> str | None:
    for group in PLOT_GROUPS:
        if re.search(group.pattern, key):
            return group.name
    return None


# units of the y axis, by metric name (first match wins); metrics not listed are in their own units
_UNITS = ((r"(^|[/_])(kl|approx_kl)$|non_score_reward", "nats"), (r"^time/", "s"),
          (r"response_length|tokens", "tokens"), (r"accuracy|eos_rate|clipfrac|fraction|rate$", "fraction"),
          (r"entropy", "nats per token"))


def axis_label(key: str) -> str:
    """The y-axis label of a metric: its name and unit, e.g. ``"kl (nats)"``, ``"time/generate (s)"``."""
    for pattern, unit in _UNITS:
        if re.search(pattern, key):
            return f"{key} ({unit})"
    return key


def smooth(values: Sequence[float], weight: float = 0.8) -> list[float]:
    """Exponential moving average with TensorBoard's debiasing: s_t = m_t / (1 - w^t), m_t = w m_{t-1} + (1-w) y_t,
    so the first point is the first value (no pull toward 0)."""
    out, m = [], 0.0
    for t, y in enumerate(values, start=1):
        m = weight * m + (1 - weight) * y
        out.append(m / (1 - weight ** t))
    return out


SMOOTH_FROM = 12  # curves with at least this many points are drawn smoothed, the raw values faint behind


def _draw(ax, xs, ys, label=None, colour=None) -> None:
    """One curve: a marker per point when there are few; else the smoothed line over the raw one (faint)."""
    if len(xs) < 3:
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.5, color=colour, label=label)
    elif len(xs) < SMOOTH_FROM:
        ax.plot(xs, ys, linewidth=1.5, color=colour, label=label)
    else:
        raw, = ax.plot(xs, ys, linewidth=0.8, alpha=0.25, color=colour)
        ax.plot(xs, smooth(ys), linewidth=1.6, color=raw.get_color(), label=label)


def _finite(xs, ys):
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if math.isfinite(y)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_metrics(series: dict[str, tuple[list[float], list[float]]], plot_dir: str | Path,
                 max_panels: int = 12) -> list[tuple[PlotGroup, Path]]:
    """Write one PNG per non-empty group into ``plot_dir``; returns ``[(group, path)]`` in report order.

    ``series``: ``{key: (steps, values)}`` from :func:`metric_series`.

    A group's figure has one small panel per metric (at most ``max_panels``: the first ones logged), its y axis
    labelled with the metric's unit (:func:`axis_label`); a metric constant over two or more steps gets no panel
    (the report's table shows its value). Series with fewer than 3 points are drawn as markers,
    series of :data:`SMOOTH_FROM` points or more smoothed (:func:`smooth`) with the raw values faint behind.
    Non-finite points are left out of the line (they stay in metrics.jsonl).
    """
    plot_dir = Path(plot_dir)
    grouped: dict[str, list[tuple[str, list[float], list[float]]]] = {}
    for key, (xs, ys) in series.items():
        name = group_of(key)
        if name is None:
            continue
        xs, ys = _finite(xs, ys)
        if xs and (len(ys) == 1 or min(ys) != max(ys)):  # a constant (a fixed kl_coef) is in the table, not a plot
            grouped.setdefault(name, []).append((key, xs, ys))
    written = []
    for group in sorted(PLOT_GROUPS, key=lambda g: g.order):
        panels = grouped.get(group.name, [])[:max_panels]
        if not panels:
            continue
        fig, axes = _panel_grid(len(panels), max_cols=3, panel_size=(4.2, 2.9))
        for ax, (key, xs, ys) in zip(axes, panels, strict=True):
            _draw(ax, xs, ys)
            ax.set_title(key, fontsize=10)
            _label_axes(ax, "step", axis_label(key))
        written.append((group, save_figure(fig, group.title, plot_dir / f"{group.name}.png")))
    return written


def _panel_grid(n: int, max_cols: int, panel_size: tuple[float, float], sharex: bool = False):
    """``(figure, the first n axes)`` of a grid of at most ``max_cols`` columns; the grid's unused cells hidden."""
    from matplotlib.figure import Figure  # no pyplot: the user's matplotlib backend is left alone

    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(panel_size[0] * cols, panel_size[1] * rows))
    axes = list(fig.subplots(rows, cols, squeeze=False, sharex=sharex).flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def save_figure(fig, title: str, path: str | Path, dpi: int = 80, fontsize: int = 12) -> Path:
    """Title, lay out and write ``fig`` as a PNG at ``path`` (its folder made); returns the path."""
    fig.suptitle(title, fontsize=fontsize)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path


def _label_axes(ax, x: str, y: str) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers: no 1.25 ticks
    ax.set_xlabel(x, fontsize=8)
    ax.set_ylabel(y, fontsize=8)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.3)


def plot_comparison(runs: dict[str, list[dict]], keys: Sequence[str], path: str | Path,
                    title: str = "Runs compared") -> Path | None:
    """Several runs on shared axes: one panel per metric in ``keys`` that any run logged, one line per run (same
    colour in every panel), all panels on one step axis. ``runs``: ``{label: metrics records}`` (from
    :func:`read_metrics`). Returns the PNG path, or None when no run logged any of ``keys``."""
    series = {label: metric_series(records) for label, records in runs.items()}
    keys = [k for k in keys if any(k in s for s in series.values())]
    if not keys:
        return None
    fig, axes = _panel_grid(len(keys), max_cols=2, panel_size=(5.6, 3.2), sharex=True)
    colours = [f"C{i % 10}" for i in range(len(series))]
    for ax, key in zip(axes, keys, strict=True):
        for colour, (label, s) in zip(colours, series.items(), strict=True):
            if key in s:
                xs, ys = _finite(*s[key])
                if xs:
                    _draw(ax, xs, ys, label=label, colour=colour)
        ax.set_title(key, fontsize=10)
        _label_axes(ax, "step", axis_label(key))
        ax.xaxis.set_tick_params(labelbottom=True)  # every panel keeps its step ticks (the last row may be short)
    axes[0].legend(fontsize=8)
    return save_figure(fig, title, path)


def _config(run_dir: Path) -> dict:
    if (run_dir / "resolved_config.yaml").exists():
        import yaml

        return yaml.safe_load((run_dir / "resolved_config.yaml").read_text()) or {}
    if (run_dir / "config.json").exists():
        return json.loads((run_dir / "config.json").read_text())
    return {}


def html_table(rows: list[dict], columns: Sequence[str] | None = None) -> str:
    """An HTML table of ``rows`` (cells escaped; floats to 4 significant digits); "" when there are none."""
    if not rows:
        return ""
    columns = list(columns or dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c, '')))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_image(src: str, alt: str) -> str:
    """An ``<img>`` of a path relative to the report (the caller checks that the file exists)."""
    return f"<img src='{html.escape(src)}' alt='{html.escape(alt)}'>"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _summary_rows(series: dict[str, tuple[list[float], list[float]]]) -> list[dict]:
    """First and last logged value of the headline metrics."""
    keys = [k for k in series if group_of(k) in ("score", "kl", "losses", "length")]
    return [{"metric": k, "first": series[k][1][0], "last": series[k][1][-1], "steps": int(series[k][0][-1])}
            for k in keys]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1300px; color: #222; background: #fff; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td { white-space: pre-wrap; max-width: 600px; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.4em 0; display: block; }
.muted { color: #777; }
"""

# Marks <body> with how many images the browser decoded (the Chromium test reads it back from the DOM).
_IMAGE_CHECK = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  document.body.setAttribute("data-images-total", imgs.length);
  document.body.setAttribute("data-images-loaded",
    imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length);
});
"""


def write_report(
    run_dir: str | Path,
    title: str | None = None,
    summary: dict | None = None,
    sections: Sequence[tuple[str, str]] = (),
    max_sample_rows: int = 8,
) -> Path:
    """(Re)write ``<run_dir>/report.html`` and its ``plots/*.png``; returns the HTML path.

    Args:
        run_dir: the run directory (``metrics.jsonl``, ``samples.jsonl``, config files are read if present).
        title: page title; default "alignkit run: <directory name>".
        summary: extra key -> value pairs shown at the top (e.g. final scores).
        sections: extra ``(heading, html)`` sections, appended after the summary; the caller is
            responsible for escaping and for referencing only existing files.
        max_sample_rows: sample completions shown for each of the first and the last sampled step.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    records = read_metrics(run_dir / "metrics.jsonl")
    title = title or f"alignkit run: {run_dir.resolve().name}"
    parts = [f"<h1>{html.escape(title)}</h1>"]
    if summary:
        parts.append("<h2>Summary</h2>" + html_table([{"": k, "value": v} for k, v in summary.items()]))
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    if records:
        steps = [x for x in map(_step_of, records) if x is not None]
        span = f", steps {min(steps)} to {max(steps)}" if steps else ""
        series = metric_series(records)
        parts.append(f"<h2>Metrics</h2><p class='muted'>{len(records)} records{span}, from metrics.jsonl</p>"
                     + html_table(_summary_rows(series)))
        for group, path in plot_metrics(series, run_dir / "plots"):
            parts.append(f"<h3>{html.escape(group.title)}</h3>"
                         + html_image(path.relative_to(run_dir).as_posix(), group.title))
    samples = read_samples(run_dir / "samples.jsonl")
    if not records and not summary and not sections and not samples:  # else the page has its content already
        parts.append("<h2>Metrics</h2><p class='muted'>no metrics.jsonl in this run directory</p>")
    if samples:
        sample_steps = sorted({s.get("step", 0) for s in samples})
        shown = dict.fromkeys([sample_steps[0], sample_steps[-1]])
        parts.append("<h2>Sample completions</h2>")
        for step in shown:
            rows = [{k: v for k, v in s.items() if k != "step"} for s in samples if s.get("step", 0) == step]
            parts.append(f"<h3>step {step}</h3>" + html_table(rows[:max_sample_rows]))
    config = _config(run_dir)
    if config:
        parts.append("<h2>Configuration</h2>" + html_table([{"key": k, "value": v} for k, v in config.items()]))
    links = [name for name in ("metrics.jsonl", "samples.jsonl", "completions.jsonl", "best_of_n.jsonl",
                               "ai_labels.jsonl", "summary.json", "resolved_config.yaml", "config.json", "final",
                               "tensorboard") if (run_dir / name).exists()]
    if links:
        items = "".join(f"<li><a href='{html.escape(n)}'>{html.escape(n)}</a></li>" for n in links)
        parts.append(f"<h2>Files</h2><ul>{items}</ul>")
    page = (f"<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style><script>{_IMAGE_CHECK}</script></head><body>\n" + "\n".join(parts)
            + "\n</body></html>\n")
    out = run_dir / "report.html"
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(page)
    tmp.replace(out)
    return out
