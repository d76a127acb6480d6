"""The shared training machinery: config, deterministic batching, the Accelerate loop, checkpoints, logging.

Names are imported on first use, so that ``alignkit.training.config`` (the options every command declares) loads
without torch: ``alignkit --help`` and option errors answer at once.
"""

import importlib

_WHERE = {
    "EpochBatcher": "batching",
    "CheckpointError": "checkpoint",
    "list_checkpoints": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "TrainConfig": "config",
    "option": "config",
    "NonFiniteLossError": "loop",
    "Trainer": "loop",
    "seed_everything": "loop",
    "MetricsLogger": "metrics",
    "build_optimizer": "optim",
    "build_scheduler": "optim",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
