"""The shared training machinery: config, deterministic batching, the Accelerate loop, checkpoints, logging."""

from .batching import EpochBatcher
from .checkpoint import CheckpointError, list_checkpoints, load_checkpoint, save_checkpoint
from .config import TrainConfig, option
from .loop import NonFiniteLossError, Trainer, seed_everything
from .metrics import MetricsLogger
from .optim import build_optimizer, build_scheduler

__all__ = [
    "CheckpointError",
    "EpochBatcher",
    "MetricsLogger",
    "NonFiniteLossError",
    "TrainConfig",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "list_checkpoints",
    "load_checkpoint",
    "option",
    "save_checkpoint",
    "seed_everything",
]
