"""Critics: a value per token, from a separate model (default) or from a head on the policy's trunk.

    V_{b,t} = w^T h_{b,t} (+ c)          [B, T]   value of the state "tokens 0..t have been read"

For PPO on a response, the value of the state before response token ``t+1`` is ``values[:, t]``; the
trainer aligns these with its rewards and masks (GAE, seed 001: ``delta_t = r_t + gamma V(s_{t+1}) - V(s_t)``).

Two layouts, both with dropout off:

* :class:`ValueModel` (default): its own trunk, initialised from the policy (:meth:`ValueModel.from_causal_lm`,
  head zero-initialised as in OpenAI's lm-human-preferences, so initial values are 0) or from the reward
  model (:meth:`ValueModel.from_reward_model`, trunk *and* head, as in Stiennon et al. 2020: the initial
  critic already predicts the final reward). Separate weights keep the value loss from pulling on the policy.
* :class:`PolicyWithValueHead`: one trunk, two heads (CleanRL/TRL-style shared actor-critic); cheaper in
  memory and compute, at the price of the value loss shaping the policy's features.
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel

from .forward import position_ids_from_mask
from .heads import ScalarHeadModel, init_scalar_head
from .loading import disable_dropout, load_causal_lm
from .reward import NORMALIZATION_KEY, RewardModel

__all__ = ["ValueModel", "PolicyWithValueHead", "PolicyValueOutput", "VALUE_HEAD_FILE"]

VALUE_HEAD_FILE = "value_head.safetensors"


class ValueModel(ScalarHeadModel):
    """A separate critic: trunk + ``Linear(d, 1)`` read at every token.

    Stored like a reward model (transformers sequence classification, ``num_labels=1``), so
    :meth:`save_pretrained` / :meth:`from_pretrained` round-trip and a reward checkpoint can seed it.
    """

    default_head_init_std = 0.0  # lm-human-preferences: value head starts at zero

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Values ``[B, T]`` (float32); 0 at padding positions.

        Args:
            input_ids: ``[B, T]``; attention_mask: ``[B, T]``; position_ids: ``[B, T]`` or None (real-token
                counts, as everywhere in alignkit).
        """
        values = self.head(self.hidden_states(input_ids, attention_mask, position_ids)).squeeze(-1).float()
        return values.masked_fill(~attention_mask.bool(), 0.0)

    @classmethod
    def from_reward_model(cls, reward_model: RewardModel | PreTrainedModel) -> ValueModel:
        """A critic initialised from a reward model: a deep copy of its trunk *and* head (independent
        weights). The reward normalisation is not carried over (it belongs to the reward's scorer)."""
        source = reward_model.model if isinstance(reward_model, ScalarHeadModel) else reward_model
        model = copy.deepcopy(source)
        if hasattr(model.config, NORMALIZATION_KEY):
            delattr(model.config, NORMALIZATION_KEY)
        model.requires_grad_(True)
        return cls(model)


@dataclass
class PolicyValueOutput:
    """One forward of :class:`PolicyWithValueHead`.

    Attributes:
        logits: ``[B, T, V]`` the policy's logits, exactly as ``policy(...)`` returns them.
        values: ``[B, T]`` float32, 0 at padding positions.
    """

    logits: torch.Tensor
    values: torch.Tensor


class PolicyWithValueHead(nn.Module):
    """A causal LM policy plus a value head on its final hidden state; one forward gives both.

    The head is ``Linear(d, 1)`` with a bias, kept in float32, zero-initialised by default (initial values 0).
    The policy may be a PEFT model (then the head trains with the adapter on the shared frozen trunk).

    Args:
        policy: an ``AutoModelForCausalLM`` (dropout is disabled on it).
        head_init_std: std of the head weights' N(0, std^2) init; 0 = zeros.
    """

    def __init__(self, policy: nn.Module, head_init_std: float = 0.0):
        super().__init__()
        self.policy = disable_dropout(policy)
        hidden = int(policy.config.get_text_config().hidden_size)
        device = next(policy.parameters()).device
        self.value_head = init_scalar_head(nn.Linear(hidden, 1, device=device, dtype=torch.float32), head_init_std)

    @property
    def config(self):
        return self.policy.config

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        **policy_kwargs,
    ) -> PolicyValueOutput:
        """Logits ``[B, T, V]`` and values ``[B, T]`` from a single trunk pass.

        ``position_ids`` default to real-token counts (:func:`position_ids_from_mask`); pass the same ones to
        the plain policy to get identical logits. Extra keyword arguments go to the policy's forward.
        """
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        policy_kwargs.setdefault("use_cache", False)
        out = self.policy(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            output_hidden_states=True,
            **policy_kwargs,
        )
        hidden = out.hidden_states[-1]  # [B, T, d], after the final norm (what the LM head reads)
        values = self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1)
        return PolicyValueOutput(logits=out.logits, values=values.masked_fill(~attention_mask.bool(), 0.0))

    def save_pretrained(self, path: str | os.PathLike, **kwargs) -> None:
        """The policy in transformers' format plus ``value_head.safetensors`` next to it."""
        from safetensors.torch import save_file

        self.policy.save_pretrained(path, **kwargs)
        state = {k: v.detach().cpu().contiguous() for k, v in self.value_head.state_dict().items()}
        save_file(state, os.path.join(os.fspath(path), VALUE_HEAD_FILE))

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        dtype: torch.dtype | str | None = None,
        trust_remote_code: bool = False,
        device: torch.device | str | None = None,
    ) -> PolicyWithValueHead:
        """Load what :meth:`save_pretrained` wrote (policy via :func:`load_causal_lm`, safetensors only)."""
        from safetensors.torch import load_file

        head_file = os.path.join(os.fspath(path), VALUE_HEAD_FILE)
        if not os.path.isfile(head_file):
            raise FileNotFoundError(
                f"no {VALUE_HEAD_FILE} in {os.fspath(path)!r}; was it saved by PolicyWithValueHead.save_pretrained?"
            )
        model = cls(load_causal_lm(path, dtype=dtype, trust_remote_code=trust_remote_code, device=device))
        model.value_head.load_state_dict(load_file(head_file, device=str(model.value_head.weight.device)))
        return model
