"""The Generator protocol, sampling parameters, the Completions batch, and token sampling.

A Generator turns tokenised prompts into sampled completions. Trainers depend on this protocol only, so
a faster engine (vLLM, SGLang, ...) can replace the default one without touching them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

__all__ = [
    "SamplingParams", "Completions", "Generator", "left_pad", "process_logits", "sample_tokens", "sample_from_probs",
    "row_stream_seed", "sampling_uniforms",
]


@dataclass
class SamplingParams:
    """How to sample. Validated on construction.

    Attributes:
        max_new_tokens: hard cap on generated tokens per sequence (>= 1).
        min_new_tokens: EOS is forbidden before this many tokens (its logit is set to -inf).
        temperature: T > 0; logits are divided by T. Use ``greedy=True`` for argmax decoding.
        top_k: keep the k most likely tokens (0 = off).
        top_p: keep the smallest set of tokens whose probability reaches p (1.0 = off).
        n: samples per prompt; outputs are grouped, prompt-major (prompt 0's n samples first).
        seed: seeds the sampler's own ``torch.Generator`` (None = draw from torch's global RNG).
        greedy: argmax decoding (temperature, top-k and top-p are then ignored for the choice; the
            returned log-probs are still those of softmax(logits / temperature)).
        first_prompt_index: the global index of this call's first prompt. With a seed, the noise of row
            (prompt i, sample j) comes from its own stream keyed by (seed, first_prompt_index + i, j)
            (:func:`sampling_uniforms`), so a process that samples a share of a batch's prompts draws
            exactly what one process sampling the whole batch draws for them.
        prompt_keys: instead of ``first_prompt_index + i``, the key of each prompt of the call (one int per
            prompt), for callers whose prompts are not a contiguous range (e.g. redraws of some pairs).
    """

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    n: int = 1
    seed: int | None = None
    greedy: bool = False
    first_prompt_index: int = 0
    prompt_keys: tuple[int, ...] | None = None

    def __post_init__(self):
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(
                f"min_new_tokens must lie in [0, max_new_tokens={self.max_new_tokens}], got {self.min_new_tokens}"
            )
        if not 0 < self.temperature < float("inf"):
            raise ValueError(f"temperature must be a finite number > 0 (use greedy=True for argmax), got "
                             f"{self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 disables it), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ValueError(f"n (samples per prompt) must be >= 1, got {self.n}")
        if self.first_prompt_index < 0:
            raise ValueError(f"first_prompt_index must be >= 0, got {self.first_prompt_index}")


@dataclass
class Completions:
    """A batch of sampled completions, N = num_prompts * n rows, prompt-major.

    Attributes:
        prompt_ids: ``[N, P]`` left-padded prompt tokens.
        prompt_mask: ``[N, P]`` 1 at real prompt tokens.
        response_ids: ``[N, R]`` sampled tokens, right-padded with the pad id after EOS / at the end.
        response_mask: ``[N, R]`` 1 at generated tokens, the EOS token included.
        logprobs: ``[N, R]`` fp32 log-prob of each sampled token under softmax(logits / T), the full
            (untruncated) distribution, as the trainers recompute it; 0 at padding.
        finished: ``[N]`` bool, True where the sequence ended with EOS (False: cut at max_new_tokens).
        group_ids: ``[N]`` index of the prompt each row answers.
    """

    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    finished: torch.Tensor
    group_ids: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)

    @property
    def num_generated_tokens(self) -> int:
        return int(self.response_mask.sum())


@runtime_checkable
class Generator(Protocol):
    """Anything that samples completions for token-id prompts."""

    def generate(self, prompts: list[list[int]], sampling: SamplingParams) -> Completions:
        """Sample ``sampling.n`` completions for each prompt (lists of token ids, no padding)."""
        ...

    def update_weights(self, model: torch.nn.Module | None = None) -> None:
        """Make the engine sample from the current weights of ``model`` (or of the model it holds)."""
        ...


def left_pad(prompts: list[list[int]], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``[[int]]`` -> (ids ``[B, P]``, mask ``[B, P]``), left-padded to the longest prompt."""
    if not prompts:
        raise ValueError("no prompts given")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty; every prompt needs at least one token")
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.as_tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


def process_logits(logits: torch.Tensor, temperature: float, top_k: int, top_p: float) -> torch.Tensor:
    """Scale by 1/T and mask tokens outside top-k / top-p with -inf. ``[N, V] -> [N, V]`` fp32.

    Top-p keeps the smallest prefix of the sorted distribution whose mass reaches p (the most likely
    token is always kept), as in Holtzman et al. 2020 and transformers' TopPLogitsWarper.
    """
    scores = logits.float() / temperature
    if top_k and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)
        cum = torch.softmax(sorted_scores, -1).cumsum(-1)
        # drop a token if the mass *before* it already reaches p
        drop_sorted = (cum - torch.softmax(sorted_scores, -1)) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        scores = scores.masked_fill(drop, float("-inf"))
    return scores


def sample_tokens(scores: torch.Tensor, generator: torch.Generator | None, greedy: bool = False) -> torch.Tensor:
    """Draw one token per row from softmax(scores) (``[N, V] -> [N]``), or argmax if greedy."""
    if greedy:
        return scores.argmax(-1)
    return sample_from_probs(torch.softmax(scores, -1), generator)


_STREAM_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB)


def row_stream_seed(seed: int, prompt_index: int, sample_index: int) -> int:
    """The seed of the noise stream of one sampled row: a fixed mix of (seed, global prompt index, sample
    index) into 63 bits (splitmix64-style multipliers; distinct keys give unrelated streams)."""
    a, b, c = _STREAM_MULTIPLIERS
    x = (seed * a + (prompt_index + 1) * b + (sample_index + 1) * c) % (1 << 64)
    x ^= x >> 31
    return (x * a) % (1 << 63)


def sampling_uniforms(sampling: SamplingParams, group_ids: torch.Tensor, steps: int) -> torch.Tensor:
    """The uniforms a generate call draws: ``[N, steps]`` float64 in [0, 1), row r's draw at step t is
    ``[r, t]``. With a seed each row has its own stream keyed by ``(seed, sampling.first_prompt_index +
    group_ids[r], r's sample index)``; without one they come from torch's global RNG.

    Args:
        sampling: the call's parameters (``n`` rows per prompt, prompt-major).
        group_ids: ``[N]`` local prompt index of each row (its key: ``sampling.prompt_keys[i]`` if given).
        steps: at most ``max_new_tokens``.
    """
    n_rows = group_ids.shape[0]
    if sampling.seed is None:
        return torch.rand((n_rows, steps), dtype=torch.float64)
    out = torch.empty((n_rows, steps), dtype=torch.float64)
    gen = torch.Generator()
    for r, prompt in enumerate(group_ids.tolist()):
        key = sampling.prompt_keys[prompt] if sampling.prompt_keys is not None else sampling.first_prompt_index + prompt
        gen.manual_seed(row_stream_seed(sampling.seed, key, r % sampling.n))
        out[r] = torch.rand(steps, generator=gen, dtype=torch.float64)
    return out


def sample_from_probs(probs: torch.Tensor, generator: torch.Generator | None = None,
                      uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """Inverse-CDF sampling, one uniform per row: token = min{i : F_i > u}, u ~ U(0, F_V). ``[N, V] -> [N]``.

    P(token = i) = F_i - F_{i-1} = p_i exactly (F in float64, so the rounding of a 128k-term cumulative
    sum stays far below any probability that matters). Tokens with p_i = 0 (masked by top-k/top-p or
    min_new_tokens) occupy empty intervals and are never drawn. One random number per row instead of V:
    torch.multinomial draws V exponentials per row, which dominates a decode step of a small model on CPU.
    ``uniforms`` (``[N]`` float64 in [0, 1)) gives the row's uniform; else it is drawn from ``generator``.
    """
    cdf = probs.double().cumsum(-1)
    if uniforms is None:
        u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device, dtype=torch.float64)
    else:
        u = uniforms.to(device=probs.device, dtype=torch.float64).view(-1, 1)
    token = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)
    return token.squeeze(-1).clamp_(max=probs.shape[-1] - 1)
