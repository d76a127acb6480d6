"""The reward-KL frontier: Best-of-N points by hand, points from metrics, the figure, and `alignkit report A B`."""

import json
import math

import pytest
import torch

from alignkit.cli import main
from alignkit.training.frontier import best_of_n_points, plot_frontier, points_from_metrics
from alignkit.training.report import axis_label, plot_comparison, smooth
from tests.report_checks import assert_report_references_only_existing_files


def test_best_of_n_points_by_hand():
    # one prompt, 4 samples: learnt rewards 1 3 2 0, gold 10 20 30 40
    reward = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    gold = torch.tensor([[10.0, 20.0, 30.0, 40.0]])
    n1, n2, n4 = best_of_n_points(reward, gold, [1, 2, 4])
    assert (n1["kl"], n1["reward"], n1["gold"]) == (0.0, 1.5, 25.0)  # best-of-1 is the policy itself
    # groups {1, 3} -> 3 (gold 20) and {2, 0} -> 2 (gold 30)
    assert n2["reward"] == 2.5 and n2["gold"] == 25.0 and n2["kl"] == pytest.approx(math.log(2) - 0.5)
    assert n4["reward"] == 3.0 and n4["gold"] == 20.0 and n4["kl"] == pytest.approx(math.log(4) - 0.75)
    assert [p["step"] for p in (n1, n2, n4)] == [1, 2, 4] and n4["method"] == "Best-of-N"
    assert best_of_n_points(reward, None, [2])[0]["gold"] is None
    with pytest.raises(ValueError, match="n=3: must be >= 1 and divide the 4 samples"):
        best_of_n_points(reward, gold, [3])
    with pytest.raises(ValueError, match="same shape"):
        best_of_n_points(reward, gold[:, :2], [1])


def test_points_from_metrics_keep_steps_with_a_finite_kl_and_score():
    records = [{"step": 1, "kl": 0.1, "score": 0.5}, {"step": 2, "kl": float("nan"), "score": 0.6},
               {"step": 3, "loss": 1.0}, {"step": 4, "kl": 0.4, "score": 0.9, "gold": 0.2}]
    points = points_from_metrics(records, "run-a", method="ppo")
    assert [(p["step"], p["kl"], p["reward"], p["gold"]) for p in points] == [(1, 0.1, 0.5, None), (4, 0.4, 0.9, 0.2)]
    assert points_from_metrics([{"step": 1, "loss": 0.3}], "dpo") == []


def test_frontier_figure_has_a_gold_panel_only_when_there_is_gold(tmp_path):
    from matplotlib.image import imread

    points = best_of_n_points(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), None, [1, 2, 4, 8])
    one = imread(plot_frontier(points, tmp_path / "one.png"))
    for p in points:
        p["gold"] = p["reward"] / 2
    two = imread(plot_frontier(points, tmp_path / "two.png"))
    assert two.shape[1] > 1.8 * one.shape[1]  # a second panel beside the first
    with pytest.raises(ValueError, match="no frontier points"):
        plot_frontier([], tmp_path / "none.png")


def test_smoothing_axis_labels_and_shared_axes(tmp_path):
    # debiased EMA: s1 = y1; s2 = (0.8 * 0.2 * 1 + 0.2 * 3) / (1 - 0.64) = 0.76 / 0.36
    assert smooth([1.0, 3.0]) == pytest.approx([1.0, 0.76 / 0.36])
    assert smooth([2.0] * 5) == pytest.approx([2.0] * 5)
    assert axis_label("kl") == "kl (nats)" and axis_label("eval/accuracy") == "eval/accuracy (fraction)"
    assert axis_label("time/generate") == "time/generate (s)" and axis_label("kl_coef") == "kl_coef"
    runs = {"a": [{"step": s, "score": s / 10} for s in range(1, 30)], "b": [{"step": 1, "loss": 1.0}]}
    assert plot_comparison(runs, ["score", "loss"], tmp_path / "c.png").is_file()
    assert plot_comparison(runs, ["entropy"], tmp_path / "none.png") is None


def _online_run(run_dir, slope, trainer="ppo"):
    run_dir.mkdir(parents=True)
    rows = [{"step": s, "kl": 0.1 * s, "score": slope * s, "loss": 1 / s} for s in range(1, 16)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run_dir / "config.json").write_text(json.dumps({"trainer": trainer}))


def test_alignkit_report_compares_several_runs_on_one_page(tmp_path, capsys):
    _online_run(tmp_path / "ppo_a", 0.1)
    _online_run(tmp_path / "ppo_b", 0.2)
    (tmp_path / "dpo").mkdir()
    (tmp_path / "dpo" / "metrics.jsonl").write_text('{"step": 1, "loss": 0.7}\n{"step": 2, "loss": 0.6}\n')
    assert main(["report", str(tmp_path / "ppo_a")]) == 0  # one run: its own report, as before
    runs = [str(tmp_path / d) for d in ("ppo_a", "ppo_b", "dpo")]
    assert main(["report", *runs, f"output_dir={tmp_path / 'cmp'}"]) == 0
    refs = assert_report_references_only_existing_files(tmp_path / "cmp")
    assert {"plots/frontier.png", "plots/compare_score.png", "plots/compare_losses.png", "../ppo_a/report.html"} \
        <= set(refs)
    page = (tmp_path / "cmp" / "report.html").read_text()
    assert "not drawn (no kl and score logged): dpo" in page and "3 runs compared" in page
    assert main(["report", f"run_dir={runs[0]},{runs[1]}", f"output_dir={tmp_path / 'cmp2'}"]) == 0
    capsys.readouterr()
    for argv, message in (([*runs[:2]], "output_dir: required to compare several runs"),
                          ([runs[0], runs[0], "output_dir=x"], "is named twice"),
                          ([*runs[:2], f"output_dir={runs[0]}"], "is one of the runs compared"),
                          ([runs[0], str(tmp_path / "nope"), "output_dir=x"], "no such run directory")):
        assert main(["report", *argv]) == 2
        assert message in capsys.readouterr().err
