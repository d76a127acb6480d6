"""Faults while saving: a full disk during the final save, leftovers of killed runs, a run dying between the
two renames that publish a directory. Each asserts that nothing is lost and nothing incomplete is loaded."""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from alignkit.trainers import SFTConfig, SFTTrainer
from alignkit.training.checkpoint import clean_stale_temporaries, publish_directory

from . import tasks


@pytest.fixture(scope="module")
def tok():
    return tasks.tokenizer()


def _examples(tok):
    from alignkit.data import load_rows, tokenize_sft

    return tokenize_sft(load_rows(tasks.sft_rows(32)), tok, max_length=32)


def _dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_a_full_disk_during_the_final_save_leaves_the_previous_final_model_whole(tok, tmp_path):
    from transformers import AutoModelForCausalLM

    cfg = dict(output_dir=str(tmp_path), batch_size=8, progress=False, tensorboard=False, num_samples=0, save_steps=1,
               lr_scheduler="constant")
    SFTTrainer(SFTConfig(max_steps=1, **cfg), tasks.model(tok), _examples(tok), tokenizer=tok).train()
    before = (tmp_path / "final" / "model.safetensors").read_bytes()

    class DiskFull(SFTTrainer):
        def save_final(self, path):
            (path / "config.json").parent.mkdir(parents=True, exist_ok=True)
            (path / "config.json").write_text("{}")  # part of the directory is written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        DiskFull(SFTConfig(max_steps=2, resume_from="latest", **cfg), tasks.model(tok), _examples(tok),
                 tokenizer=tok).train()
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == before
    AutoModelForCausalLM.from_pretrained(tmp_path / "final")  # still loads
    assert [p.name for p in tmp_path.glob("final.tmp-*")]  # the half-written directory, beside it
    SFTTrainer(SFTConfig(max_steps=2, resume_from="latest", **cfg), tasks.model(tok), _examples(tok),
               tokenizer=tok).train()
    assert not list(tmp_path.glob("final.*"))  # cleaned by the next run, whose final model replaced the old
    assert (tmp_path / "final" / "model.safetensors").read_bytes() != before


def test_leftovers_of_dead_processes_are_removed_and_those_of_live_ones_kept(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    (tmp_path / "checkpoints").mkdir()
    stale = [tmp_path / f"final.tmp-{dead}", tmp_path / "checkpoints" / f"step-00000003.tmp-{dead}"]
    busy = [tmp_path / f"final.tmp-{alive}", tmp_path / "checkpoints" / f"step-00000004.tmp-{alive}"]
    keep = [tmp_path / "checkpoints" / "step-00000002", tmp_path / "final", tmp_path / "final.tmp-notapid"]
    for path in (*stale, *busy, *keep):
        path.mkdir()
        (path / "weights").write_bytes(b"x")
    assert sorted(clean_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in (*busy, *keep)) and not any(p.exists() for p in stale)


def test_a_run_that_died_between_the_two_renames_gets_its_previous_final_back(tmp_path):
    dead = _dead_pid()
    old = tmp_path / f"final.old-{dead}"  # the old final, renamed away; the new one never arrived
    old.mkdir()
    (old / "model.safetensors").write_bytes(b"weights")
    clean_stale_temporaries(tmp_path)
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == b"weights" and not old.exists()


def test_publish_directory_replaces_a_directory_whole(tmp_path):
    final = tmp_path / "final"
    for content in (b"one", b"two"):
        tmp = tmp_path / "final.tmp-1"
        tmp.mkdir()
        (tmp / "w").write_bytes(content)
        publish_directory(tmp, final)
        assert (final / "w").read_bytes() == content and not tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


# ------------------------------------------------------------------------------------------- run directories
def _sft(tok, out, **kwargs):
    cfg = SFTConfig(**{"output_dir": str(out), "batch_size": 8, "max_steps": 2, "save_steps": 1, "progress": False,
                       "tensorboard": False, "num_samples": 0, **kwargs})
    return SFTTrainer(cfg, tasks.model(tok), _examples(tok), tokenizer=tok)


def test_a_second_run_in_a_finished_run_directory_is_refused_and_changes_nothing(tok, tmp_path):
    from alignkit.training.run_dir import RunDirectoryError

    _sft(tok, tmp_path).train()
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(RunDirectoryError, match=r"already holds a run \(metrics.jsonl, final/, checkpoints/.*"
                                                r"resume_from=latest.*overwrite=true"):
        _sft(tok, tmp_path, seed=1).train()
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    history = _sft(tok, tmp_path, seed=1, overwrite=True).train()  # replaces it: one run's metrics only
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines if "loss" in json.loads(line)] == [1, 2]
    assert [h["step"] for h in history] == [1, 2]
    assert not (tmp_path / "run.lock").exists()  # released at the end


def test_a_run_directory_in_use_by_a_live_process_is_refused_and_a_dead_ones_lock_is_taken_over(tok, tmp_path):
    from alignkit.training.run_dir import RunDirectoryError

    tmp_path.mkdir(exist_ok=True)
    (tmp_path / "run.lock").write_text(str(os.getppid()))  # a live process
    with pytest.raises(RunDirectoryError, match=rf"in use by a running alignkit process \(pid {os.getppid()}"):
        _sft(tok, tmp_path).train()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.lock"]
    (tmp_path / "run.lock").write_text(str(_dead_pid()))
    _sft(tok, tmp_path).train()
    assert (tmp_path / "final" / "model.safetensors").is_file() and not (tmp_path / "run.lock").exists()


def test_the_command_line_refuses_a_used_run_directory_before_writing(tok, tmp_path, capsys):
    from alignkit.cli import main

    model_dir, run = tmp_path / "model", tmp_path / "run"
    tasks.model(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    rows = tmp_path / "sft.jsonl"
    rows.write_text("".join(json.dumps(r) + "\n" for r in tasks.sft_rows(4)))
    assert main(["sft", f"model={model_dir}", f"train_file={rows}", f"output_dir={run}"]) == 2
    assert "already holds a run (metrics.jsonl)" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["metrics.jsonl"]


# ------------------------------------------------------------------------------------------- honest resume
def test_resume_refuses_a_changed_learning_rate_and_logs_each_step_once_after_a_torn_line(tok, tmp_path):
    from alignkit.training.report import read_metrics

    _sft(tok, tmp_path, lr_scheduler="constant").train(stop_after=2)  # checkpoints 1 and 2, no final
    shutil.rmtree(tmp_path / "checkpoints" / "step-00000002")  # the run died after logging step 2 ...
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "loss": 0.')  # ... and while writing step 3's line
    with pytest.raises(ValueError, match=r"learning_rate 1e-05 -> 0.001 since step-00000001"):
        _sft(tok, tmp_path, lr_scheduler="constant", learning_rate=1e-3, resume_from="latest").train()
    history = _sft(tok, tmp_path, lr_scheduler="constant", max_steps=3, resume_from="latest").train()
    assert [h["step"] for h in history] == [2, 3]
    steps = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if "loss" in r]
    assert steps == [1, 2, 3]  # step 2 (logged before the crash, after checkpoint 1) once, no torn line


def test_the_report_reads_a_log_whose_last_line_is_torn(tmp_path):
    from alignkit.training.report import read_metrics

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 1.0}]
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "lo\n{"step": 2, "loss": 1.0}\n')
    with pytest.raises(ValueError, match="metrics.jsonl:1: not a JSON line"):
        read_metrics(tmp_path / "metrics.jsonl")  # damage in the middle is not a crash artefact: named


@pytest.mark.parametrize("victim", ["optimizer.pt", "model/model.safetensors"])
def test_a_tampered_checkpoint_file_is_named_and_nothing_is_unpickled(tok, tmp_path, victim):
    from alignkit.training import CheckpointError

    _sft(tok, tmp_path).train(stop_after=1)
    target = tmp_path / "checkpoints" / "step-00000001" / victim
    # a pickle that would run code if it were unpickled without weights_only
    target.write_bytes(b"cos\nsystem\n(S'touch " + str(tmp_path / "pwned").encode() + b"'\ntR.")
    with pytest.raises(CheckpointError, match=rf"checkpoint file .*{victim}.* is damaged or not alignkit's"):
        _sft(tok, tmp_path, resume_from="latest").train()
    assert not (tmp_path / "pwned").exists()
