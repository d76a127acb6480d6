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
    results = [line.split()[-1] for line in rows if not line.startswith(("-", "trainer"))]
    summary = results.pop()  # "21 ok, 0 FAIL": the last word of the summary line
    assert summary == "FAIL" and " 0 FAIL" in rows[-1], table
    assert results and all(r in ("ok", "skipped") or r.startswith("(") for r in results if r != "ok"), table
    assert "FAIL" not in results, table
