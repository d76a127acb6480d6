"""Metric logging: JSONL always, TensorBoard events when available, a progress bar with live metrics."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path


def rewind_jsonl(path: Path, step: int) -> int:
    """Keep the records of a ``metrics.jsonl``-style log up to ``step`` (a resumed run logs the later steps
    again) and drop a torn line (a run killed mid-write); rewritten atomically. Returns the lines dropped."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped += bool(line.strip())
            continue
        if isinstance(record, dict) and record.get("step", 0) <= step:
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
        tmp.write_text("".join(line + "\n" for line in kept))
        os.replace(tmp, path)
    return dropped


class MetricsLogger:
    """Append one JSON object per log call to ``<dir>/metrics.jsonl``; mirror scalars to TensorBoard.

    Only the main process writes (``enabled=False`` elsewhere). Values must be numbers; non-finite values
    are written as strings ("nan", "inf") so that the file stays valid JSON.
    """

    def __init__(self, run_dir: str | Path, enabled: bool = True, tensorboard: bool = True,
                 progress_total: int | None = None, progress: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        self._bar = None
        self._start = time.perf_counter()
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # optional dependency: say so once, keep logging JSONL
                print("alignkit: tensorboard is not installed (pip install 'alignkit[tensorboard]'); "
                      "metrics go to metrics.jsonl only")
            else:
                self._tb = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))
        if progress and progress_total:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=progress_total, desc="train", dynamic_ncols=True)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time_s": round(time.perf_counter() - self._start, 3)}
        for k, v in metrics.items():
            v = float(v)
            record[k] = v if math.isfinite(v) else str(v)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(k, float(v), step)
        if self._bar is not None:
            shown = {k: f"{float(v):.4g}" for k, v in list(metrics.items())[:4]}
            self._bar.set_postfix(shown, refresh=False)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.flush()
            self._tb.close()
        if self._bar is not None:
            self._bar.close()
