"""Shared helpers for the benchmark suites: timing, peak memory, machine info, JSON and tables.

Timing: :func:`time_interleaved` runs each candidate ``warmup`` times, then ``repeats`` rounds in which
every candidate runs once (round-robin, so slow drift of a noisy machine hits all candidates alike), and
reports the median of ``time.perf_counter`` deltas. Compare candidates by their ratio within one run, not
by absolute numbers across machines or runs.

Peak memory: :func:`peak_rss_mib` measures in a fresh subprocess (see :mod:`benchmarks._memprobe`): after
a warm-up call on a tiny input and after the inputs exist, it reads the process's peak resident size right
before and right after one call. The difference is the call's peak allocation above what the process
already held (its inputs included): large torch CPU tensors are mmapped and returned to the OS when freed,
so the high-water mark moves only when the call itself needs more. Min over a few subprocesses. The
counter is ``VmHWM`` (reset to the current size just before the call), not ``ru_maxrss``: the latter
survives ``execve`` and would start at the big parent's peak.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# Share of the CPUs used by other processes (or the hypervisor) above which timings are flagged unreliable.
NOISY_FRACTION = 0.10

# CPU flags worth knowing when reading the numbers (vector width, bf16/fp16/int8 matmul support).
INTERESTING_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                     "amx_tile", "amx_bf16", "amx_int8")


# glibc raises its mmap threshold after freeing large blocks, so freed memory (activations, a model cast to
# another dtype) stays resident and is reused without raising the RSS: a peak measured after such frees shows
# the allocator's retention, not what a call needs. A fixed threshold returns large blocks to the system.
FIXED_MMAP = {"MALLOC_MMAP_THRESHOLD_": "131072"}


def time_interleaved(fns: dict[str, Callable[[], object]], warmup: int = 1, repeats: int = 5) -> dict:
    """Median wall time of each zero-argument callable, measured round-robin; ``{name: stats}``.

    ``stats`` holds ``median_s``, ``min_s``, the raw ``times_s`` and ``other_busy_fraction``, the share of
    the CPUs other processes used while these timings ran (see :func:`contention`; above
    :data:`NOISY_FRACTION` the timings are not trustworthy).
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    before = cpu_snapshot()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    other = contention(before, cpu_snapshot())["other_busy_fraction"]
    return {name: {"median_s": statistics.median(ts), "min_s": min(ts), "times_s": ts,
                   "other_busy_fraction": other} for name, ts in times.items()}


def _child_env() -> dict[str, str]:
    """Environment for probe subprocesses: the repo root (and ``src/`` if we import from it) importable."""
    paths = [str(REPO_ROOT)]
    src = str(REPO_ROOT / "src")
    if src in sys.path:
        paths.append(src)
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def peak_rss_mib(target: str, kwargs: dict, repeats: int = 2, timeout_s: float = 120.0,
                 env: dict | None = None) -> dict:
    """Peak memory of one call in MiB above what the process held right before it; min over ``repeats``.

    ``target`` is ``"module:function"``; the function gets ``**kwargs`` in a fresh interpreter, does its
    warm-up and input creation, and returns the zero-argument call to measure (see ``_memprobe``).
    ``env``: extra environment variables for the probe (e.g. an allocator setting).
    Returns ``{"peak_mib": min, "samples_mib": [...], "method": ..., "readings": [raw JSON of each probe]}``.
    """
    samples, methods, readings = [], set(), []
    for _ in range(repeats):
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks._memprobe", target, json.dumps(kwargs)],
            cwd=REPO_ROOT, env={**_child_env(), **(env or {})}, capture_output=True, text=True, timeout=timeout_s,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"memory probe {target} {kwargs} failed:\n{proc.stderr[-2000:]}")
        reading = json.loads(proc.stdout.strip().splitlines()[-1])
        samples.append(reading["peak_kib"] / 1024.0)
        methods.add(reading["method"])
        readings.append(reading)
    return {"peak_mib": min(samples), "samples_mib": samples, "method": "/".join(sorted(methods)),
            "readings": readings}


def cpu_snapshot() -> dict:
    """Machine-wide CPU counters from ``/proc/stat`` plus this process's own CPU time, for :func:`contention`."""
    names = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
    try:
        with open("/proc/stat") as f:
            jiffies = dict(zip(names, map(int, f.readline().split()[1:9]), strict=False))
    except (OSError, ValueError):
        jiffies = {}
    t = os.times()
    return {"jiffies": jiffies, "own_cpu_s": t.user + t.system + t.children_user + t.children_system,
            "wall_s": time.monotonic()}


def contention(before: dict, after: dict) -> dict:
    """How much the machine was shared during a run: noise hints for the timings.

    ``other_busy_fraction``: CPU time used by *other* processes (machine busy time minus ours and our
    children's) over wall time x cores; ``steal_fraction``: share of CPU time taken by the hypervisor.
    """
    j0, j1 = before["jiffies"], after["jiffies"]
    if not j0 or not j1:
        return {"other_busy_fraction": None, "steal_fraction": None}
    delta = {k: j1[k] - j0[k] for k in j1}
    total = sum(delta.values())
    busy_s = (total - delta.get("idle", 0) - delta.get("iowait", 0) - delta.get("steal", 0)) / os.sysconf(
        "SC_CLK_TCK")
    capacity_s = (after["wall_s"] - before["wall_s"]) * (os.cpu_count() or 1)
    other = max(0.0, busy_s - (after["own_cpu_s"] - before["own_cpu_s"])) / capacity_s if capacity_s else None
    return {"other_busy_fraction": other, "steal_fraction": delta.get("steal", 0) / total if total else None}


def _cpu_model_and_flags() -> tuple[str, list[str]]:
    """CPU model name and the :data:`INTERESTING_FLAGS` it has, from ``/proc/cpuinfo`` (first CPU)."""
    model, present = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model is None:
                    model = value.strip()
                elif key == "flags" and not present:
                    present = set(value.split())
    except OSError:
        pass
    return model or platform.processor() or "unknown", [f for f in INTERESTING_FLAGS if f in present]


def machine_info() -> dict:
    """CPU model, core counts, selected CPU flags, torch/numpy/python versions and torch's threads."""
    import numpy as np
    import torch

    model, flags = _cpu_model_and_flags()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        usable = os.cpu_count()
    return {
        "cpu_model": model,
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "cpu_flags": flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
    }


def write_json(path: str | Path, data: dict) -> Path:
    """Write ``data`` as indented JSON (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


@dataclass
class Table:
    """A titled table of already-formatted cells; ``notes`` are printed under it."""

    title: str
    columns: Sequence[str]
    rows: list[Sequence[object]]
    notes: list[str] = field(default_factory=list)

    def render(self) -> str:
        """Plain-text table: left-aligned first column, right-aligned others."""
        cells = [[str(c) for c in self.columns]] + [[str(c) for c in row] for row in self.rows]
        widths = [max(len(row[i]) for row in cells) for i in range(len(self.columns))]

        def line(row: Sequence[str]) -> str:
            pairs = enumerate(zip(row, widths, strict=True))
            return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs)

        out = [self.title, line(cells[0]), "  ".join("-" * w for w in widths)]
        out += [line(row) for row in cells[1:]] + [f"  {note}" for note in self.notes]
        return "\n".join(out)


def fmt(x: float | None, spec: str = ".3g") -> str:
    """Format a number for a table cell; ``-`` for missing values."""
    return "-" if x is None else format(x, spec)
