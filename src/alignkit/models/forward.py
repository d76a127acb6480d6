"""Every forward pass of a model over prompt + response, and the one position-ids convention.

DPO, the rollout, the online update, the reward scorer and the judges run their forwards through these:

* :func:`position_ids_from_mask`: position ids that count real tokens only (the generation engine's too);
* :func:`forward_logits` / :func:`model_logits`: logits, computing the LM head only where the caller needs
  it. Log-probs of a response need the logits at its R + 1 last positions only; transformers' causal LMs
  (``logits_to_keep``, transformers >= 4.50) can skip the LM head over the prompt, which for a long prompt
  and a large vocabulary is most of the ``[B, T, V]`` logits tensor and of the head's FLOPs;
* :func:`concat_sequences`, :func:`response_token_logits`, :func:`response_logprobs`,
  :func:`response_values`: a left-padded prompt ``[N, P]`` and a right-padded response ``[N, R]`` as one
  model input, and what a policy or a critic says about each response token.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from functools import lru_cache

import torch
from torch import nn

from ..core.logprobs import token_logprobs

__all__ = ["causal_mask_or_none", "concat_sequences", "forward_logits", "model_logits", "next_tokens",
           "position_ids_from_mask", "response_logprobs", "response_token_logits", "response_values"]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only: ``pos_{b,t} = (sum_{s<=t} mask_{b,s}) - 1``, clamped at 0.

    With these, a left-padded row gets the same positions (0, 1, 2, ...) for its real tokens as the
    unpadded sequence, so its outputs do not depend on how much padding precedes it (models with
    absolute position embeddings need this; rotary ones would otherwise only drift by float error).
    The generation engine uses the same convention. Padding positions get 0 (their outputs are unused).

    Args:
        attention_mask: ``[B, T]``.
    Returns:
        ``[B, T]`` long tensor.
    """
    return (attention_mask.long().cumsum(dim=-1) - 1).clamp(min=0)


def causal_mask_or_none(attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The attention mask to give a causal LM for a batch that is right-padded by construction: None when no
    row has a real token after a padding one (no padding, or right padding only), else ``attention_mask``.

    Under a causal mask a real token attends only to earlier positions, so padding *after* every real token
    changes nothing at real positions: the causal mask alone gives the same outputs there (padding positions'
    outputs differ; callers never read them). Without an explicit mask, transformers' SDPA attention runs with
    ``is_causal`` and PyTorch's fused kernel instead of building a ``[B, 1, T, T]`` mask for its unfused path
    (DPO at batch 16 pairs and 1,024 tokens on the tiny model: see benchmarks/training_long.py).

    Used where every batch is right-padded (the SFT, reward-model and DPO collators), so the kernel is the same
    for every batch and every split of a batch over processes. The online trainers keep their masks: with
    left-padded prompts a mask is needed anyway, and dropping it only for the odd micro-batch of equal-length
    prompts would make the kernel, and so the last bits of a result, depend on how the batch was split.
    Position ids are the caller's to give (:func:`position_ids_from_mask` of the real mask).

    Args:
        attention_mask: ``[B, T]`` (1 = real token) or None.
    """
    if attention_mask is None:
        return None
    mask = attention_mask.bool()
    if bool((mask[:, 1:] & ~mask[:, :-1]).any()):  # a real token after padding: left padding or holes
        return attention_mask
    return None


def next_tokens(input_ids: torch.Tensor) -> torch.Tensor:
    """``[B, T] -> [B, T]``: the token each position predicts, ``input_ids[:, t + 1]``; the last column (which
    predicts nothing) holds a valid placeholder id. ``token_logprobs(logits, next_tokens(ids))[:, :-1]`` equals
    ``token_logprobs(logits[:, :-1], ids[:, 1:])`` without copying the ``[B, T-1, V]`` slice of the logits (and
    of their gradient)."""
    return torch.roll(input_ids, shifts=-1, dims=1)


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


def model_logits(model, input_ids, attention_mask, position_ids=None, keep_last: int = 0) -> torch.Tensor:
    """Logits ``[N, L, V]`` from a causal LM or a :class:`~alignkit.models.ReferenceModel`; with ``keep_last``
    > 0 only the last positions ``[N, keep_last, V]``, which the model then computes alone when it can
    (:func:`forward_logits`)."""
    from .reference import ReferenceModel  # reference.py imports this module

    if isinstance(model, ReferenceModel):
        return model.logits(input_ids, attention_mask, position_ids, keep_last=keep_last)
    return forward_logits(model, input_ids, attention_mask, position_ids, keep_last)


def response_token_logits(model, ids, mask, pos, response_len: int) -> torch.Tensor:
    """Logits scoring each of the last ``response_len`` tokens of ``ids``: ``[N, R, V]`` (position P - 1 + t
    scores response token t). The LM head runs over those R positions only, not over the prompt."""
    return model_logits(model, ids, mask, pos, keep_last=response_len + 1)[:, :-1]


def concat_sequences(prompt_ids, prompt_mask, response_ids, response_mask):
    """Prompt + response as model input: (ids, mask, position ids), each ``[N, P + R]``.

    Position ids count real tokens only, so left padding of the prompt does not shift them.
    """
    ids = torch.cat([prompt_ids, response_ids], 1)
    mask = torch.cat([prompt_mask, response_mask], 1)
    return ids, mask, position_ids_from_mask(mask)


def _micro_batches(prompt_ids, prompt_mask, response_ids, response_mask, batch_size: int | None) -> Iterator:
    """Yield (row slice, ids ``[b, P+R]``, mask ``[b, P+R]``, position ids ``[b, P+R]``) per micro-batch."""
    n = prompt_ids.shape[0]
    batch_size = batch_size or n
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        yield sl, *concat_sequences(prompt_ids[sl], prompt_mask[sl], response_ids[sl], response_mask[sl])


def response_logprobs(
    model,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    temperature: float = 1.0,
    batch_size: int | None = None,
) -> torch.Tensor:
    """log pi(a_t | s_t) of each response token, fp32, ``[N, R]`` (0 at padding).

    Runs ``model`` on prompt+response (left-padded prompt, so position ids count real tokens) and scores
    token t with the logits at position P - 1 + t. Gradients flow if called with grad enabled.
    """
    outs = []
    for sl, ids, mask, pos in _micro_batches(prompt_ids, prompt_mask, response_ids, response_mask, batch_size):
        logits = response_token_logits(model, ids, mask, pos, response_ids.shape[1])
        lp = token_logprobs(logits, response_ids[sl], temperature)
        outs.append(lp * response_mask[sl])
    return torch.cat(outs, 0)


def response_values(
    critic: Callable[..., torch.Tensor],
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    response_ids: torch.Tensor,
    response_mask: torch.Tensor,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Critic values V(s_t) for each response token, ``[N, R]`` (0 at padding).

    ``critic(input_ids, attention_mask, position_ids) -> [N, L]`` per-position values; V(s_t) is read at
    position P - 1 + t, the state before token t is generated.
    """
    p = prompt_ids.shape[1]
    outs = []
    for sl, ids, mask, pos in _micro_batches(prompt_ids, prompt_mask, response_ids, response_mask, batch_size):
        values = critic(ids, mask, pos)
        outs.append(values[:, p - 1 : -1].float() * response_mask[sl])
    return torch.cat(outs, 0)
