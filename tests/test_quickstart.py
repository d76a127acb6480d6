"""The main job: the built-in SFT -> reward model -> PPO / DPO pipeline."""

import json
import math
import re

import matplotlib.image
import numpy as np
import pytest

from alignkit.cli import main
from alignkit.quickstart import QuickstartConfig, gold_score, run_quickstart
from tests.report_checks import assert_report_references_only_existing_files, render


def test_gold_scorer_hand_computed():
    # 2 distinct positive - 1 negative over sqrt(4 words) = 0.5
    assert gold_score("good dog bad great") == pytest.approx(0.5)
    # a repeated positive word counts once and each repetition costs 0.5: (1 - 1.5) / sqrt(4) = -0.25
    assert gold_score("great great great great") == pytest.approx(-0.25)
    assert gold_score("good great kind") == pytest.approx(math.sqrt(3))
    assert gold_score("") == 0.0


def test_short_budget_quickstart_runs_through_the_cli(tmp_path, capsys):
    assert main(["quickstart", f"output_dir={tmp_path}", "sft_steps=5", "pairs=96", "reward_steps=5", "ppo_steps=2",
                 "dpo_steps=3", "eval_prompts=8"]) == 0
    out = capsys.readouterr().out
    assert "gold score" in out and "PPO, no KL" in out and "PPO β=0.05" in out and "DPO β=0.4" in out
    runs = ("sft", "reward", "ppo", "ppo_beta0.05", "ppo_beta0.5", "ppo_no_kl", "dpo", "dpo_beta0.025", "dpo_beta0.4")
    for run in runs:
        assert (tmp_path / run / "metrics.jsonl").is_file() and (tmp_path / run / "final").is_dir()
        assert_report_references_only_existing_files(tmp_path / run)
    refs = assert_report_references_only_existing_files(tmp_path)
    assert {f"{run}/report.html" for run in runs} | {"plots/frontier.png", "plots/ppo_runs.png", "plots/dpo_runs.png"} \
        <= set(refs)
    page = (tmp_path / "report.html").read_text()
    assert "PPO, no KL" in page and "gold score" in page and "reward-KL frontier" in page
    # the frontier: SFT start + checkpoints for each of 4 PPO and 3 DPO runs, and best-of-1..64
    points = [json.loads(line) for line in (tmp_path / "frontier.jsonl").read_text().splitlines()]
    runs_drawn = {p["run"] for p in points}
    assert len(runs_drawn) == 8 and [p["step"] for p in points if p["run"] == "Best-of-N"] == [1, 2, 4, 8, 16, 32, 64]
    ppo = [p for p in points if p["run"] == "PPO β=0.2"]
    assert [p["step"] for p in ppo] == [0, 1, 2] and ppo[0]["kl"] == 0.0
    assert all(math.isfinite(p[k]) for p in points for k in ("kl", "gold", "reward"))
    assert main(["quickstart", f"output_dir={tmp_path / 'few'}", "frontier=false", "sft_steps=2", "pairs=64",
                 "reward_steps=2", "ppo_steps=1", "dpo_steps=1", "eval_prompts=4"]) == 0
    assert not (tmp_path / "few" / "ppo_beta0.05").exists() and (tmp_path / "few" / "ppo_no_kl").is_dir()
    assert main(["quickstart", "ppo_stepz=3"]) == 2
    assert main(["quickstart", "kl_coef=0"]) == 2  # the no-KL run is always there: 0 is no beta to compare


@pytest.mark.slow
def test_default_quickstart_improves_the_gold_score_and_shows_over_optimisation(tmp_path):
    # measured: see the README's quickstart table (seed 0)
    result = run_quickstart(QuickstartConfig(output_dir=str(tmp_path)), log=lambda *_: None)
    table = result["table"]
    assert all(math.isfinite(v) for row in table.values() for k, v in row.items() if k != "samples")
    ppo, no_kl, dpo, sft = table["PPO β=0.2"], table["PPO, no KL"], table["DPO β=0.1"], table["SFT"]
    assert ppo["gold"] > sft["gold"] + 0.4
    assert dpo["gold"] > sft["gold"] + 0.3
    assert no_kl["kl"] > ppo["kl"]
    assert no_kl["learnt_reward"] > ppo["learnt_reward"] and no_kl["gold"] < ppo["gold"] - 0.4  # over-optimisation
    # on the frontier: along the no-KL run the learnt reward keeps rising past the checkpoint where gold peaked,
    # while gold falls from that peak
    run = [p for p in result["frontier"] if p["run"] == "PPO, no KL"]
    peak = max(range(len(run)), key=lambda i: run[i]["gold"])
    assert peak < len(run) - 1
    assert run[-1]["reward"] > run[peak]["reward"] + 0.5 and run[-1]["gold"] < run[peak]["gold"] - 0.5
    # Best-of-N: more samples, more learnt reward, at a KL of at most log 64 - 63/64 = 3.17 nats
    bon = [p for p in result["frontier"] if p["run"] == "Best-of-N"]
    assert bon[-1]["reward"] > bon[0]["reward"] + 0.5 and bon[-1]["kl"] < 3.2
    # the report shows the frontier, and the browser decodes every image on the page
    dom = render(tmp_path / "report.html", tmp_path / "shot.png")
    total = int(re.search(r'data-images-total="(\d+)"', dom).group(1))
    assert total >= 3 and f'data-images-loaded="{total}"' in dom
    frontier = matplotlib.image.imread(tmp_path / "plots" / "frontier.png")[..., :3]
    assert len(np.unique((frontier * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50  # lines, not a blank
