"""The few pieces of multi-process work that several trainers share: the accelerator, a process's share of a
list, and gathering every process's Python objects.

A process's share is a contiguous slice of the global list in rank order, so gathering the shares in rank
order restores the global order (what makes N processes give one process's result).
"""

from __future__ import annotations

import os

import torch

__all__ = ["gather_objects", "make_accelerator", "process_share"]


def make_accelerator():
    """The ``accelerate.Accelerator`` every trainer and sampling job runs on.

    Several processes without CUDA (``torchrun`` / ``accelerate launch --multi_gpu`` on CPUs) must ask Accelerate
    for CPU data parallelism explicitly (``cpu=True``: gloo); otherwise each process would silently train alone.
    """
    from accelerate import Accelerator

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return Accelerator(cpu=several and not torch.cuda.is_available())


def process_share(n: int, rank: int, world_size: int) -> range:
    """Indices ``[rank * k, (rank + 1) * k)`` of ``n`` items, k = ceil(n / world_size) (the last share may be
    shorter or empty)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must lie in [0, world_size={world_size}), got {rank}")
    k = -(-n // world_size)
    return range(min(rank * k, n), min((rank + 1) * k, n))


def gather_objects(obj, world_size: int) -> list:
    """Every process's ``obj`` in rank order (``[obj]`` with one process); picklable objects, CPU tensors."""
    if world_size == 1:
        return [obj]
    parts: list = [None] * world_size
    torch.distributed.all_gather_object(parts, obj)
    return parts
