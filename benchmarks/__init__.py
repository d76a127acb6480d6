"""alignkit benchmark suites: ``python -m benchmarks core [--quick] [--out PATH]``.

Each suite is a module of this package (``benchmarks/core.py``, later ``generation.py``, ``training.py``)
that exposes::

    run(quick: bool) -> dict            # JSON-ready results; may contain a "targets" list
    tables(result: dict) -> list[Table]  # what to print (see benchmarks.common.Table)

and is listed in ``benchmarks.__main__.SUITES``. Shared helpers (timing, peak memory, machine info, JSON,
tables) live in :mod:`benchmarks.common`. Only torch, numpy and the standard library are used.
"""
