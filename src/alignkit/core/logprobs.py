"""Token log-probabilities and entropy from logits, chunked over rows.

A language model's logits are ``[B, T, V]``; with V = 128k and a few thousand tokens that is gigabytes.
The naive ``torch.log_softmax(logits.float(), -1).gather(-1, tokens)`` materialises a second full-size fp32
tensor (and autograd keeps it for the backward pass). Here we only ever materialise ``chunk_rows x V``
at a time:

    log pi(a_t | s_t) = z_{t, a_t} / T  -  logsumexp_v(z_{t, v} / T)          (softmax with temperature T)

and the backward pass recomputes the softmax chunk by chunk instead of storing it:

    d log pi(a) / d z_v = (1[v = a] - softmax(z / T)_v) / T.

Sampling at temperature T and then scoring at temperature 1 gives log-probs of a *different* policy than
the one that sampled (seed 000's importance weights would be off by a constant factor per token): pass the
same ``temperature`` here that the sampler used.
"""

from __future__ import annotations

import torch

__all__ = ["token_logprobs", "entropy_from_logits", "naive_token_logprobs", "DEFAULT_CHUNK_ELEMENTS"]

# Rows per chunk are chosen so that a chunk holds about this many elements (4 MiB of fp32): small enough
# to stay in cache, large enough that Python overhead per chunk is negligible.
DEFAULT_CHUNK_ELEMENTS = 1 << 20


def _rows_per_chunk(vocab: int, chunk_rows: int | None) -> int:
    if chunk_rows is not None:
        if chunk_rows < 1:
            raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
        return chunk_rows
    return max(1, DEFAULT_CHUNK_ELEMENTS // max(vocab, 1))


def _check_temperature(temperature: float) -> float:
    temperature = float(temperature)
    if not temperature > 0.0 or temperature != temperature or temperature == float("inf"):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")
    return temperature


def _scaled_chunk(logits: torch.Tensor, start: int, stop: int, temperature: float) -> torch.Tensor:
    """Rows [start, stop) of ``logits`` in fp32, divided by the temperature. ``[rows, V]``."""
    chunk = logits[start:stop].float()
    return chunk / temperature if temperature != 1.0 else chunk


class _TokenLogprobs(torch.autograd.Function):
    """Chunked gather-minus-logsumexp; saves only the logits (by reference) and one fp32 scalar per row."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, tokens: torch.Tensor, temperature: float, rows: int):
        n, _ = logits.shape
        out = torch.empty(n, dtype=torch.float32, device=logits.device)
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        for start in range(0, n, rows):
            chunk = _scaled_chunk(logits, start, start + rows, temperature)
            chunk_lse = torch.logsumexp(chunk, dim=-1)
            lse[start : start + rows] = chunk_lse
            picked = chunk.gather(-1, tokens[start : start + rows, None]).squeeze(-1)
            out[start : start + rows] = picked - chunk_lse
        ctx.save_for_backward(logits, tokens, lse)
        ctx.temperature = temperature
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        logits, tokens, lse = ctx.saved_tensors
        temperature, rows = ctx.temperature, ctx.rows
        grad_logits = torch.empty_like(logits)
        grad_out = grad_out.float()
        for start in range(0, logits.shape[0], rows):
            stop = start + rows
            chunk = _scaled_chunk(logits, start, stop, temperature)
            # d/dz [z_a/T - lse(z/T)] = (onehot_a - softmax(z/T)) / T, scaled by the incoming gradient.
            probs = torch.exp(chunk - lse[start:stop, None])
            g = grad_out[start:stop, None]
            grad = probs.mul_(-g)
            grad.scatter_add_(-1, tokens[start:stop, None], g)
            if temperature != 1.0:
                grad.div_(temperature)
            grad_logits[start:stop] = grad
        return grad_logits, None, None, None


def token_logprobs(
    logits: torch.Tensor,
    tokens: torch.Tensor,
    temperature: float = 1.0,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Log-probability of each given token under ``softmax(logits / temperature)``.

    Equation (seed 000, "Expanding the gradient"): log pi(a_t | s_t) = z_{a_t}/T - logsumexp(z/T).

    Args:
        logits: ``[..., V]`` float tensor (fp32, bf16 or fp16); position ``i`` scores ``tokens[i]``
            (shift logits and labels yourself: ``logits[:, :-1]`` scores ``input_ids[:, 1:]``).
        tokens: ``[...]`` integer tensor, same leading shape as ``logits``.
        temperature: the sampling temperature T > 0.
        chunk_rows: rows processed at once; default picks about 1M elements per chunk.

    Returns:
        ``[...]`` fp32 log-probabilities. Differentiable w.r.t. ``logits``; the backward pass recomputes
        the softmax chunk by chunk, so at most ``chunk_rows x V`` fp32 temporaries exist at a time.
    """
    temperature = _check_temperature(temperature)
    if logits.shape[:-1] != tokens.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and tokens {tuple(tokens.shape)} must share their leading shape"
        )
    if tokens.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"tokens must be an integer tensor, got {tokens.dtype}")
    lead = tokens.shape
    vocab = logits.shape[-1]
    flat_logits = logits.reshape(-1, vocab)
    flat_tokens = tokens.reshape(-1).long()
    if flat_tokens.numel() and (int(flat_tokens.min()) < 0 or int(flat_tokens.max()) >= vocab):
        raise ValueError(f"token ids must lie in [0, {vocab}); got range [{int(flat_tokens.min())}, "
                         f"{int(flat_tokens.max())}]")
    rows = _rows_per_chunk(vocab, chunk_rows)
    out = _TokenLogprobs.apply(flat_logits, flat_tokens, temperature, rows)
    return out.reshape(lead)


def naive_token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Reference implementation: ``log_softmax(logits / T).gather(tokens)``; materialises ``[..., V]`` fp32.

    Kept for tests and benchmarks; use :func:`token_logprobs` in real code.
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)


class _Entropy(torch.autograd.Function):
    """H(softmax(z/T)) chunked. dH/dz_v = -p_v (z_v/T - E_p[z/T]) / T."""

    @staticmethod
    def forward(ctx, logits: torch.Tensor, temperature: float, rows: int):
        n = logits.shape[0]
        out = torch.empty(n, dtype=torch.float32, device=logits.device)
        for start in range(0, n, rows):
            chunk = _scaled_chunk(logits, start, start + rows, temperature)
            lse = torch.logsumexp(chunk, dim=-1, keepdim=True)
            probs = torch.exp(chunk - lse)
            # H = lse - sum_v p_v z_v
            out[start : start + rows] = lse.squeeze(-1) - (probs * chunk).sum(-1)
        ctx.save_for_backward(logits)
        ctx.temperature = temperature
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (logits,) = ctx.saved_tensors
        temperature, rows = ctx.temperature, ctx.rows
        grad_logits = torch.empty_like(logits)
        grad_out = grad_out.float()
        for start in range(0, logits.shape[0], rows):
            stop = start + rows
            chunk = _scaled_chunk(logits, start, stop, temperature)
            probs = torch.softmax(chunk, dim=-1)
            mean_z = (probs * chunk).sum(-1, keepdim=True)
            grad = probs.mul_(chunk - mean_z).mul_(-grad_out[start:stop, None])
            if temperature != 1.0:
                grad.div_(temperature)
            grad_logits[start:stop] = grad
        return grad_logits, None, None


def entropy_from_logits(
    logits: torch.Tensor, temperature: float = 1.0, chunk_rows: int | None = None
) -> torch.Tensor:
    """Entropy of the categorical ``softmax(logits / T)`` at every position.

    Equation: H = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v, with z = logits / T
    (the entropy bonus of the PPO objective, seed 001 "L_entropy").

    Args:
        logits: ``[..., V]``.
        temperature: T > 0.
        chunk_rows: rows per chunk (default: about 1M elements per chunk).

    Returns:
        ``[...]`` fp32 entropies in nats, differentiable w.r.t. ``logits``.
    """
    temperature = _check_temperature(temperature)
    vocab = logits.shape[-1]
    flat = logits.reshape(-1, vocab)
    out = _Entropy.apply(flat, temperature, _rows_per_chunk(vocab, chunk_rows))
    return out.reshape(logits.shape[:-1])
