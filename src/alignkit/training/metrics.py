"""Metric logging: JSONL always, TensorBoard events when available, a progress bar with live metrics."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines log ([] when it does not exist). A torn last line (a run killed while writing
    it) is left out; a bad line elsewhere is a ValueError naming its number."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [(n, line) for n, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
    records = []
    for k, (number, line) in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as e:
            if k == len(lines) - 1:
                break
            raise ValueError(f"{path}:{number}: not a JSON line ({e.msg})") from None
    return records


def rewind_jsonl(path: Path, step: int) -> None:
    """Keep the records of a ``metrics.jsonl``-style log up to ``step`` (a resumed run logs the later steps
    again), dropping a torn last line; rewritten atomically."""
    if not path.is_file():
        return
    kept = [r for r in read_jsonl(path) if r.get("step", 0) <= step]
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in kept))
    os.replace(tmp, path)


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
