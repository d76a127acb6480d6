"""Collators: tokenised examples -> right-padded batches of tensors, and optional SFT packing.

Batches are right-padded: row b holds its tokens at positions ``0 .. len_b - 1`` and ``pad_token_id``
after them (``attention_mask`` 0 there). Padding is read from the mask, never from the pad id (a pad id
equal to EOS would hide real EOS tokens; see :mod:`alignkit.models.padding`).

Targets are *not* shifted here: ``labels[b, t]`` / ``loss_mask[b, t]`` refer to the token at position t,
which the model predicts from the logits at position t - 1. A loss therefore reads

    logp = token_logprobs(logits[:, :-1], input_ids[:, 1:])          # [N, T-1], log pi(x_t | x_<t)
    seq_logp = (logp * loss_mask[:, 1:]).sum(-1)                    # [N], summed over response tokens

(:func:`alignkit.core.logprobs.token_logprobs`); transformers' causal LM loss does the same shift with
``labels``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .errors import LocatedList

__all__ = ["SFTCollator", "PreferenceCollator", "pack_sft"]

IGNORE_INDEX = -100


def _padded_length(lengths: Sequence[int], multiple: int | None) -> int:
    longest = max(lengths)
    return longest if not multiple else -(-longest // multiple) * multiple


def _pad(rows: Sequence[Sequence[int]], length: int, value: int) -> torch.Tensor:
    """``[len(rows), length]`` long tensor, each row right-padded with ``value``."""
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return out


def _check_multiple(pad_to_multiple_of: int | None) -> None:
    if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
        raise ValueError(f"pad_to_multiple_of must be >= 1 or None, got {pad_to_multiple_of}")


class SFTCollator:
    """``[{"input_ids", "labels"[, "position_ids"]}, ...]`` (B examples) -> a right-padded batch.

    Returns:
        input_ids: ``[B, T]`` long, ``pad_token_id`` after each row's tokens.
        attention_mask: ``[B, T]`` long, 1 on real tokens.
        labels: ``[B, T]`` long, the examples' labels, -100 on padding.
        position_ids: ``[B, T]`` long, only when the examples carry them (packed rows, :func:`pack_sft`);
            0 on padding.
    T is the longest example, rounded up to ``pad_to_multiple_of`` when set.

    >>> batch = SFTCollator(pad_token_id=0)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
    ...                                       {"input_ids": [8, 9], "labels": [-100, 9]}])
    >>> batch["input_ids"].tolist(), batch["attention_mask"].tolist(), batch["labels"].tolist()
    ([[5, 6, 7], [8, 9, 0]], [[1, 1, 1], [1, 1, 0]], [[-100, 6, 7], [-100, 9, -100]])
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        _check_multiple(pad_to_multiple_of)
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        if not examples:
            raise ValueError("cannot collate an empty batch")
        packed = ["position_ids" in ex for ex in examples]
        if any(packed) and not all(packed):
            raise ValueError("some examples carry position_ids (packed) and some do not; collate them apart")
        for i, ex in enumerate(examples):
            names = ("input_ids", "labels", "position_ids") if packed[0] else ("input_ids", "labels")
            lengths = {name: len(ex[name]) for name in names}
            if len(set(lengths.values())) != 1 or lengths["input_ids"] == 0:
                raise ValueError(f"example {i} of the batch has lengths {lengths}; they must be equal and > 0")
        lengths = [len(ex["input_ids"]) for ex in examples]
        t = _padded_length(lengths, self.pad_to_multiple_of)
        batch = {
            "input_ids": _pad([ex["input_ids"] for ex in examples], t, self.pad_token_id),
            "attention_mask": _pad([[1] * n for n in lengths], t, 0),
            "labels": _pad([ex["labels"] for ex in examples], t, IGNORE_INDEX),
        }
        if packed[0]:
            batch["position_ids"] = _pad([ex["position_ids"] for ex in examples], t, 0)
        return batch


class PreferenceCollator:
    """``[{"prompt_ids", "chosen_ids", "rejected_ids"}, ...]`` (B pairs) -> one batch for a single forward.

    Rows ``0 .. B-1`` are prompt + chosen of each pair, rows ``B .. 2B-1`` prompt + rejected, in the same
    order (pair b is rows b and B + b); all right-padded to a common T.

    Returns:
        input_ids: ``[2B, T]`` long.
        attention_mask: ``[2B, T]`` long, 1 on real tokens.
        loss_mask: ``[2B, T]`` long, 1 on the response tokens of each row (aligned with ``input_ids``; use
            ``loss_mask[:, 1:]`` with log-probs of ``input_ids[:, 1:]``, see the module docstring). Never 1
            at position 0: a prompt has at least one token.
        num_pairs: B (an int).

    >>> batch = PreferenceCollator(pad_token_id=0)([{"prompt_ids": [5, 6], "chosen_ids": [7, 2],
    ...                                              "rejected_ids": [8, 9, 2]}])
    >>> batch["input_ids"].tolist(), batch["loss_mask"].tolist(), batch["num_pairs"]
    ([[5, 6, 7, 2, 0], [5, 6, 8, 9, 2]], [[0, 0, 1, 1, 0], [0, 0, 1, 1, 1]], 1)
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None):
        _check_multiple(pad_to_multiple_of)
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, pairs: Sequence[dict]) -> dict:
        if not pairs:
            raise ValueError("cannot collate an empty batch")
        for i, pair in enumerate(pairs):
            for name in ("prompt_ids", "chosen_ids", "rejected_ids"):
                if not len(pair[name]):
                    raise ValueError(f"pair {i} of the batch has an empty {name}")
        sequences, response_masks = [], []
        for key in ("chosen_ids", "rejected_ids"):
            for pair in pairs:
                prompt, response = list(pair["prompt_ids"]), list(pair[key])
                sequences.append(prompt + response)
                response_masks.append([0] * len(prompt) + [1] * len(response))
        lengths = [len(s) for s in sequences]
        t = _padded_length(lengths, self.pad_to_multiple_of)
        return {
            "input_ids": _pad(sequences, t, self.pad_token_id),
            "attention_mask": _pad([[1] * n for n in lengths], t, 0),
            "loss_mask": _pad(response_masks, t, 0),
            "num_pairs": len(pairs),
        }


def pack_sft(examples: Sequence[dict], max_length: int) -> list[dict]:
    """Pack tokenised SFT examples, in order, into rows of at most ``max_length`` tokens.

    Greedy and order-preserving: an example goes into the current row if it fits, else starts a new one
    (nothing is split or dropped; an example longer than ``max_length`` is an error). Each packed row is
    ``{"input_ids", "labels", "position_ids"}``, with position ids restarting at 0 for every example and
    the label of every example's first token set to -100, so no loss term predicts one example from the
    previous one.

    Keeping examples from attending to each other: call the model with ``position_ids``,
    ``attention_mask=None`` and ``use_cache=False``. transformers (5.x; ``masking_utils.
    find_packed_sequence_indices``) then reads the restarting position ids as sequence boundaries and
    builds a block-diagonal causal mask, which gives the same logits as the examples run one by one
    (tested for Llama with SDPA). It does so only without a 2-D mask and without a KV cache (``use_cache``
    defaults to True in most configs, and a cache turns the detection off). Passing the collator's
    ``attention_mask``, leaving the cache on, or a model without that support, lets each example attend to
    the ones packed before it in its row (cross-contamination; only the position ids restart). The right
    padding :class:`SFTCollator` adds to a short row is harmless without a mask: causal attention never
    looks ahead, and its labels are -100.

    >>> rows = pack_sft([{"input_ids": [1, 2], "labels": [1, 2]}, {"input_ids": [3, 4], "labels": [-100, 4]},
    ...                  {"input_ids": [5, 6, 7], "labels": [5, 6, 7]}], max_length=4)
    >>> [(r["input_ids"], r["labels"], r["position_ids"]) for r in rows]
    [([1, 2, 3, 4], [-100, 2, -100, 4], [0, 1, 0, 1]), ([5, 6, 7], [-100, 6, 7], [0, 1, 2])]
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    where = examples.locations if isinstance(examples, LocatedList) else [f"example {i}" for i in range(len(examples))]
    rows: list[dict] = []
    current: dict | None = None
    for i, ex in enumerate(examples):
        ids, labels = list(ex["input_ids"]), list(ex["labels"])
        if not ids or len(ids) != len(labels):
            raise ValueError(f"{where[i]}: input_ids ({len(ids)}) and labels ({len(labels)}) must be equal and > 0")
        if len(ids) > max_length:
            raise ValueError(f"{where[i]}: {len(ids)} tokens do not fit a packed row of max_length={max_length}")
        if current is None or len(current["input_ids"]) + len(ids) > max_length:
            current = {"input_ids": [], "labels": [], "position_ids": []}
            rows.append(current)
        current["input_ids"] += ids
        current["labels"] += [IGNORE_INDEX, *labels[1:]]
        current["position_ids"] += list(range(len(ids)))
    return rows
