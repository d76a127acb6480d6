"""Exact resume in a fresh process, and data parallel over two CPU processes (gloo, torchrun)."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _run(args, launcher=()):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [*launcher, "-m", "tests.train.run_sft", *map(str, args)] if launcher else [
        sys.executable, "-m", "tests.train.run_sft", *map(str, args)]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-3000:]


def _load(path):
    return json.loads(pathlib.Path(path).read_text())


@pytest.mark.slow
def test_resume_in_a_fresh_process_is_bit_exact(tmp_path):
    _run([tmp_path / "straight.json", tmp_path / "straight", 8])
    _run([tmp_path / "first.json", tmp_path / "split", 8, "--save-steps", 4, "--stop-after", 4])
    _run([tmp_path / "second.json", tmp_path / "split", 8, "--resume", "latest"])
    straight, first, second = (_load(tmp_path / f) for f in ("straight.json", "first.json", "second.json"))
    assert first["losses"] + second["losses"] == straight["losses"]  # bit-exact, fp32 on CPU
    assert second["params"] == straight["params"]


@pytest.mark.slow
def test_two_process_data_parallel_equals_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(pathlib.Path(sys.executable).parent))
    if torchrun is None:
        pytest.skip("torchrun not found next to the interpreter")
    _run([tmp_path / "one.json", tmp_path / "one", 4])
    # the two processes also cut their 4 rows per step into parts of <= 12 padded tokens: 3 or 4 parts each, at
    # step 3 not as many on both ranks (only each rank's last part all-reduces)
    _run([tmp_path / "two.json", tmp_path / "two", 4, "--max-micro-batch-tokens", 12],
         launcher=(torchrun, "--nproc_per_node", "2", "--master_port", "29533"))
    one, two = _load(tmp_path / "one.json"), _load(tmp_path / "two.json")
    assert (one["world_size"], two["world_size"]) == (1, 2)  # really two processes (gloo), not two lone runs
    assert one["losses"] == pytest.approx(two["losses"], abs=1e-5)
    for name, values in one["params"].items():
        torch.testing.assert_close(torch.tensor(two["params"][name]), torch.tensor(values), atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_kill_9_during_checkpoint_and_final_writes_loses_nothing(tmp_path):
    """12 kill -9 at seeded random moments of a run whose every fsync is slowed (so most kills land while a
    checkpoint or final/ is being written), each followed by resume_from=latest: no incomplete checkpoint is
    ever loaded, and the finished run is bit-identical to one never interrupted."""
    import random
    import time

    from alignkit.training.checkpoint import list_checkpoints

    _run([tmp_path / "straight.json", tmp_path / "straight", 6, "--save-steps", 1])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "tests.train.run_sft", tmp_path / "killed.json", tmp_path / "killed", 6,
           "--save-steps", 1, "--resume", "latest", "--slow-writes", 0.02]
    rng, kills, attempts = random.Random(0), 0, 0
    while kills < 12 and attempts < 40:
        attempts += 1
        proc = subprocess.Popen(list(map(str, cmd)), cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
        assert proc.stdout.readline().strip() == "training"
        time.sleep(rng.uniform(0.05, 1.5))
        proc.kill()
        kills += proc.wait() == -9
        for ckpt in list_checkpoints(tmp_path / "killed"):  # what resume may pick is always whole
            assert (ckpt / "model" / "model.safetensors").is_file() and (ckpt / "optimizer.pt").is_file()
    assert kills >= 10, f"only {kills} of {attempts} runs were killed before they finished"
    _run(cmd[3:])  # the last resume runs to the end
    straight, killed = _load(tmp_path / "straight.json"), _load(tmp_path / "killed.json")
    assert killed["params"] == straight["params"]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "killed" / "final")
    leftovers = [p.name for p in (tmp_path / "killed").rglob("*") if ".tmp-" in p.name or ".old-" in p.name]
    assert leftovers == []
