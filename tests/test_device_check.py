"""scripts/device_check.sh --dry-run: every trainer (bf16, full and LoRA) and the generation check on CPU."""

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_device_check_dry_run_passes():
    done = subprocess.run(["bash", str(REPO / "scripts" / "device_check.sh"), "--dry-run"], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=600,
                          check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    table = done.stdout.split("== device check (dry run, CPU)", 1)[1]
    rows = [line for line in table.splitlines()[2:] if line.strip()]
    assert any(line.startswith("ppo ") for line in rows) and any(line.startswith("generate:alignkit") for line in rows)
    assert "FAIL" not in table, table
