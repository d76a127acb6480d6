"""Command line: ``python -m benchmarks SUITE [SUITE ...] [--out PATH] [--quick]`` (from the repo root).

Each suite writes ``benchmarks/results/<suite>.json`` (``<suite>-quick.json`` with ``--quick``, so a smoke
run never overwrites full results; ``--out`` overrides the path when one suite is given) holding the
machine info, the run's settings and the suite's results, then prints its tables.

To add a suite, write ``benchmarks/<name>.py`` with ``run(quick)`` and ``tables(result)`` and list it in
:data:`SUITES`.
"""

from __future__ import annotations

import argparse
import importlib
import time
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.common import NOISY_FRACTION, contention, cpu_snapshot, machine_info, write_json

SUITES = {"core": "benchmarks.core", "generation": "benchmarks.generation", "training": "benchmarks.training",
          "training_long": "benchmarks.training_long",
          "online": "benchmarks.online", "classic": "benchmarks.classic",
          "generation_real": "benchmarks.generation_real", "online_real": "benchmarks.online_real"}
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def _noise_note(shared: dict) -> str:
    """``; other processes used 3% of the CPUs, steal 0.1%`` (and a warning when timings are disturbed)."""
    other, steal = shared["other_busy_fraction"], shared["steal_fraction"]
    if other is None:
        return ""
    note = f"; other processes used {100 * other:.0f}% of the CPUs, steal {100 * (steal or 0):.1f}%"
    if other > NOISY_FRACTION or (steal or 0) > NOISY_FRACTION:
        note += " -- WARNING: machine was shared, timings are unreliable; rerun when it is idle"
    return note


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("suites", nargs="+", choices=sorted(SUITES), help="suites to run, in order")
    parser.add_argument("--out", type=Path, help="JSON output path (one suite only); "
                        "default benchmarks/results/<suite>.json (<suite>-quick.json with --quick)")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (smoke tests)")
    args = parser.parse_args(argv)
    if args.out is not None and len(args.suites) > 1:
        parser.error("--out takes a single suite")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    machine = machine_info()
    print(f"machine: {machine['cpu_model']}, {machine['usable_cores']} cores (torch {machine['torch']}, "
          f"{machine['torch_threads']} threads, {machine['torch_cpu_capability']}; "
          f"flags: {' '.join(machine['cpu_flags']) or 'none'})")
    for name in args.suites:
        suite = importlib.import_module(SUITES[name])
        start, cpu_before = time.perf_counter(), cpu_snapshot()
        result = suite.run(quick=args.quick)
        elapsed, shared = time.perf_counter() - start, contention(cpu_before, cpu_snapshot())
        record = {"suite": name, "quick": args.quick, "created": datetime.now(timezone.utc).isoformat(),
                  "elapsed_s": elapsed, "contention": shared, "machine": machine, **result}
        default = RESULTS_DIR / f"{name}{'-quick' if args.quick else ''}.json"
        path = write_json(args.out or default, record)
        print(f"\n== suite {name}{' (quick)' if args.quick else ''}: {elapsed:.1f} s{_noise_note(shared)} ==")
        for table in suite.tables(result):
            print()
            print(table.render())
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
