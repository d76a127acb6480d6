"""Models for RLHF from any Hugging Face causal LM: policy, reference, reward model, critic.

* :mod:`.loading`: :func:`load_causal_lm` (safetensors only, no remote code unless asked, dropout off),
  :func:`load_tokenizer` (a pad token distinct from EOS, added if needed), :func:`resize_for_tokenizer`.
* :mod:`.reference`: pi_ref as a frozen copy, or a LoRA policy with its adapter disabled.
* :mod:`.lora`: :func:`apply_lora` (peft, imported lazily).
* :mod:`.reward`: :class:`RewardModel`, stored as transformers ``AutoModelForSequenceClassification``.
* :mod:`.value`: :class:`ValueModel` (separate critic) and :class:`PolicyWithValueHead` (shared trunk).
* :mod:`.forward`: :func:`forward_logits` (the LM head only over the positions asked for).
* :mod:`.padding`: last real token and position ids from the attention mask (left or right padding).
* :mod:`.tiny`: tiny tokenizers and Llama models built locally, for tests and benchmarks.

peft is imported only by :func:`apply_lora`; transformers is imported here.
"""

from .forward import forward_logits, position_ids_from_mask
from .heads import ScalarHeadModel, init_scalar_head, reward_head_std, seq_cls_from_causal_lm
from .loading import (
    PAD_POLICIES,
    disable_dropout,
    ensure_pad_token,
    load_causal_lm,
    load_pretrained,
    load_tokenizer,
    resize_for_tokenizer,
    resolve_model_path,
)
from .lora import apply_lora, is_peft_model
from .padding import gather_last, last_token_index
from .reference import (
    REFERENCE_KINDS,
    AdapterDisabledReference,
    FrozenReference,
    ReferenceModel,
    make_reference,
)
from .reward import NORMALIZATION_KEY, RewardModel, load_reward_model
from .value import PolicyValueOutput, PolicyWithValueHead, ValueModel

__all__ = [
    "forward_logits",
    "NORMALIZATION_KEY",
    "PAD_POLICIES",
    "REFERENCE_KINDS",
    "AdapterDisabledReference",
    "FrozenReference",
    "PolicyValueOutput",
    "PolicyWithValueHead",
    "ReferenceModel",
    "RewardModel",
    "ScalarHeadModel",
    "ValueModel",
    "apply_lora",
    "disable_dropout",
    "ensure_pad_token",
    "gather_last",
    "init_scalar_head",
    "is_peft_model",
    "last_token_index",
    "load_causal_lm",
    "load_pretrained",
    "load_reward_model",
    "load_tokenizer",
    "make_reference",
    "position_ids_from_mask",
    "resize_for_tokenizer",
    "resolve_model_path",
    "reward_head_std",
    "seq_cls_from_causal_lm",
]
