"""Scalar heads on a language-model trunk: the shared machinery of reward and value models.

Seed 001 ("reward model architecture"): take a pretrained LLM, feed it prompt + answer, and pass the last
hidden state through a linear layer with one output feature. Reward and value models are both that
shape; they differ in where they read the head (the last real token vs every token) and in how the head
is initialised.

Storage format. A scalar-head model *is* a transformers ``AutoModelForSequenceClassification`` with
``num_labels=1`` (trunk under ``base_model_prefix``, head ``score: Linear(d, 1, bias=False)``), so a
checkpoint we save loads in plain transformers, and reward models published in that format (the usual
one: TRL, OpenRLHF) load here. We only bypass its pooling: transformers finds the last token as "the
rightmost id != pad_token_id", we use the attention mask (:mod:`alignkit.models.padding`).
"""

from __future__ import annotations

import copy
import math
import os
import warnings

import torch
from torch import nn
from transformers import AutoModelForSequenceClassification, PreTrainedModel

from .forward import causal_mask_or_none, position_ids_from_mask
from .loading import _DTYPE_KWARG, _resolve_dtype, disable_dropout, load_causal_lm, load_pretrained
from .lora import is_peft_model

__all__ = ["reward_head_std", "init_scalar_head", "seq_cls_from_causal_lm", "ScalarHeadModel"]


def reward_head_std(hidden_size: int) -> float:
    """``1 / sqrt(d_model + 1)``: the reward head's init std in Stiennon et al. 2020 (arXiv:2009.01325,
    p. 11) and OpenAI's lm-human-preferences. With unit-scale features (post-norm hidden states) the initial
    reward has variance ``d * std^2 = d / (d + 1) ~ 1``: scores start O(1), neither saturating the
    Bradley-Terry sigmoid nor vanishing."""
    if hidden_size < 1:
        raise ValueError(f"hidden_size must be >= 1, got {hidden_size}")
    return 1.0 / math.sqrt(hidden_size + 1)


@torch.no_grad()
def init_scalar_head(head: nn.Linear, std: float) -> nn.Linear:
    """Weights ~ N(0, std^2) (``std = 0``: all zeros), bias (if any) = 0. In place; returns ``head``."""
    if not std >= 0.0:
        raise ValueError(f"head init std must be >= 0, got {std}")
    if std == 0.0:
        head.weight.zero_()
    else:
        head.weight.normal_(mean=0.0, std=std)
    if head.bias is not None:
        head.bias.zero_()
    return head


def _hidden_size(config) -> int:
    return int(config.get_text_config().hidden_size)


def seq_cls_from_causal_lm(
    lm: str | os.PathLike | PreTrainedModel,
    head_init_std: float | None = None,
    pad_token_id: int | None = None,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Build an ``AutoModelForSequenceClassification`` (``num_labels=1``) whose trunk is a copy of ``lm``'s.

    The sequence-classification model is created from ``lm.config`` and its ``base_model`` (the trunk,
    found through ``base_model_prefix``) receives ``lm.base_model.state_dict()``; the LM head is dropped.
    The result owns its weights: training it does not touch ``lm``.

    Args:
        lm: a causal LM in memory, or a checkpoint path / Hub id (loaded with :func:`load_causal_lm`).
        head_init_std: std of the head's N(0, std^2) init; None = :func:`reward_head_std` of d_model.
        pad_token_id: written to the config (transformers' own pooling needs it to find the last real token
            of right-padded input); None keeps ``lm.config.pad_token_id``.
        dtype: dtype of the new model; None = ``lm``'s.
        trust_remote_code: passed on when loading ``lm`` from a path and building the new class.
    Returns:
        The model, on ``lm``'s device, dropout disabled.
    """
    if not isinstance(lm, nn.Module):
        lm = load_causal_lm(lm, dtype=dtype, trust_remote_code=trust_remote_code)
    if is_peft_model(lm):
        raise TypeError(
            "got a PEFT model; merge the adapter first (lm = lm.merge_and_unload()) so the trunk copy "
            "contains the adapted weights"
        )
    param = next(lm.parameters())
    config = copy.deepcopy(lm.config)
    config.num_labels = 1
    config.architectures = None
    if pad_token_id is not None:
        config.pad_token_id = pad_token_id
        config.get_text_config().pad_token_id = pad_token_id
    dtype = _resolve_dtype(dtype)
    dtype = dtype if isinstance(dtype, torch.dtype) else param.dtype
    with torch.device(param.device):  # built in place: no transient fp32 CPU copy of a large model
        model = AutoModelForSequenceClassification.from_config(
            config, trust_remote_code=trust_remote_code, **{_DTYPE_KWARG: dtype}
        )
    model.base_model.load_state_dict(lm.base_model.state_dict())  # strict: every trunk tensor, copied
    std = reward_head_std(_hidden_size(config)) if head_init_std is None else head_init_std
    init_scalar_head(_score_head(model), std)
    model.eval()
    return disable_dropout(model)


def _score_head(model: PreTrainedModel) -> nn.Linear:
    head = getattr(model, "score", None)
    if not isinstance(head, nn.Linear):
        raise TypeError(
            f"{type(model).__name__} has no linear 'score' head; alignkit's scalar-head models need a "
            "decoder-style AutoModelForSequenceClassification (Llama, Mistral, Qwen, GPT-2, GPT-NeoX, ...)"
        )
    if head.out_features != 1:
        raise ValueError(
            f"{type(model).__name__} has num_labels={head.out_features}; a reward/value model needs num_labels=1"
        )
    return head


class ScalarHeadModel(nn.Module):
    """A trunk + ``Linear(d, 1)`` head, stored as a transformers sequence-classification model.

    Subclasses decide where the head is read (:class:`~alignkit.models.reward.RewardModel`: last real
    token; :class:`~alignkit.models.value.ValueModel`: every token).

    Args:
        model: an ``AutoModelForSequenceClassification`` with ``num_labels=1`` and a ``score`` head.
    """

    default_head_init_std: float | None = None  # None: reward_head_std(d_model)

    def __init__(self, model: PreTrainedModel):
        super().__init__()
        _score_head(model)  # validate early, naming the class
        self.model = disable_dropout(model)

    @property
    def config(self):
        return self.model.config

    @property
    def trunk(self) -> nn.Module:
        """The transformer body (``model.base_model``): token ids -> hidden states ``[B, T, d]``."""
        return self.model.base_model

    @property
    def head(self) -> nn.Linear:
        """The scalar head ``Linear(d, 1)``."""
        return _score_head(self.model)

    def hidden_states(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None,
        right_padded: bool = False,
    ) -> torch.Tensor:
        """Final (post-norm) hidden states ``[B, T, d]``; position ids default to real-token counts.
        ``right_padded``: the batch is right-padded by construction (the reward trainer's): run it under the
        causal mask alone (:func:`~alignkit.models.forward.causal_mask_or_none`)."""
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        mask = causal_mask_or_none(attention_mask) if right_padded else attention_mask
        out = self.trunk(input_ids=input_ids, attention_mask=mask, position_ids=position_ids, use_cache=False)
        return out.last_hidden_state

    @classmethod
    def from_causal_lm(
        cls,
        lm: str | os.PathLike | PreTrainedModel,
        head_init_std: float | None = None,
        pad_token_id: int | None = None,
        dtype: torch.dtype | str | None = None,
        trust_remote_code: bool = False,
    ):
        """A new model whose trunk copies ``lm``'s and whose head is freshly initialised (see
        :func:`seq_cls_from_causal_lm`; ``head_init_std=None`` uses the class default)."""
        std = cls.default_head_init_std if head_init_std is None else head_init_std
        return cls(seq_cls_from_causal_lm(lm, std, pad_token_id, dtype, trust_remote_code))

    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        dtype: torch.dtype | str | None = None,
        trust_remote_code: bool = False,
        device: torch.device | str | None = None,
    ):
        """Load a sequence-classification checkpoint with ``num_labels=1`` (ours or anyone's), safetensors only."""
        model = load_pretrained(
            AutoModelForSequenceClassification, path, dtype=dtype, trust_remote_code=trust_remote_code
        )
        if device is not None:
            model.to(device)
        return cls(model)

    def save_pretrained(self, path: str | os.PathLike, **kwargs) -> None:
        """Save in transformers' format (config.json + model.safetensors): loadable by
        ``AutoModelForSequenceClassification.from_pretrained(path)`` and by :meth:`from_pretrained`.

        Plain transformers gives the same (raw) scores for right-padded input: it reads the last id that is
        not ``pad_token_id`` with positions ``0..T-1``. For left-padded input to a model with absolute
        position embeddings, pass it ``position_ids`` (:func:`position_ids_from_mask`)."""
        text_config = self.config.get_text_config()
        if text_config.pad_token_id is None:
            raise ValueError(
                "config.pad_token_id is None: transformers' AutoModelForSequenceClassification needs it to find "
                "the last real token of a padded batch. Pass pad_token_id=tokenizer.pad_token_id to "
                "from_causal_lm, or set model.config.pad_token_id before saving."
            )
        eos = text_config.eos_token_id
        if text_config.pad_token_id in (eos if isinstance(eos, (list, tuple)) else [eos]):
            warnings.warn(
                f"config.pad_token_id == eos_token_id ({text_config.pad_token_id}): transformers' own pooling (last "
                "id != pad) will read the score before a final EOS, unlike alignkit (attention mask). Give the "
                "tokenizer a pad token that is not EOS (load_tokenizer pads with UNK when there is one; "
                "pad_policy='add' adds <pad>).",
                stacklevel=2,
            )
        self.model.save_pretrained(path, **kwargs)  # safetensors: the default since transformers 4.35
