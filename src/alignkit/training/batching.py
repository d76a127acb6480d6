"""Deterministic, resumable batch order.

The order of epoch e is ``randperm(N, generator=seed + e)``; the position inside it is part of every
checkpoint, so a resumed run sees exactly the batches the uninterrupted run would have seen. An
incomplete last batch of an epoch is dropped (every optimiser step sees ``batch_size`` examples, which the
gradient-normalisation scheme relies on); the dropped examples come first in the next epoch's shuffle.
"""

from __future__ import annotations

import torch


class EpochBatcher:
    """Yields index lists of ``batch_size`` examples, epoch after epoch, reproducibly."""

    def __init__(self, num_examples: int, batch_size: int, seed: int, shuffle: bool = True):
        if num_examples < batch_size:
            raise ValueError(
                f"the dataset has {num_examples} usable examples, fewer than batch_size={batch_size}: "
                "no optimiser step could be made (lower batch_size or add data)"
            )
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self.position = 0  # batches already taken from this epoch
        self._order = self._epoch_order(0)

    @property
    def batches_per_epoch(self) -> int:
        return self.num_examples // self.batch_size

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_examples)
        return torch.randperm(self.num_examples, generator=torch.Generator().manual_seed(self.seed + epoch))

    def next_batch(self) -> list[int]:
        if self.position >= self.batches_per_epoch:
            self.epoch += 1
            self.position = 0
            self._order = self._epoch_order(self.epoch)
        start = self.position * self.batch_size
        self.position += 1
        return self._order[start : start + self.batch_size].tolist()

    def indices_used(self, steps: int) -> list[int]:
        """The example indices that ``steps`` batches from the start (epoch 0) will take, sorted."""
        full, rest = divmod(steps, self.batches_per_epoch)
        span = self.batches_per_epoch * self.batch_size
        used: set[int] = set()
        for epoch in range(full + (rest > 0)):
            take = span if epoch < full else rest * self.batch_size
            used.update(self._epoch_order(epoch)[:take].tolist())
            if len(used) == self.num_examples:
                break
        return sorted(used)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position, "num_examples": self.num_examples,
                "batch_size": self.batch_size, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        for key in ("num_examples", "batch_size", "seed"):
            if state[key] != getattr(self, key):
                raise ValueError(f"checkpoint data state has {key}={state[key]}, this run has "
                                 f"{getattr(self, key)}: resuming would not continue the same data order")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])
        self._order = self._epoch_order(self.epoch)
