"""A run directory belongs to one run.

* While a run is alive it holds ``<output_dir>/run.lock`` (its pid, created exclusively): a second run on
  the same directory fails at once, naming the owner. A lock whose process is gone is taken over.
* A directory that holds another run's results (``metrics.jsonl``, ``final/``, checkpoints) is refused unless
  the user continues that run (``resume_from``) or replaces it (``overwrite=true``, which first removes those
  results). Otherwise two runs' metrics would mix, the new ``final/`` would replace the old one, and the new
  run's checkpoints would be pruned as "older" than the old run's higher step numbers.

:func:`check_run_dir` only reads, so the command line calls it before writing anything; the training loop
calls :func:`claim_run_dir` when a run starts.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .checkpoint import pid_alive

LOCK_FILE = "run.lock"
RESULTS = ("metrics.jsonl", "final", "checkpoints", "samples.jsonl", "report.html", "tensorboard")


class RunDirectoryError(RuntimeError):
    """The run directory is in use by a live run, or holds another run's results."""


def _lock_owner(run_dir: Path) -> int | None:
    """The pid of the live run holding ``run_dir``'s lock, else None (no lock, or its process is gone)."""
    try:
        text = (run_dir / LOCK_FILE).read_text().strip()
    except OSError:
        return None
    pid = int(text) if text.isdigit() else None
    return pid if pid is not None and pid_alive(pid) else None


def existing_results(run_dir: Path) -> list[str]:
    """Names of the results of an earlier run present in ``run_dir``."""
    found = []
    for name in RESULTS:
        path = run_dir / name
        if path.is_file() or (path.is_dir() and any(path.iterdir())):
            found.append(name + ("/" if path.is_dir() else ""))
    return found


def check_run_dir(output_dir: str | os.PathLike, resume_from: str = "", overwrite: bool = False) -> None:
    """Raise :class:`RunDirectoryError` if a new run may not start in ``output_dir`` (read-only)."""
    run_dir = Path(output_dir)
    owner = _lock_owner(run_dir)
    if owner is not None:
        raise RunDirectoryError(f"output_dir {str(run_dir)!r} is in use by a running alignkit process (pid {owner}, "
                                f"{run_dir / LOCK_FILE}); choose another output_dir or wait for it to finish")
    if resume_from or overwrite:
        return
    found = existing_results(run_dir)
    if found:
        raise RunDirectoryError(
            f"output_dir {str(run_dir)!r} already holds a run ({', '.join(found)}); choose another output_dir, "
            "continue that run with resume_from=latest, or replace it with overwrite=true")


def claim_run_dir(output_dir: str | os.PathLike, resume_from: str = "", overwrite: bool = False,
                  check: bool = True) -> Path:
    """Check ``output_dir`` (:func:`check_run_dir`), remove an earlier run's results when ``overwrite`` (and not
    resuming), and take the lock. ``check=False``: only take the lock again (a run continuing in the same
    process after ``train(stop_after=...)``). Returns the lock file; :func:`release_run_dir` removes it."""
    run_dir = Path(output_dir)
    if check:
        check_run_dir(run_dir, resume_from, overwrite)
    run_dir.mkdir(parents=True, exist_ok=True)
    if check and overwrite and not resume_from:
        for name in RESULTS:
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    lock = run_dir / LOCK_FILE
    lock.unlink(missing_ok=True)  # a dead run's lock (check_run_dir refused a live one)
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:  # another run took it between the check and now
        raise RunDirectoryError(f"output_dir {str(run_dir)!r} was claimed by another run just now "
                                f"({lock}: pid {lock.read_text().strip() or '?'})") from None
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return lock


def release_run_dir(output_dir: str | os.PathLike) -> None:
    """Remove this process's lock on ``output_dir`` (a lock of another pid is left alone)."""
    lock = Path(output_dir) / LOCK_FILE
    try:
        if lock.read_text().strip() == str(os.getpid()):
            lock.unlink()
    except OSError:
        pass
