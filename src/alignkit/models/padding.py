"""Padding-aware indexing: where the last real token of each row is (position ids: :mod:`.forward`).

Every batch in alignkit carries an ``attention_mask`` ``[B, T]`` (1 = real token, 0 = padding) and may be
padded on the left (prompts for generation) or on the right (training batches). Both helpers here read
the mask, never the pad id: with a tokenizer whose pad token equals its EOS token, "ids != pad_id" would
also hide the real EOS that ends a response, and a reward read "before the first pad" would be read
before the EOS (see :func:`alignkit.models.loading.load_tokenizer`).

Each row's real tokens must be contiguous (left or right padding, not packed sequences).
"""

from __future__ import annotations

import torch

__all__ = ["last_token_index", "gather_last"]


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real (non-padding) token of each row.

    ``idx_b = max { t : mask_{b,t} = 1 }``, computed as ``argmax_t (t * mask_{b,t})``: correct for left
    padding, right padding, and no padding alike.

    Args:
        attention_mask: ``[B, T]`` 0/1 (or bool) tensor.
    Returns:
        ``[B]`` long tensor of indices in ``[0, T)``.
    Raises:
        ValueError: if a row has no real token (its "last token" would silently be position 0).
    """
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be [B, T], got shape {tuple(attention_mask.shape)}")
    real = attention_mask.bool()
    empty = ~real.any(dim=-1)
    if bool(empty.any()):
        rows = empty.nonzero().flatten().tolist()
        raise ValueError(f"attention_mask rows {rows} have no real token; cannot read a last token")
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (positions * real).argmax(dim=-1)


def gather_last(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Pick each row's entry at its last real token.

    Args:
        values: ``[B, T, ...]`` (e.g. per-token scores ``[B, T]`` or hidden states ``[B, T, d]``).
        attention_mask: ``[B, T]``.
    Returns:
        ``[B, ...]``: ``values[b, last_token_index(mask)[b]]``.
    """
    if values.shape[:2] != attention_mask.shape:
        raise ValueError(
            f"values {tuple(values.shape)} and attention_mask {tuple(attention_mask.shape)} disagree on [B, T]"
        )
    idx = last_token_index(attention_mask).to(values.device)
    return values[torch.arange(values.shape[0], device=values.device), idx]
