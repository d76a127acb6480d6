"""report.html: plots from metrics.jsonl, sample completions, only existing files, and it renders in Chromium."""

import json
import math
import re

import numpy as np
import pytest

from alignkit.training.report import append_samples, group_of, read_metrics, write_report
from tests.report_checks import assert_report_references_only_existing_files, render


def _fake_run(run_dir, steps=20):
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / "metrics.jsonl").open("w") as f:
        f.write(json.dumps({"step": 0, "time_s": 0.0, "data/examples": 64.0}) + "\n")
        for s in range(1, steps + 1):
            f.write(json.dumps({"step": s, "time_s": 0.1 * s, "score": math.tanh(s / 5), "kl": 0.05 * s,
                                "policy_loss": 1 / s, "value_loss": 2 / s, "response_length": 5 + s % 3,
                                "eos_rate": 0.8 + 0.01 * (s % 2), "clipfrac": 0.1 / s, "time/generate": 0.2 + s % 2,
                                "explained_variance": "nan" if s == 3 else 0.5 + s / 100}) + "\n")
    append_samples(run_dir, 1, [{"prompt": "say <b>hi</b>", "completion": "hello & bye", "score": 0.1}])
    append_samples(run_dir, steps, [{"prompt": "say hi", "completion": "good good", "score": 0.9}])
    (run_dir / "config.json").write_text(json.dumps({"trainer": "ppo", "kl_coef": 0.05}))


@pytest.mark.parametrize("key, group", [
    ("loss", "losses"), ("value_loss", "losses"), ("eval/loss", "losses"), ("kl", "kl"), ("approx_kl", "kl"),
    ("kl_coef", "kl"), ("non_score_reward", "kl"), ("score", "score"), ("rewards/accuracy", "score"),
    ("accuracy", "score"), ("response_length", "length"), ("eos_rate", "length"), ("time/generate", "time"),
    ("clipfrac", "other"), ("entropy", "other"), ("data/examples", None), ("skipped_updates", None),
])
def test_metric_keys_go_to_the_right_plot(key, group):
    assert group_of(key) == group


def test_report_has_plots_samples_config_and_only_existing_references(tmp_path):
    run = tmp_path / "run"
    _fake_run(run)
    page = write_report(run, summary={"final score": 0.96}).read_text()
    refs = assert_report_references_only_existing_files(run)
    pngs = sorted(r for r in refs if r.endswith(".png"))
    assert pngs == [f"plots/{g}.png" for g in ("kl", "length", "losses", "other", "score", "time")]
    for png in pngs:  # real PNG files, not empty placeholders
        assert (run / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (run / png).stat().st_size > 2000
    assert "say &lt;b&gt;hi&lt;/b&gt;" in page and "<b>hi</b>" not in page  # sample text is escaped
    assert "hello &amp; bye" in page and "good good" in page  # first and last sampled step
    assert "kl_coef" in page and "final score" in page
    assert re.search(r"<td>score</td><td>0\.1974</td><td>0\.9993</td>", page)  # tanh(1/5), tanh(4)


def test_report_without_metrics_still_renders_and_bad_lines_name_the_line(tmp_path):
    write_report(tmp_path / "empty")
    assert "no metrics.jsonl" in (tmp_path / "empty" / "report.html").read_text()
    assert not (tmp_path / "empty" / "plots").exists()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "loss": \n{"step": 3, "loss": 1.0}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2: not a JSON line"):
        read_metrics(bad / "metrics.jsonl")


def test_non_finite_values_are_read_back_as_floats(tmp_path):
    run = tmp_path / "run"
    _fake_run(run, steps=4)
    records = read_metrics(run / "metrics.jsonl")
    assert math.isnan(records[3]["explained_variance"])


def test_report_renders_in_headless_chromium_with_its_plots_loaded(tmp_path):
    import matplotlib.image

    run = tmp_path / "run"
    _fake_run(run)
    write_report(run)
    dom = render(run / "report.html", tmp_path / "shot.png")
    total = re.search(r'data-images-total="(\d+)"', dom)
    loaded = re.search(r'data-images-loaded="(\d+)"', dom)
    assert total and loaded, "the page's load handler did not run"
    assert int(total.group(1)) == 6 and int(loaded.group(1)) == 6  # every plot decoded by the browser
    pixels = matplotlib.image.imread(tmp_path / "shot.png")[..., :3]
    assert pixels.shape[:2] == (1600, 1200)
    # not blank: many distinct colours and plenty of non-white pixels (text, axes, lines)
    assert len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
    assert (pixels.mean(-1) < 0.9).mean() > 0.02


def test_a_comparison_report_with_its_frontier_renders_in_headless_chromium(tmp_path):
    """`alignkit report RUN_A RUN_B output_dir=...`: the frontier and the shared-axes figures load in a browser and
    the frontier image is not blank."""
    import matplotlib.image

    from alignkit.cli import main

    for name, slope in (("ppo_a", 1.0), ("ppo_b", 0.5)):
        _fake_run(tmp_path / name)
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        (tmp_path / name / "metrics.jsonl").write_text("".join(
            json.dumps({**r, "kl": slope * r["kl"]} if "kl" in r else r) + "\n" for r in rows))
    assert main(["report", str(tmp_path / "ppo_a"), str(tmp_path / "ppo_b"), f"output_dir={tmp_path / 'cmp'}"]) == 0
    dom = render(tmp_path / "cmp" / "report.html", tmp_path / "shot.png")
    total = int(re.search(r'data-images-total="(\d+)"', dom).group(1))
    assert total >= 4 and f'data-images-loaded="{total}"' in dom  # frontier + score, KL, losses, length
    frontier = matplotlib.image.imread(tmp_path / "cmp" / "plots" / "frontier.png")[..., :3]
    assert len(np.unique((frontier * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50


def test_text_fields_and_environment_steps_are_handled(tmp_path):
    # classic agents log {"global_step", "phase": "train", ...}: text stays text, global_step is the x axis
    run = tmp_path / "run"
    run.mkdir()
    rows = [{"global_step": 512 * i, "phase": "train", "episodic_return": 10.0 * i, "policy_loss": 1.0 / i}
            for i in range(1, 5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert read_metrics(run / "metrics.jsonl")[0]["phase"] == "train"
    page = write_report(run).read_text()
    assert "steps 512 to 2048" in page
    assert "plots/losses.png" in assert_report_references_only_existing_files(run)


def test_alignkit_report_rewrites_a_run_directory(tmp_path, capsys):
    from alignkit.cli import main

    run = tmp_path / "run"
    _fake_run(run, steps=5)
    assert main(["report", str(run)]) == 0
    assert_report_references_only_existing_files(run)
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
    (run / "metrics.jsonl").write_text("{not json\n{\"step\": 1}\n")
    assert main(["report", str(run)]) == 2
    assert "metrics.jsonl:1: not a JSON line" in capsys.readouterr().err


def test_a_report_with_a_summary_but_no_metrics_has_no_stray_section_and_lists_its_result_files(tmp_path):
    """Best-of-N, classic and generate runs have no metrics.jsonl: their report shows what they have (summary,
    result files) and no "no metrics.jsonl" section."""
    run = tmp_path / "bon"
    run.mkdir()
    (run / "best_of_n.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    (run / "summary.json").write_text('{"win_rate": 0.8}\n')
    page = write_report(run, summary={"win_rate": 0.8}).read_text()
    assert "no metrics.jsonl" not in page
    assert "<a href='best_of_n.jsonl'>" in page and "<a href='summary.json'>" in page


def test_a_constant_metric_gets_no_panel_and_step_axes_have_whole_numbers(tmp_path):
    from matplotlib.image import imread

    from alignkit.training.report import plot_metrics

    steps = [1.0, 2.0, 3.0]
    (_, one), = plot_metrics({"kl": (steps, [0.1, 0.2, 0.4]), "kl_coef": (steps, [0.2, 0.2, 0.2])}, tmp_path / "a")
    (_, two), = plot_metrics({"kl": (steps, [0.1, 0.2, 0.4]), "kl_coef": (steps, [0.2, 0.3, 0.2])}, tmp_path / "b")
    assert imread(two).shape[1] == 2 * imread(one).shape[1]  # the constant kl_coef took no panel of its own
    from matplotlib.figure import Figure

    from alignkit.training.report import _label_axes

    ax = Figure().subplots()
    ax.plot([1, 2, 3], [0.5, 0.1, 0.7])
    _label_axes(ax, "step", "kl (nats)")
    assert ax.get_xlabel() == "step" and all(float(t).is_integer() for t in ax.get_xticks())  # no 1.25, 1.5...
