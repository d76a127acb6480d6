"""Checkpoints that continue a run exactly, written atomically.

Layout of ``<output_dir>/checkpoints/step-00000012/``:
    model/              the trained module's state (safetensors), as ``save_pretrained`` writes it
    optimizer.pt        optimiser state          (loaded with ``weights_only=True``)
    scheduler.pt        LR scheduler state
    rng.pt              torch / python / numpy RNG states
    trainer_state.json  step, data position, trainer-specific state, model fingerprint

A checkpoint (and the final model, :func:`publish_directory`) is written to a temporary sibling directory,
flushed to disk and renamed into place only when complete, so a run killed (or a disk filling up) while
saving leaves the previous checkpoints intact; an incomplete temporary directory is never taken for a
checkpoint, and the next run removes it (:func:`clean_stale_temporaries`). Only the newest ``keep``
checkpoints are kept.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

STATE_FILE = "trainer_state.json"
_PREFIX = "step-"


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete, corrupt or from another model."""


def model_fingerprint(model: torch.nn.Module) -> dict:
    """What must match for a checkpoint to fit ``model``: class, and the names and shapes of its tensors."""
    shapes = {name: list(t.shape) for name, t in model.state_dict().items()}
    return {"class": type(model).__name__, "num_tensors": len(shapes),
            "num_elements": int(sum(int(np.prod(s)) for s in shapes.values())),
            "shapes_digest": _digest(json.dumps(sorted(shapes.items())))}


def _digest(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rng_state() -> dict:
    np_state = np.random.get_state()  # noqa: NPY002 - the global RNG is what user code draws from
    return {
        "torch": torch.get_rng_state(),
        "python": json.dumps(random.getstate()),
        "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": np_state[2],
                  "has_gauss": np_state[3], "cached_gaussian": np_state[4]},
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = json.loads(state["python"])
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    legacy = ("MT19937", n["key"].numpy().astype(np.uint32), int(n["pos"]), int(n["has_gauss"]),
              float(n["cached_gaussian"]))
    np.random.set_state(legacy)  # noqa: NPY002 - restore the global RNG user code draws from


def checkpoint_dir(output_dir: str | os.PathLike, step: int) -> Path:
    return Path(output_dir) / "checkpoints" / f"{_PREFIX}{step:08d}"


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(output_dir) / "checkpoints"
    if not root.is_dir():
        return []
    done = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(_PREFIX) and "." not in p.name
            and (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name[len(_PREFIX):]))


def save_checkpoint(output_dir, step: int, model: torch.nn.Module, optimizer, scheduler, trainer_state: dict,
                    keep: int, extras: dict | None = None) -> Path:
    """Write a complete checkpoint atomically and prune old ones. Returns its directory.

    ``extras``: ``{name: (module, optimizer)}`` saved beside the main model (e.g. PPO's critic) under
    ``extra-<name>/``.
    """
    final = checkpoint_dir(output_dir, step)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    _save_model_state(model, tmp / "model")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    for name, (module, module_optimizer) in (extras or {}).items():
        _save_model_state(module, tmp / f"extra-{name}")
        if module_optimizer is not None:  # None: its parameters are in the main optimiser
            torch.save(module_optimizer.state_dict(), tmp / f"extra-{name}" / "optimizer.pt")
    state = {"step": step, "fingerprint": model_fingerprint(model), **trainer_state}
    (tmp / STATE_FILE).write_text(json.dumps(state, indent=2))
    publish_directory(tmp, final)
    for old in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems cannot fsync a directory; the data files were synced
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """Flush every file and directory under ``root`` (and ``root``) to disk."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            _fsync(Path(directory) / name)
        _fsync(Path(directory))


def temporary_sibling(final: Path) -> Path:
    """An empty ``<final>.tmp-<pid>`` beside ``final`` to write into, then :func:`publish_directory` it."""
    tmp = final.parent / f"{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish_directory(tmp: Path, final: Path) -> None:
    """Make the complete directory ``tmp`` appear as ``final`` atomically: flushed to disk, then renamed. An
    existing ``final`` is first renamed to ``<final>.old-<pid>`` and removed after, so at every instant either
    the old or the new ``final`` is whole (:func:`clean_stale_temporaries` restores the old one if a run dies
    between the two renames)."""
    fsync_tree(tmp)
    old = final.parent / f"{final.name}.old-{os.getpid()}"
    if final.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(tmp, final)
    _fsync(final.parent)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    """Whether another live process has this pid (our own pid counts as not alive: its leftovers are stale)."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale_temporaries(output_dir: str | os.PathLike) -> list[Path]:
    """Remove what killed runs left behind in ``output_dir``: ``final.tmp-<pid>`` and
    ``checkpoints/step-*.tmp-<pid>`` of processes no longer alive; a ``final.old-<pid>`` with no ``final`` beside
    it (a run died between the two renames of :func:`publish_directory`) becomes ``final`` again. Returns
    the paths removed."""
    out, removed = Path(output_dir), []
    for parent in (out, out / "checkpoints"):
        if not parent.is_dir():
            continue
        for path in parent.iterdir():
            name, _, pid = path.name.rpartition("-")
            if not (pid.isdigit() and (name.endswith(".tmp") or name.endswith(".old"))) or pid_alive(int(pid)):
                continue
            live = parent / name[: -len(".old")]
            if name.endswith(".old") and not live.exists():
                os.replace(path, live)
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _save_model_state(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # tied weights share storage; safetensors wants distinct tensors
    seen, unique = {}, {}
    for k, v in state.items():
        key = (v.data_ptr(), v.shape, v.dtype) if v.numel() else None
        unique[k] = v.clone() if key in seen else v
        if key is not None:
            seen[key] = k
    save_file(unique, str(path / "model.safetensors"))


def resolve_resume(resume_from: str, output_dir) -> Path | None:
    """``""`` -> None; ``"latest"`` -> newest complete checkpoint in output_dir (None if there is none)."""
    if not resume_from:
        return None
    if resume_from == "latest":
        found = list_checkpoints(output_dir)
        return found[-1] if found else None
    path = Path(resume_from)
    if not path.is_dir():
        raise CheckpointError(f"resume_from={resume_from!r}: no such checkpoint directory")
    return path


def _read(file: Path, loader=None):
    """One checkpoint file: safetensors (``loader``) or ``torch.load(weights_only=True)``, which refuses anything
    but tensors and plain containers. Any failure is a :class:`CheckpointError` naming the file."""
    try:
        return loader(str(file)) if loader is not None else torch.load(file, weights_only=True)
    except Exception as e:  # UnpicklingError, SafetensorError, zip errors...: all mean a damaged or foreign file
        raise CheckpointError(f"checkpoint file {file} is damaged or not alignkit's ({type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}); it is never unpickled beyond tensors. "
                              "Remove that checkpoint directory to resume from an earlier one") from None


def load_checkpoint(path: Path, model: torch.nn.Module, optimizer, scheduler, extras: dict | None = None) -> dict:
    """Restore everything into the given objects; returns the trainer state (step, data position, ...)."""
    from safetensors.torch import load_file

    state_file = path / STATE_FILE
    needed = [state_file, path / "model" / "model.safetensors", path / "optimizer.pt", path / "scheduler.pt",
              path / "rng.pt"]
    for name, (_, module_optimizer) in (extras or {}).items():
        needed.append(path / f"extra-{name}" / "model.safetensors")
        if module_optimizer is not None:
            needed.append(path / f"extra-{name}" / "optimizer.pt")
    missing = [str(p.relative_to(path)) for p in needed if not p.is_file()]
    if missing:
        raise CheckpointError(f"checkpoint {path} is incomplete or corrupt: missing {missing}")
    try:
        state = json.loads(state_file.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {path}: {STATE_FILE} is not valid JSON ({e})") from None
    expected = model_fingerprint(model)
    if state.get("fingerprint") != expected:
        raise CheckpointError(
            f"checkpoint {path} was written for another model ({state.get('fingerprint')}), "
            f"not this one ({expected})"
        )
    try:
        model.load_state_dict(_read(path / "model" / "model.safetensors", load_file), strict=True)
        optimizer.load_state_dict(_read(path / "optimizer.pt"))
        scheduler.load_state_dict(_read(path / "scheduler.pt"))
        set_rng_state(_read(path / "rng.pt"))
        for name, (module, module_optimizer) in (extras or {}).items():
            module.load_state_dict(_read(path / f"extra-{name}" / "model.safetensors", load_file), strict=True)
            if module_optimizer is not None:
                module_optimizer.load_state_dict(_read(path / f"extra-{name}" / "optimizer.pt"))
    except (RuntimeError, OSError, KeyError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} could not be loaded: {e}") from e
    return state
