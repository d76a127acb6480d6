"""Child process for :func:`benchmarks.common.peak_rss_mib`; not meant to be run by hand.

Usage: ``python -m benchmarks._memprobe MODULE:FUNCTION 'JSON_KWARGS'``.

``FUNCTION(**kwargs)`` must do its warm-up (a tiny call of the measured function, so that torch's thread
pool and allocator start-up land in the baseline), create the inputs, and return a zero-argument callable:
the measured call. Around that one call this script reads the process's peak resident size and prints one
JSON line with ``peak_kib`` (the call's peak above the baseline), ``call_s`` (its wall time) and the raw
readings (``hwm_after_kib``: the process's whole peak during the call; ``rss_imports_kib``: the callable's
attribute of that name, if any, e.g. the resident size after the imports and before the model was built).

Which counter: ``ru_maxrss`` (``getrusage``) is preserved across ``execve``, so a child started by a big
parent (the benchmark runner holds GBs of tensors) begins with the *parent's* high-water mark and a
smaller call never moves it. We therefore read the same kernel counter per address space, ``VmHWM`` in
``/proc/self/status``, which starts fresh at exec; and right before the call we reset it to the current
resident size (``echo 5 > /proc/self/clear_refs``, Linux >= 4.0) so the baseline is exactly what the
process holds then (inputs included), not an earlier transient peak. Without ``/proc`` we fall back to
the ``ru_maxrss`` difference.
"""

from __future__ import annotations

import importlib
import json
import resource
import sys
import time


def _status_kib(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmHWM``, ``VmRSS``), or None where unavailable."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the peak resident size to the current one; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def main(argv: list[str]) -> None:
    target, kwargs = argv[0], json.loads(argv[1])
    module_name, func_name = target.split(":")
    call = getattr(importlib.import_module(module_name), func_name)(**kwargs)
    reset = _reset_hwm()
    rss_before, hwm_before = _status_kib("VmRSS"), _status_kib("VmHWM")
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    result = call()  # keep the result alive until after the readings
    call_s = time.perf_counter() - started
    hwm_after = _status_kib("VmHWM")
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    del result
    if hwm_after is not None and hwm_before is not None:
        method, peak = ("VmHWM reset", hwm_after - rss_before) if reset else ("VmHWM", hwm_after - hwm_before)
    else:
        method, peak = "ru_maxrss", maxrss_after - maxrss_before
    # optional: the resident size the probe function read before building anything (after its imports)
    print(json.dumps({"peak_kib": peak, "method": method, "call_s": call_s, "rss_before_kib": rss_before,
                      "rss_imports_kib": getattr(call, "rss_imports_kib", None),
                      "hwm_before_kib": hwm_before, "hwm_after_kib": hwm_after,
                      "ru_maxrss_before_kib": maxrss_before, "ru_maxrss_after_kib": maxrss_after}))


if __name__ == "__main__":
    main(sys.argv[1:])
