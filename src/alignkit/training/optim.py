"""AdamW with decoupled weight decay, and warmup + linear/cosine/constant schedules."""

from __future__ import annotations

import math

import torch


def build_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    eps: float) -> torch.optim.AdamW:
    """AdamW over trainable parameters; biases and 1-D weights (norms) get no weight decay."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, eps=eps)


def lr_lambda(kind: str, warmup_steps: int, total_steps: int):
    """Multiplier of the peak learning rate at step s (0-based, applied after s optimiser steps).

    warmup: (s + 1) / (warmup + 1) for s < warmup; then linear: decays to 0 at total_steps; cosine:
    0.5 (1 + cos(pi * progress)); constant: 1.
    """
    def fn(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        progress = min(max(progress, 0.0), 1.0)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0
    return fn


def build_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int, total_steps: int):
    if kind not in ("linear", "cosine", "constant"):
        raise ValueError(f"lr_scheduler must be 'linear', 'cosine' or 'constant', got {kind!r}")
    if warmup_steps > total_steps:
        raise ValueError(f"warmup_steps={warmup_steps} is more than the run's {total_steps} optimiser steps: the "
                         "learning rate would never reach learning_rate")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(kind, warmup_steps, total_steps))
