"""A reward model as a RewardFn: score ``prompt + completion`` texts in batches.

    r_i = RM(tokens(prompt_i + completion_i))           (seed 001: linear head on the last token)

Optional normalisation (Ziegler et al. 2019, section 2.2): fit mean/std of the raw scores on reference
samples (e.g. completions of the initial policy) so that they have mean 0 and std 1; the fit is stored in
the reward model's config and so travels with its checkpoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["RewardModelScorer"]


class RewardModelScorer:
    """Callable ``(prompts, completions, **columns) -> list[float]`` backed by a reward model.

    Args:
        reward_model: an ``alignkit.models.RewardModel`` (``forward(ids, mask, normalize=...) -> [B]``).
        tokenizer: the tokenizer the reward model was trained with.
        batch_size: sequences per forward pass.
        max_length: longest tokenised ``prompt + completion``; longer ones raise (naming the index) unless
            ``truncation="left"``, which keeps the last ``max_length`` tokens (the response end).
        append_eos: end each response with EOS, as the reward trainer does (default); each sequence is built by
            :func:`alignkit.data.tokenize.encode_prompt_response`, the function that builds training pairs, so a
            trained reward model scores a pair exactly as it saw it in training.
        normalize: apply the reward model's stored normalisation.
    """

    def __init__(self, reward_model, tokenizer, batch_size: int = 32, max_length: int | None = None,
                 truncation: str = "error", append_eos: bool = True, normalize: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if truncation not in ("error", "left"):
            raise ValueError(f"truncation must be 'error' or 'left', got {truncation!r}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; see alignkit.models.load_tokenizer(pad_policy=...)")
        self.reward_model = reward_model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.max_length = max_length
        self.truncation = truncation
        self.append_eos = append_eos
        self.normalize = normalize
        self.__name__ = f"RewardModelScorer({type(reward_model).__name__})"

    def _encode(self, prompts: Sequence[str], completions: Sequence[str]) -> list[list[int]]:
        from ..data.tokenize import encode_prompt_response

        rows = []
        encoded = encode_prompt_response(self.tokenizer, prompts, completions, self.append_eos)
        for i, ids in enumerate(encoded):
            if self.max_length is not None and len(ids) > self.max_length:
                if self.truncation == "error":
                    raise ValueError(f"prompt {i}: prompt + completion has {len(ids)} tokens, more than "
                                     f"max_length={self.max_length} (or set truncation='left')")
                ids = ids[-self.max_length:]
            if not ids:
                raise ValueError(f"prompt {i}: prompt + completion tokenise to nothing")
            rows.append(ids)
        return rows

    @torch.no_grad()
    def raw_scores(self, prompts: Sequence[str], completions: Sequence[str], normalize: bool | None = None
                   ) -> torch.Tensor:
        """Scores ``[N]`` float32 (normalised if ``normalize``, default: this scorer's setting)."""
        from ..generation.base import left_pad

        normalize = self.normalize if normalize is None else normalize
        rows = self._encode(prompts, completions)
        device = next(self.reward_model.parameters()).device
        was_training = self.reward_model.training
        self.reward_model.eval()
        out = []
        try:
            for start in range(0, len(rows), self.batch_size):
                ids, mask = left_pad(rows[start:start + self.batch_size], self.tokenizer.pad_token_id, device)
                out.append(self.reward_model(ids, mask, normalize=normalize).float().cpu())
        finally:
            self.reward_model.train(was_training)
        return torch.cat(out) if out else torch.zeros(0)

    def __call__(self, prompts: list[str], completions: list[str], **columns) -> list[float]:
        return self.raw_scores(prompts, completions).tolist()

    def fit_normalization(self, prompts: Sequence[str], completions: Sequence[str]) -> tuple[float, float]:
        """Make scores of these reference samples mean 0, std 1; returns the stored ``(mean, std)``."""
        return self.reward_model.fit_normalization(self.raw_scores(prompts, completions, normalize=False))
