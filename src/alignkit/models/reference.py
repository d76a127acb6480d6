"""The reference policy pi_ref of the KL penalty: frozen, deterministic, never trained.

The RLHF objective (seed 001) keeps the policy close to where it started:

    max_pi  E_{x~D, y~pi(.|x)} [ r(x, y) ]  -  beta * KL( pi(.|x) || pi_ref(.|x) )

so every update needs ``log pi_ref(y_t | x, y_<t)`` for the sampled tokens. Two ways to have pi_ref:

* :class:`FrozenReference`: a deep copy of the initial policy (or a separately loaded checkpoint),
  ``requires_grad=False``, eval mode, dropout off. Costs one more copy of the weights.
* :class:`AdapterDisabledReference`: for a LoRA policy, the *same* module run with the adapter switched
  off (``with policy.disable_adapter():``) is exactly the base model. No second copy. (Do not merge the
  adapter into the base weights while training: the reference would move with it.)

:func:`make_reference` picks the second for a ``peft.PeftModel`` and the first otherwise.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod

import torch
from torch import nn

from ..core.logprobs import token_logprobs
from .forward import forward_logits, position_ids_from_mask
from .loading import disable_dropout
from .lora import is_peft_model

__all__ = ["ReferenceModel", "FrozenReference", "AdapterDisabledReference", "make_reference", "REFERENCE_KINDS"]

REFERENCE_KINDS = ("auto", "copy", "disable_adapter")


class ReferenceModel(ABC):
    """Read-only access to pi_ref. Subclasses implement :meth:`_logits`; calls run under ``torch.no_grad``.

    Not an ``nn.Module`` on purpose: the adapter-disabled reference holds the policy itself, which must not
    be registered (and counted, saved or prepared) twice.
    """

    @abstractmethod
    def _logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor, keep_last: int
    ) -> torch.Tensor:
        """``[B, T, V]`` logits of the reference policy (the last ``keep_last`` positions when > 0)."""

    @torch.no_grad()
    def logits(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor | None = None,
        keep_last: int = 0,
    ) -> torch.Tensor:
        """Reference logits ``[B, T, V]`` (no gradient); ``[B, keep_last, V]`` for the last positions only when
        ``keep_last`` > 0 (see :func:`~alignkit.models.forward.forward_logits`). ``position_ids`` default to
        real-token counts (:func:`~alignkit.models.forward.position_ids_from_mask`), as in the generation engine."""
        if position_ids is None:
            position_ids = position_ids_from_mask(attention_mask)
        return self._logits(input_ids, attention_mask, position_ids, keep_last)

    @torch.no_grad()
    def logprobs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor | None = None,
        temperature: float = 1.0,
    ) -> torch.Tensor:
        """Next-token log-probs ``log pi_ref(x_{t+1} | x_{<=t})`` for ``t = 0..T-2``.

        Args:
            input_ids, attention_mask, position_ids: ``[B, T]``.
            temperature: score under ``softmax(z / T)``: use the sampler's temperature (see
                :mod:`alignkit.core.logprobs`).
        Returns:
            ``[B, T-1]`` float32; entry ``t`` scores ``input_ids[:, t+1]``; 0 where that token is padding.
        """
        logits = self.logits(input_ids, attention_mask, position_ids)
        logp = token_logprobs(logits[:, :-1], input_ids[:, 1:], temperature=temperature)
        return logp * attention_mask[:, 1:].to(logp.dtype)

    def __call__(self, input_ids, attention_mask, position_ids=None) -> torch.Tensor:
        return self.logits(input_ids, attention_mask, position_ids)


class FrozenReference(ReferenceModel):
    """pi_ref as its own frozen module.

    Args:
        model: the policy at the start of training (or a separately loaded SFT checkpoint).
        copy: deep-copy ``model`` (default; the policy can then train freely). ``copy=False`` freezes
            ``model`` itself: for a reference you loaded separately and hold nowhere else.
    """

    def __init__(self, model: nn.Module, copy: bool = True):
        self.model = _copy_module(model) if copy else model
        self.model.requires_grad_(False)
        self.model.eval()
        disable_dropout(self.model)

    def _logits(self, input_ids, attention_mask, position_ids, keep_last):
        if self.model.training:  # someone called .train() on the whole tree; pi_ref stays in eval
            self.model.eval()
        return forward_logits(self.model, input_ids, attention_mask, position_ids, keep_last)

    def to(self, *args, **kwargs) -> FrozenReference:
        """Move the frozen copy (``nn.Module.to`` arguments). Returns ``self``."""
        self.model.to(*args, **kwargs)
        return self


def _copy_module(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)  # a helper because FrozenReference's ``copy`` argument shadows the module


class AdapterDisabledReference(ReferenceModel):
    """pi_ref = a PEFT (LoRA) policy with its adapter disabled: the base weights, shared, not copied.

    Each call runs the policy in eval mode inside ``policy.disable_adapter()`` and then restores every
    submodule's previous train/eval flag, so the policy's training state is untouched.

    Args:
        policy: a ``peft.PeftModel``.
    """

    def __init__(self, policy: nn.Module):
        if not is_peft_model(policy):
            raise TypeError(
                f"AdapterDisabledReference needs a peft.PeftModel, got {type(policy).__name__}; "
                "use FrozenReference (or make_reference(policy, kind='copy')) for a plain model"
            )
        self.policy = policy

    def _logits(self, input_ids, attention_mask, position_ids, keep_last):
        modes = [(module, module.training) for module in self.policy.modules()]
        self.policy.eval()
        try:
            with self.policy.disable_adapter():
                return forward_logits(self.policy, input_ids, attention_mask, position_ids, keep_last)
        finally:
            for module, training in modes:
                module.training = training


def make_reference(policy: nn.Module, kind: str = "auto") -> ReferenceModel:
    """Build pi_ref for ``policy`` (call it before the first update: a copy snapshots the current weights).

    Args:
        policy: the policy about to be trained (for a :class:`~alignkit.models.value.PolicyWithValueHead`,
            pass its ``.policy``: pi_ref needs no value head).
        kind: ``"auto"`` (adapter-disabled for a ``peft.PeftModel``, frozen copy otherwise), ``"copy"``,
            or ``"disable_adapter"``.
    """
    if kind not in REFERENCE_KINDS:
        raise ValueError(f"kind must be one of {REFERENCE_KINDS}, got {kind!r}")
    if kind == "disable_adapter" or (kind == "auto" and is_peft_model(policy)):
        return AdapterDisabledReference(policy)
    return FrozenReference(policy, copy=True)
