"""The reward model: r(x, y) = w^T h_last + normalisation, read at the last real token (seed 001).

    h = trunk(prompt ++ response)                      [B, T, d]   final hidden states
    i_b = max { t : attention_mask_{b,t} = 1 }         [B]         last real token, any padding side
    r_b = w^T h_{b, i_b}                               [B]         head Linear(d, 1), w ~ N(0, 1/(d+1))
    r'_b = (r_b - mean) / std                          [B]         optional stored normalisation

Trained with the Bradley-Terry loss ``-log sigma(r(x, y_w) - r(x, y_l))`` (seed 001;
:func:`alignkit.core.bradley_terry_loss`).

Normalisation. Ziegler et al. 2019 (arXiv:1909.08593) rescale the trained reward model so that its
scores have mean 0 and std 1 on samples from the initial policy; the PPO reward scale (and so the KL
coefficient's meaning) then does not depend on how the reward model happened to train. We store the
``mean`` and ``std`` in the checkpoint's ``config.json`` under ``"alignkit_reward_normalization"``
(one file travels with the weights; transformers keeps unknown config keys). Default: identity, no key.
Plain transformers ignores the key, so ``AutoModelForSequenceClassification`` gives the *raw* score r.
"""

from __future__ import annotations

import math
import os

import torch

from .heads import ScalarHeadModel
from .padding import gather_last

__all__ = ["RewardModel", "load_reward_model", "NORMALIZATION_KEY"]

NORMALIZATION_KEY = "alignkit_reward_normalization"


class RewardModel(ScalarHeadModel):
    """A reward model wrapping a transformers ``AutoModelForSequenceClassification`` (``num_labels=1``).

    Build one with :meth:`from_causal_lm` (trunk copied from a policy/SFT model, fresh head with std
    ``1/sqrt(d+1)``), load one with :meth:`from_pretrained` / :func:`load_reward_model`, save it with
    :meth:`save_pretrained`. Dropout is disabled.

    Args:
        model: the sequence-classification model (owned and trained through this wrapper).
    """

    default_head_init_std = None  # reward_head_std(d_model) = 1/sqrt(d+1), Stiennon et al. 2020

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        normalize: bool = True,
        right_padded: bool = False,
    ) -> torch.Tensor:
        """Score each sequence at its last real token.

        Args:
            input_ids: ``[B, T]`` prompt + response token ids, padded on either side.
            attention_mask: ``[B, T]``, 1 on real tokens. It (not the pad id) locates the last token.
            position_ids: ``[B, T]``; default counts real tokens (:func:`position_ids_from_mask`), so a
                left-padded row scores like the unpadded sequence.
            normalize: apply the stored ``(r - mean) / std`` (identity unless set).
            right_padded: the batch is right-padded by construction (see :meth:`hidden_states`).
        Returns:
            ``[B]`` float32 rewards (differentiable).
        """
        hidden = self.hidden_states(input_ids, attention_mask, position_ids, right_padded=right_padded)
        h_last = gather_last(hidden, attention_mask)  # [B, d]
        rewards = self.head(h_last).squeeze(-1).float()  # [B]
        if normalize:
            mean, std = self.normalization
            if (mean, std) != (0.0, 1.0):
                rewards = (rewards - mean) / std
        return rewards

    # ------------------------------------------------------------------------------- normalisation
    @property
    def normalization(self) -> tuple[float, float]:
        """The stored ``(mean, std)``; ``(0.0, 1.0)`` when none is set."""
        stored = getattr(self.config, NORMALIZATION_KEY, None) or {}
        return float(stored.get("mean", 0.0)), float(stored.get("std", 1.0))

    def set_normalization(self, mean: float, std: float) -> None:
        """Store ``mean`` and ``std`` (in the config, so :meth:`save_pretrained` keeps them)."""
        mean, std = float(mean), float(std)
        if not math.isfinite(mean) or not (math.isfinite(std) and std > 0.0):
            raise ValueError(f"reward normalisation needs a finite mean and a finite std > 0; got {mean=}, {std=}")
        if (mean, std) == (0.0, 1.0):
            self.clear_normalization()
        else:
            setattr(self.config, NORMALIZATION_KEY, {"mean": mean, "std": std})

    def clear_normalization(self) -> None:
        """Back to the identity (raw scores)."""
        if hasattr(self.config, NORMALIZATION_KEY):
            delattr(self.config, NORMALIZATION_KEY)

    def fit_normalization(self, raw_rewards: torch.Tensor, eps: float = 1e-8) -> tuple[float, float]:
        """Set the normalisation so that ``raw_rewards`` (``[N]``, raw scores of e.g. initial-policy samples,
        from ``forward(..., normalize=False)``) get mean 0 and std 1. Uses the population std (``N``
        denominator) plus ``eps``. Returns ``(mean, std)``."""
        raw = raw_rewards.detach().float().flatten()
        if raw.numel() < 2:
            raise ValueError(f"fit_normalization needs at least 2 rewards, got {raw.numel()}")
        mean, std = raw.mean().item(), raw.std(unbiased=False).item() + eps
        self.set_normalization(mean, std)
        return mean, std


def load_reward_model(
    path: str | os.PathLike,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    device: torch.device | str | None = None,
) -> RewardModel:
    """Load a reward model saved by :meth:`RewardModel.save_pretrained` or by anyone in transformers'
    sequence-classification format with ``num_labels=1`` (safetensors only; no remote code unless asked)."""
    return RewardModel.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code, device=device)
