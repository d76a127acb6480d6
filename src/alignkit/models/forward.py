"""One forward pass for logits, computing the LM head only where the caller needs it.

Log-probs of a response need the logits at its R + 1 last positions only; transformers' causal LMs
(``logits_to_keep``, transformers >= 4.50) can skip the LM head over the prompt, which for a long prompt and a
large vocabulary is most of the ``[B, T, V]`` logits tensor and of the head's FLOPs.
"""

from __future__ import annotations

import inspect
from functools import lru_cache

import torch
from torch import nn

__all__ = ["forward_logits"]


@lru_cache(maxsize=64)
def _takes_logits_to_keep(forward_type: type) -> bool:
    """Whether ``forward_type.forward`` names ``logits_to_keep`` (a ``**kwargs`` catch-all does not count)."""
    try:
        return "logits_to_keep" in inspect.signature(forward_type.forward).parameters
    except (TypeError, ValueError):
        return False


def forward_logits(model: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                   position_ids: torch.Tensor | None = None, keep_last: int = 0) -> torch.Tensor:
    """Logits ``[B, T, V]``, or ``[B, keep_last, V]`` for the last ``keep_last`` positions when it is > 0.

    The model computes only those positions when its forward takes ``logits_to_keep`` (for a peft model, its
    base model's is checked; for a DDP / FSDP wrapper, its module's); otherwise the full logits are computed
    and sliced. The values are the same either way: the head is applied position by position.
    """
    base = getattr(model, "module", model)  # a DDP / FSDP wrapper: its module's forward is what runs
    base = base.get_base_model() if hasattr(base, "get_base_model") else base
    kwargs = {"logits_to_keep": keep_last} if keep_last > 0 and _takes_logits_to_keep(type(base)) else {}
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                   **kwargs).logits
    return logits[:, -keep_last:] if keep_last > 0 else logits
