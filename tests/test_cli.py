"""The command line: help, errors that exit 2 and write nothing, and end-to-end runs on a tiny model."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from alignkit.cli import main
from tests.report_checks import assert_report_references_only_existing_files
from tests.train import tasks


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny")
    tok = tasks.tokenizer()
    tasks.model(tok).save_pretrained(d / "model")
    tok.save_pretrained(d / "model")
    with (d / "sft.jsonl").open("w") as f:
        for row in tasks.sft_rows(16):
            f.write(json.dumps(row) + "\n")
    with (d / "pairs.jsonl").open("w") as f:
        for row in tasks.preference_rows(16):
            f.write(json.dumps(row) + "\n")
    with (d / "prompts.jsonl").open("w") as f:
        for row in tasks.sft_rows(16):
            f.write(json.dumps({"prompt": row["prompt"]}) + "\n")
    return d


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("sft", "reward", "dpo", "reinforce", "ppo", "trpo", "bon", "rlaif", "generate", "quickstart"):
        assert f"  {command}" in out
    assert main(["ppo", "--help"]) == 0
    assert "kl_coef=0.05" in capsys.readouterr().out


def test_console_script_is_installed():
    exe = Path(sys.executable).parent / "alignkit"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and "commands:" in out.stdout


@pytest.mark.parametrize("argv, message", [
    (["fly"], "unknown command 'fly'; choose one of"),
    (["sft", "learning_rat=0.1"], "unknown key 'learning_rat' for 'sft'; did you mean learning_rate"),
    (["sft", "batch_size=eight"], "batch_size: expected int, got 'eight'"),
    (["sft", "lr_scheduler=step"], "lr_scheduler: 'step' is not one of linear, cosine, constant"),
    (["sft", "model=/no/such/model", "train_file=x"], "model: no such file or directory '/no/such/model'"),
    (["sft", "--verbose"], "unexpected argument '--verbose'"),
])
def test_bad_input_exits_2_names_the_key_and_writes_nothing(argv, message, tmp_path, capsys):
    out_dir = tmp_path / "run"
    assert main([*argv, f"output_dir={out_dir}"]) == 2
    assert message in capsys.readouterr().err
    assert not out_dir.exists()


def test_a_preset_for_another_method_is_refused(tiny_dir, tmp_path, capsys):
    preset = tmp_path / "ppo.yaml"
    preset.write_text("method: ppo\nkl_coef: 0.1\n")
    assert main(["sft", "--config", str(preset), f"model={tiny_dir / 'model'}", f"train_file={tiny_dir / 'sft.jsonl'}",
                 f"output_dir={tmp_path / 'run'}"]) == 2
    assert "is a preset for 'ppo', not 'sft'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_sft_end_to_end_with_a_preset_and_overrides(tiny_dir, tmp_path, capsys):
    preset = tmp_path / "sft.yaml"
    preset.write_text("method: sft\nbatch_size: 4\nmax_steps: 5\nlearning_rate: 0.01\nmax_length: 32\n")
    out = tmp_path / "run"
    assert main(["sft", "--config", str(preset), f"model={tiny_dir / 'model'}", f"train_file={tiny_dir / 'sft.jsonl'}",
                 f"output_dir={out}", "max_steps=3", "progress=false"]) == 0
    resolved = (out / "resolved_config.yaml").read_text()
    assert "max_steps: 3" in resolved and "batch_size: 4" in resolved  # override beats preset
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4  # data counts + 3 steps
    assert (out / "final" / "config.json").is_file()
    said = capsys.readouterr().out  # where the results went
    assert f"results in {out}/:\n  {out / 'final'}/\n  {out / 'report.html'}\n  {out / 'metrics.jsonl'}" in said


@pytest.mark.slow
def test_reinforce_end_to_end_with_a_reward_fn_by_import_path(tiny_dir, tmp_path):
    out = tmp_path / "rl"
    assert main(["reinforce", f"model={tiny_dir / 'model'}", f"prompts_file={tiny_dir / 'prompts.jsonl'}",
                 "reward_fn=tests.train.tasks:has_good", "max_steps=2", "prompts_per_step=4", "samples_per_prompt=2",
                 "max_new_tokens=4", f"output_dir={out}", "progress=false", "tensorboard=false"]) == 0
    assert (out / "final" / "config.json").is_file() and (out / "resolved_config.yaml").is_file()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_reward_fn_must_resolve(tiny_dir, tmp_path, capsys):
    assert main(["ppo", f"model={tiny_dir / 'model'}", f"prompts_file={tiny_dir / 'prompts.jsonl'}",
                 "reward_fn=no.such.module:fn", f"output_dir={tmp_path / 'x'}"]) == 2
    assert "reward_fn:" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("preset", sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")),
                         ids=lambda p: p.name)
def test_every_shipped_preset_parses_for_its_command(preset, tiny_dir, tmp_path):
    import yaml

    from alignkit.cli import parse_config

    data = yaml.safe_load(preset.read_text())
    text = preset.read_text()
    assert text.startswith("# ") and "# Launch: alignkit" in text and "# Tested on:" in text
    command = data["method"]
    required = {"output_dir": tmp_path / "run"}
    if not command.startswith("classic "):
        required["model"] = tiny_dir / "model"
    if command in ("sft", "reward", "dpo"):
        required["train_file"] = tiny_dir / "sft.jsonl"
    elif command in ("reinforce", "ppo", "trpo", "bon", "rlaif", "generate"):
        required["prompts_file"] = tiny_dir / "prompts.jsonl"
    if command in ("reinforce", "ppo", "trpo", "bon") and "reward_fn" not in data:
        required["reward_fn"] = "tests.train.tasks:has_good"
    if command == "rlaif":
        required["judge"] = "tests.train.tasks:GoodWordJudge"
    config = parse_config(command, ["--config", str(preset), *(f"{k}={v}" for k, v in required.items())])
    for key, value in data.items():
        if key not in ("method", "output_dir"):
            assert getattr(config, key) == value, key


def test_every_command_has_a_preset():
    import yaml

    from alignkit.cli import COMMANDS

    presets = {yaml.safe_load(p.read_text())["method"]
               for p in (Path(__file__).resolve().parents[1] / "configs").glob("*.yaml")}
    wanted = {c.name for c in COMMANDS} - {"report", "quickstart", "model"}  # no method options to preset
    assert wanted <= presets, f"no preset for {sorted(wanted - presets)}"


TINY_PRESETS = {  # a few steps of each command on the tiny model: the presets the end-to-end test runs
    "sft": {"batch_size": 4, "max_steps": 2, "max_length": 32},
    "reward": {"batch_size": 4, "max_steps": 2, "max_length": 32},
    "dpo": {"batch_size": 4, "max_steps": 2, "max_length": 32},
    **{online: {"reward_fn": "tests.train.tasks:has_good", "max_steps": 1, "prompts_per_step": 4,
                "samples_per_prompt": 2, "max_new_tokens": 3, "num_minibatches": 1}
       for online in ("reinforce", "ppo", "trpo")},
    "bon": {"reward_fn": "tests.train.tasks:has_good", "n": 2, "max_new_tokens": 3},
    "rlaif": {"judge": "tests.train.tasks:GoodWordJudge", "max_new_tokens": 4, "batch_size": 4, "max_steps": 1,
              "max_length": 32},
    "generate": {"n": 1, "max_new_tokens": 3},
    "classic gridworld": {"gamma": 0.9},
    "classic bandit": {"runs": 20, "steps": 50},
    "classic gym": {"algo": "ppo", "total_steps": 512, "num_envs": 2, "num_steps": 128, "eval_episodes": 1},
}


@pytest.mark.slow
@pytest.mark.parametrize("command", list(TINY_PRESETS))
def test_every_command_runs_end_to_end_on_a_tiny_preset(command, tiny_dir, tmp_path):
    import yaml

    out = tmp_path / "run"
    preset = tmp_path / "tiny.yaml"
    preset.write_text(yaml.safe_dump({"method": command, **TINY_PRESETS[command]}))
    data = {"sft": "sft.jsonl", "reward": "pairs.jsonl", "dpo": "pairs.jsonl"}
    args = [] if command.startswith("classic") else [f"model={tiny_dir / 'model'}"]
    if command in data:
        args.append(f"train_file={tiny_dir / data[command]}")
    elif not command.startswith("classic"):
        args.append(f"prompts_file={tiny_dir / 'prompts.jsonl'}")
    if command in TINY_PRESETS and not command.startswith("classic") and command not in ("bon", "generate"):
        args.append("progress=false")
    assert main([*command.split(), "--config", str(preset), *args, f"output_dir={out}"]) == 0
    assert (out / "resolved_config.yaml").is_file()
    refs = assert_report_references_only_existing_files(out)
    assert any(r.endswith(".png") for r in refs) or command in ("bon", "generate")
    if command.startswith("classic"):
        assert (out / "summary.json").is_file()
        return
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert samples and all("prompt" in s and "step" in s for s in samples)
    assert all(("completion" in s) != (command in ("reward", "rlaif")) for s in samples)  # RMs show scored pairs
    if command in ("bon", "generate"):
        return
    assert (out / "metrics.jsonl").is_file() and (out / "final" / "config.json").is_file()
    assert any((out / "tensorboard").iterdir())
    assert "plots/losses.png" in refs or command == "trpo"  # TRPO has no policy loss, only its critic's


@pytest.mark.slow
@pytest.mark.parametrize("method", ["reward", "dpo"])
def test_rlaif_labels_pairs_with_the_judge_and_trains(method, tiny_dir, tmp_path):
    out = tmp_path / method
    assert main(["rlaif", f"model={tiny_dir / 'model'}", f"prompts_file={tiny_dir / 'prompts.jsonl'}",
                 "judge=tests.train.tasks:GoodWordJudge", f"rlaif_method={method}", "max_new_tokens=6",
                 "batch_size=4", "max_steps=2", "max_length=32", f"output_dir={out}", "progress=false"]) == 0
    rows = [json.loads(line) for line in (out / "ai_labels.jsonl").read_text().splitlines()]
    counts = json.loads((out / "ai_labels_summary.json").read_text())
    assert counts["pairs"] == len(rows) > 0 and counts["pairs_requested"] == 16
    assert counts["pairs"] + sum(v for k, v in counts.items() if k.startswith("dropped_")) == 16  # none lost
    judge = tasks.GoodWordJudge()
    assert all(judge.prefer([r["prompt"]], [r["chosen"]], [r["rejected"]])[0] > 0.5 for r in rows)
    assert (out / "final" / "config.json").is_file() and (out / "resolved_config.yaml").is_file()
    assert "ai_labels/pairs" in (out / "report.html").read_text()
    assert_report_references_only_existing_files(out)


def test_rlaif_with_no_pair_left_after_labelling_says_why_and_where_the_labels_are(tiny_dir, tmp_path, capsys):
    # 6 tokens score at most 6 + 1.5 apart, so the judge's confidence stays below sigmoid(7.5) < 0.9999
    out = tmp_path / "x"
    assert main(["rlaif", f"model={tiny_dir / 'model'}", f"prompts_file={tiny_dir / 'prompts.jsonl'}",
                 "judge=tests.train.tasks:GoodWordJudge", "min_confidence=0.9999", "max_new_tokens=6",
                 "batch_size=4", "max_steps=2", "max_length=32", f"output_dir={out}", "progress=false"]) == 2
    err = capsys.readouterr().err
    assert "the judge kept none of the 16 pairs (16 judged with confidence at or below min_confidence=0.9999)" in err
    assert "Traceback" not in err and (out / "ai_labels.jsonl").is_file()
    assert json.loads((out / "ai_labels_summary.json").read_text())["mean_confidence"] is None  # valid JSON


@pytest.mark.parametrize("args, message", [
    ([], "give exactly one of judge_model, judge_url or judge (got: none)"),
    (["judge=tests.train.tasks:has_good"], "judge: 'tests.train.tasks:has_good' has no prefer("),
    (["judge_url=http://127.0.0.1:9/v1"], "judge_name: required with judge_url"),
    (["judge_url=ftp://127.0.0.1/v1", "judge_name=j"], "judge_url: must start with http:// or https://"),
    (["judge_model=/no/such/judge"], "judge_model: no such file or directory"),
    (["judge=tests.train.tasks:GoodWordJudge", "samples_per_prompt=3"], "samples_per_prompt must be even"),
    (["judge=tests.train.tasks:GoodWordJudge", "rlaif_method=ppo"], "rlaif_method: 'ppo' is not one of reward, dpo"),
    (["judge=tests.train.tasks:GoodWordJudge", "judge_api_key_env=ALIGNKIT_NO_SUCH_KEY"],
     "'ALIGNKIT_NO_SUCH_KEY' is not set"),
])
def test_rlaif_bad_settings_exit_2(args, message, tiny_dir, tmp_path, capsys):
    assert main(["rlaif", f"model={tiny_dir / 'model'}", f"prompts_file={tiny_dir / 'prompts.jsonl'}", *args,
                 f"output_dir={tmp_path / 'x'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_a_prompt_file_of_sft_conversations_is_refused_by_name(tiny_dir, tmp_path, capsys):
    prompts = tmp_path / "chats.jsonl"
    prompts.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                                {"role": "assistant", "content": "hello"}]}) + "\n")
    assert main(["generate", f"model={tiny_dir / 'model'}", f"prompts_file={prompts}",
                 f"output_dir={tmp_path / 'gen'}"]) == 2
    err = capsys.readouterr().err
    assert "chats.jsonl line 1: field 'messages': ends with the assistant's turn" in err
    assert not (tmp_path / "gen").exists()


def test_generate_and_best_of_n_write_their_outputs(tiny_dir, tmp_path, capsys):
    out = tmp_path / "gen"
    assert main(["generate", f"model={tiny_dir / 'model'}", f"prompts_file={tiny_dir / 'prompts.jsonl'}", "n=2",
                 "max_new_tokens=3", f"output_dir={out}"]) == 0
    rows = [json.loads(line) for line in (out / "completions.jsonl").read_text().splitlines()]
    assert len(rows) == 32 and {"prompt", "completion", "finished"} <= set(rows[0])
    assert_report_references_only_existing_files(out)
    out = tmp_path / "bon"
    assert main(["bon", f"model={tiny_dir / 'model'}", f"prompts_file={tiny_dir / 'prompts.jsonl'}",
                 "reward_fn=tests.train.tasks:has_good", "n=4", "max_new_tokens=3", f"output_dir={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kl_bound"] == pytest.approx(0.6363, abs=1e-4)  # log 4 - 3/4
    assert (out / "resolved_config.yaml").is_file()
    assert_report_references_only_existing_files(out)
    assert "kl_bound" in (out / "report.html").read_text()
    assert main(["bon", f"model={tiny_dir / 'model'}", f"prompts_file={tiny_dir / 'prompts.jsonl'}",
                 "reward_fn=tests.train.tasks:has_good", "n=0", f"output_dir={tmp_path / 'bad'}"]) == 2
    assert not (tmp_path / "bad").exists()


def test_classic_commands_run_and_write_their_run_directory(tmp_path, capsys):
    out = tmp_path / "grid"
    assert main(["classic", "gridworld", "gamma=0.9", "solver=policy_iteration", f"output_dir={out}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert json.dumps(summary)  # written and parseable
    assert "0.900" in capsys.readouterr().out  # V*(3,3) = 0.9 in the printed table (seed 004)
    assert "values.png" in assert_report_references_only_existing_files(out)
    assert (out / "resolved_config.yaml").is_file()
    out = tmp_path / "bandit"
    assert main(["classic", "bandit", "runs=50", "steps=100", "agents=greedy,eps0.1,ucb2", f"output_dir={out}"]) == 0
    assert "bandit.png" in assert_report_references_only_existing_files(out)


@pytest.mark.parametrize("argv, message", [
    (["classic"], "name a command before the options: gridworld, bandit, gym"),
    (["classic", "chess"], "unknown command 'classic chess'; choose one of classic gridworld"),
    (["classic", "gridworld", "gama=0.9"], "unknown key 'gama' for 'classic gridworld'; did you mean gamma"),
    (["classic", "gridworld", "gamma=2"], "gamma must be in [0, 1], got 2.0"),
    (["classic", "gridworld", "solver=sarsa"], "solver: 'sarsa' is not one of value_iteration, policy_iteration"),
    (["classic", "bandit", "agents=greedy,psychic"], "psychic"),
    (["classic", "gym", "algo=bc", "bc_expert_checkpoint=/no/policy.pt"], "bc_expert_checkpoint: no such file"),
    (["classic", "gym", "env_id=NoSuchEnv-v9"], "NoSuchEnv-v9"),
    (["classic", "gym", "algo=qac", "env_id=Pendulum-v1"], "needs a Discrete action space"),
])
def test_classic_bad_input_exits_2_and_writes_nothing(argv, message, tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*argv, f"output_dir={out}"]) == 2
    captured = capsys.readouterr()
    assert message in captured.err + captured.out
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["sft", "ppo"])
def test_accelerate_launch_runs_the_same_cli_on_two_processes(command, tiny_dir, tmp_path):
    """Scaling out is `accelerate launch --multi_gpu --num_processes 2 ... -m alignkit.cli <command>` (on CPUs,
    accelerate's `--cpu` launches one process; `--multi_gpu` is its torchrun launcher, and alignkit picks gloo):
    two processes give the losses of one process, and only the main process writes the run directory."""
    import os

    accelerate = Path(sys.executable).parent / "accelerate"
    if command == "sft":
        args = [f"train_file={tiny_dir / 'sft.jsonl'}", "batch_size=4", "max_steps=3", "max_length=32"]
        key = "loss"
    else:
        args = [f"prompts_file={tiny_dir / 'prompts.jsonl'}", "reward_fn=tests.train.tasks:has_good", "max_steps=3",
                "prompts_per_step=4", "samples_per_prompt=2", "max_new_tokens=4", "kl_coef=0.1", "lora=true",
                "gradient_checkpointing=true"]  # fp32: bf16 rounding depends on the batch's padded shapes
        key = "policy_loss"
    args = [f"model={tiny_dir / 'model'}", *args, "progress=false", "tensorboard=false"]
    assert main([command, *args, f"output_dir={tmp_path / 'one'}"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    launch = [str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29547", "-m",
              "alignkit.cli", command]
    done = subprocess.run([*launch, *args, f"output_dir={tmp_path / 'two'}"], env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]

    def run(name):
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        processes = json.loads((tmp_path / name / "config.json").read_text())["processes"]
        return [r[key] for r in rows if key in r], processes

    (one, one_procs), (two, two_procs) = run("one"), run("two")
    assert (one_procs, two_procs) == (1, 2) and len(two) == 3
    assert two == pytest.approx(one, abs=1e-5)
    assert (tmp_path / "two" / "final").is_dir()
    assert_report_references_only_existing_files(tmp_path / "two")
    bad = subprocess.run([*launch, *args, "prompts_per_step=3" if command == "ppo" else "batch_size=3",
                          f"output_dir={tmp_path / 'bad'}"], env=env, capture_output=True, text=True, timeout=300,
                         check=False)
    assert bad.returncode != 0 and "processes" in bad.stderr and not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_online_rlaif_a_local_judge_scores_each_completion(tiny_dir, tmp_path):
    """`alignkit ppo ... judge_model=DIR`: the judge's expected rating (1..5) is the reward (online RLAIF)."""
    from alignkit.models.tiny import build_tokenizer

    judge_dir = tmp_path / "judge"
    judge_tok = build_tokenizer([" ".join(tasks.WORDS) + " 1 2 3 4 5 A B"] * 3, vocab_size=64, model="word")
    tasks.model(judge_tok, seed=1).save_pretrained(judge_dir)
    judge_tok.save_pretrained(judge_dir)
    out = tmp_path / "run"
    assert main(["ppo", f"model={tiny_dir / 'model'}", f"prompts_file={tiny_dir / 'prompts.jsonl'}",
                 f"judge_model={judge_dir}", "max_steps=1", "prompts_per_step=4", "samples_per_prompt=2",
                 "max_new_tokens=3", "num_minibatches=1", f"output_dir={out}", "progress=false"]) == 0
    scores = [json.loads(line)["score"] for line in (out / "samples.jsonl").read_text().splitlines()]
    assert scores and all(1.0 <= s <= 5.0 for s in scores)  # an expected rating, not a constant
    assert len(set(scores)) > 1


@pytest.mark.parametrize("args, message", [
    (["reward_fn=tests.train.tasks:has_good", "judge_url=http://127.0.0.1:9/v1", "judge_name=j"],
     "give exactly one reward source: reward_fn (import path), reward_model (directory), or judge_model / judge_url"),
    ([], "got: none"),
    (["judge_url=http://127.0.0.1:9/v1"], "judge_name: required with judge_url"),
])
def test_online_reward_sources_are_exclusive(args, message, tiny_dir, tmp_path, capsys):
    assert main(["reinforce", f"model={tiny_dir / 'model'}", f"prompts_file={tiny_dir / 'prompts.jsonl'}", *args,
                 f"output_dir={tmp_path / 'x'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("command", ["reinforce", "ppo", "trpo", "sft", "reward", "dpo"])
def test_every_trainer_takes_lora_precision_and_checkpointing_switches(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    for key in ("lora", "lora_r", "mixed_precision", "gradient_checkpointing", "on_nonfinite"):
        assert f"\n  {key}=" in text, (command, key)


def test_a_prompt_file_column_missing_from_some_rows_is_named_before_the_model_loads(tiny_dir, tmp_path,
                                                                                     monkeypatch, capsys):
    """Every row gets the reward's columns or none does: a row without 'answer' would reach the reward as None
    and be scored 0 silently. Found before the model loads and before anything is written."""
    import alignkit.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the data was validated")

    monkeypatch.setattr(alignkit.models, "load_causal_lm", no_model)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "2+2=", "answer": "4"}\n{"prompt": "3+3="}\n{"prompt": "1+1=", "answer": "2"}\n')
    out = tmp_path / "run"
    assert main(["reinforce", f"model={tiny_dir / 'model'}", f"prompts_file={prompts}", f"output_dir={out}",
                 "reward_fn=alignkit.rewards.rules:gsm8k_exact_match"]) == 2
    assert re.search(r"alignkit reinforce: error: .*prompts.jsonl line 2.*no 'answer' column, which 2 other rows",
                     capsys.readouterr().err)
    assert not out.exists()
    bad_sft = tmp_path / "sft.jsonl"
    bad_sft.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n')
    assert main(["sft", f"model={tiny_dir / 'model'}", f"train_file={bad_sft}", f"output_dir={out}"]) == 2
    assert "sft.jsonl line 2" in capsys.readouterr().err
    assert not out.exists()


_OFFLINE = ["train_file={d}/sft.jsonl"]
_ONLINE = ["prompts_file={d}/prompts.jsonl", "reward_fn=tests.train.tasks:has_good"]


@pytest.mark.parametrize("command, extra, setting, message", [
    ("sft", _OFFLINE, "weight_decay=-5", "weight_decay must be a finite number >= 0, got -5.0"),
    ("sft", _OFFLINE, "max_grad_norm=-1", "max_grad_norm must be a finite number >= 0, got -1.0"),
    ("sft", _OFFLINE, "learning_rate=inf", "learning_rate must be a finite number > 0, got inf"),
    ("sft", _OFFLINE, "adam_beta1=2", "adam_beta1 must be in [0, 1), got 2.0"),
    ("sft", _OFFLINE, "max_length=0", "max_length must be a finite number >= 1, got 0"),
    ("sft", _OFFLINE, "num_epochs=inf", "num_epochs must be a finite number > 0, got inf"),
    ("dpo", _OFFLINE, "beta=nan", "beta must be a finite number > 0, got nan"),
    ("dpo", _OFFLINE, "label_smoothing=2", "label_smoothing must be in [0, 0.5), got 2.0"),
    ("reinforce", _ONLINE, "learning_rate=0", "learning_rate must be a finite number > 0, got 0.0"),
    ("reinforce", _ONLINE, "learning_rate=nan", "learning_rate must be a finite number > 0, got nan"),
    ("reinforce", _ONLINE, "forward_batch_size=-3", "forward_batch_size must be a finite number >= 0, got -3"),
    ("reinforce", _ONLINE, "entropy_coef=nan", "entropy_coef must be a finite number, got nan"),
    ("ppo", _ONLINE, "vf_coef=nan", "vf_coef must be a finite number >= 0, got nan"),
    ("ppo", _ONLINE, "clip_eps=-1", "clip_eps must be a finite number > 0, got -1.0"),
    ("ppo", _ONLINE, "gamma=2", "gamma must be in [0, 1], got 2.0"),
])
def test_every_out_of_range_option_exits_2_naming_it_and_writes_nothing(command, extra, setting, message, tiny_dir,
                                                                         tmp_path, capsys):
    out = tmp_path / "run"
    extra = [e.format(d=tiny_dir) for e in extra]
    assert main([command, f"model={tiny_dir / 'model'}", *extra, setting, f"output_dir={out}"]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_warmup_longer_than_the_run_is_an_error_before_anything_is_written(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["sft", f"model={tiny_dir / 'model'}", f"train_file={tiny_dir / 'sft.jsonl'}", "max_steps=3",
                 "max_length=64", "warmup_steps=10", f"output_dir={out}", "tensorboard=false", "progress=false"]) == 2
    assert "warmup_steps=10 is more than the run's 3 optimiser steps" in capsys.readouterr().err  # no traceback
    assert not (out / "metrics.jsonl").exists()


def test_an_over_long_prompt_is_named_by_its_line_before_the_model_loads(tiny_dir, tmp_path, monkeypatch, capsys):
    import alignkit.models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the prompts were checked")

    monkeypatch.setattr(alignkit.models, "load_causal_lm", no_model)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "good"}\n{"prompt": "good good good good good good good good"}\n')
    assert main(["reinforce", f"model={tiny_dir / 'model'}", f"prompts_file={prompts}",
                 f"output_dir={tmp_path / 'run'}", "reward_fn=tests.train.tasks:has_good", "max_prompt_length=4",
                 "prompt_truncation=error"]) == 2
    assert re.search(r"prompts.jsonl line 2: prompt is \d+ tokens, more than max_prompt_length=4",
                     capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_a_field_two_parts_of_a_job_declare_is_an_error_not_a_silent_choice():
    from dataclasses import dataclass

    from alignkit.cli import COMMANDS
    from alignkit.cli.jobs import OutputJob, compose_job
    from alignkit.training.config import option

    @dataclass
    class Other:
        output_dir: str = option("elsewhere", "a second declaration")

    with pytest.raises(TypeError, match="field 'output_dir' is declared by both"):
        compose_job("Clash", OutputJob, Other)
    for command in COMMANDS:  # every command's job composes: each option is declared once
        assert command.config().__dataclass_fields__


def test_every_command_is_dispatched_from_the_table(monkeypatch, tmp_path):
    """main() reaches each command's run through its table entry (the table is the only dispatch path)."""
    import dataclasses

    from alignkit import cli

    called = []
    for command in cli.COMMANDS:
        monkeypatch.setitem(cli.BY_NAME, command.name, dataclasses.replace(
            command, run=lambda name, config: called.append(name), check=None))
    (tmp_path / "run").mkdir()
    for command in cli.COMMANDS:
        bare = {"run_dir": [str(tmp_path / "run")], "name": ["tiny"]}.get(command.positional, [])
        argv = command.name.split(" ") + bare
        if command.name == "rlaif":
            argv += ["judge=tests.train.tasks:GoodWordJudge"]
        assert cli.main(argv) == 0, command.name
    assert called == [c.name for c in cli.COMMANDS]


def test_runs_without_output_dir_get_a_fresh_directory_each(tiny_dir, tmp_path, monkeypatch, capsys):
    """Two runs of one command without output_dir never share (and append to) one run directory."""
    from alignkit.cli import parse_config

    monkeypatch.chdir(tmp_path)
    argv = [f"model={tiny_dir / 'model'}", f"train_file={tiny_dir / 'sft.jsonl'}", "max_steps=1", "batch_size=4",
            "max_length=32", "num_samples=0", "progress=false", "tensorboard=false"]
    first = parse_config("sft", argv).output_dir
    assert first.startswith("runs/sft-") and len(first) == len("runs/sft-20261206-101010")
    assert main(["sft", *argv]) == 0
    out, err = capsys.readouterr()
    assert "Loading weights" not in err and "Writing model shards" not in err  # no transformers bars
    made = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(made) == 1 and f"results in runs/{made[0]}/" in out
    second = parse_config("sft", argv).output_dir  # same second or not: never the directory of the first run
    assert second != f"runs/{made[0]}"
    assert parse_config("sft", [*argv, "output_dir=mine"]).output_dir == "mine"
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["sft", *argv]) == 2
    assert "output_dir: required when 2 processes are launched" in capsys.readouterr().err
    assert main(["sft", "--help"]) == 0
    assert "output_dir=runs/sft-<date>-<time> (a new directory each run)" in capsys.readouterr().out


def test_num_steps_is_the_deprecated_name_of_max_steps(tiny_dir, tmp_path, capsys):
    from alignkit.cli import parse_config
    from alignkit.trainers import ReinforceConfig

    argv = [f"model={tiny_dir / 'model'}", f"prompts_file={tiny_dir / 'prompts.jsonl'}",
            "reward_fn=tests.train.tasks:has_good", f"output_dir={tmp_path / 'run'}"]
    config = parse_config("reinforce", [*argv, "num_steps=7"])
    assert (config.max_steps, config.num_steps) == (7, 0)
    assert "note: num_steps is deprecated: use max_steps" in capsys.readouterr().err
    assert parse_config("reinforce", [*argv, "max_steps=7"]).max_steps == 7
    assert main(["reinforce", *argv, "num_steps=7", "max_steps=5"]) == 2
    assert "num_steps=7 (the old name of max_steps) and max_steps=5 disagree" in capsys.readouterr().err
    with pytest.warns(DeprecationWarning, match="use max_steps"):
        assert ReinforceConfig(output_dir=str(tmp_path / "lib"), num_steps=3).max_steps == 3


def test_alignkit_model_saves_a_model_to_start_from_and_runs_check_the_context(tiny_dir, tmp_path, capsys):
    """`alignkit model tiny` writes a checkpoint any command takes; a run whose prompts (or max_length) do not fit
    the model's positions stops before training, naming the prompt and the setting to change."""
    from alignkit.models import load_causal_lm, load_tokenizer

    out = tmp_path / "tiny-model"
    assert main(["model", "tiny", f"output_dir={out}"]) == 0
    assert f"use it as model={out}" in capsys.readouterr().out
    tok = load_tokenizer(str(out))
    model = load_causal_lm(str(out), tokenizer=tok)
    assert model.config.max_position_embeddings == 1024 and model.config.num_hidden_layers == 4
    assert tok("Natalia sold 48 clips?")["input_ids"] and tok.chat_template  # byte-level BPE: any text encodes
    assert main(["model"]) == 2 and "name: required" in capsys.readouterr().err
    assert main(["model", "huge"]) == 2 and "'huge' is not one of smollm2, tiny" in capsys.readouterr().err

    # the tasks' model has 128 positions: a 100-word prompt + 64 new tokens does not fit
    prompts = tmp_path / "long.jsonl"
    long_prompt = " ".join(["dog"] * 100)
    prompts.write_text(json.dumps({"prompt": "the cat"}) + "\n" + json.dumps({"prompt": long_prompt}) + "\n")
    run = ["reinforce", f"model={tiny_dir / 'model'}", f"prompts_file={prompts}",
           "reward_fn=tests.train.tasks:has_good", "max_new_tokens=64",
           f"output_dir={tmp_path / 'rl'}", "max_steps=1", "prompts_per_step=2"]
    assert main(run) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and "more than the model's 128 positions" in err and "set max_prompt_length=64" in err
    assert not (tmp_path / "rl").exists()  # nothing written
    sft = ["sft", f"model={tiny_dir / 'model'}", f"train_file={tiny_dir / 'sft.jsonl'}", "max_length=512",
           f"output_dir={tmp_path / 'sft'}"]
    assert main(sft) == 2
    assert "max_length=512 is more than the model's 128 positions" in capsys.readouterr().err


def test_trpo_refuses_a_kl_in_the_loss_it_would_not_apply_and_the_quickstart_too_few_pairs(capsys):
    from alignkit.trainers import TRPOConfig

    with pytest.raises(ValueError, match="kl_penalty='loss' is not a TRPO setting"):
        TRPOConfig(output_dir="unused", kl_penalty="loss", kl_coef=0.1).validate()
    TRPOConfig(output_dir="unused", kl_penalty="loss", kl_coef=0.0).validate()  # no KL at all: nothing to lose
    assert main(["quickstart", "pairs=16"]) == 2
    assert "pairs must be a finite number >= 64, got 16" in capsys.readouterr().err
