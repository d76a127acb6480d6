"""Faults while saving: a full disk during the final save, leftovers of killed runs, a run dying between the
two renames that publish a directory. Each asserts that nothing is lost and nothing incomplete is loaded."""

import errno
import os
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

    cfg = dict(output_dir=str(tmp_path), batch_size=8, progress=False, tensorboard=False, num_samples=0)
    SFTTrainer(SFTConfig(max_steps=1, **cfg), tasks.model(tok), _examples(tok), tokenizer=tok).train()
    before = (tmp_path / "final" / "model.safetensors").read_bytes()

    class DiskFull(SFTTrainer):
        def save_final(self, path):
            (path / "config.json").parent.mkdir(parents=True, exist_ok=True)
            (path / "config.json").write_text("{}")  # part of the directory is written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        DiskFull(SFTConfig(max_steps=2, **cfg), tasks.model(tok), _examples(tok), tokenizer=tok).train()
    assert (tmp_path / "final" / "model.safetensors").read_bytes() == before
    AutoModelForCausalLM.from_pretrained(tmp_path / "final")  # still loads
    assert [p.name for p in tmp_path.glob("final.tmp-*")]  # the half-written directory, beside it
    SFTTrainer(SFTConfig(max_steps=2, **cfg), tasks.model(tok), _examples(tok), tokenizer=tok).train()
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
