"""LoRA adapters through peft (imported only when used: ``pip install 'alignkit[lora]'``).

LoRA (Hu et al. 2021, arXiv:2106.09685) adds a trainable low-rank update to frozen weights:

    W' x = W x + (alpha / r) * B A x,      A: [r, d_in] ~ random,  B: [d_out, r] = 0 at init

so the adapted policy starts equal to the base model, and the base model (the reference policy of the
KL penalty) is available for free by switching the adapter off (:class:`~alignkit.models.reference.
AdapterDisabledReference`): no second copy of the weights.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

from torch import nn

__all__ = ["apply_lora", "apply_lora_to_trunk", "is_peft_model", "merged_trunk_copy"]


def _import_peft():
    try:
        import peft
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("LoRA needs the 'peft' package: pip install 'alignkit[lora]' (or pip install peft)") from err
    return peft


def is_peft_model(model: object) -> bool:
    """True for a ``peft.PeftModel``. Does not import peft (a model cannot be one unless peft is loaded)."""
    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def apply_lora(
    model: nn.Module,
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    target_modules: str | list[str] = "all-linear",
    modules_to_save: list[str] | None = None,
) -> nn.Module:
    """Wrap a causal LM with LoRA adapters (``peft.get_peft_model``; the base weights are frozen in place).

    Args:
        model: an ``AutoModelForCausalLM`` (resize its embeddings for the tokenizer *before* this).
        r: adapter rank (> 0).
        alpha: scaling numerator: the update is ``(alpha / r) B A``.
        dropout: LoRA dropout on the adapter input. Default 0: with dropout, two forwards of the same
            tokens give different log-probs and the PPO ratio is not 1 at the first step.
        target_modules: module names to adapt, or ``"all-linear"`` (every linear layer but the LM head).
        modules_to_save: modules trained in full and saved with the adapter (e.g. ``["lm_head"]``).
    Returns:
        A ``peft.PeftModel`` (task type CAUSAL_LM).
    """
    if r <= 0:
        raise ValueError(f"LoRA rank r must be > 0, got {r}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
    if is_peft_model(model):
        raise ValueError("model already has PEFT adapters; apply_lora expects a plain transformers model")
    peft = _import_peft()
    lora_config = dict(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        modules_to_save=modules_to_save,
        bias="none",
        task_type="CAUSAL_LM",
    )
    with _naming_module_types(model):
        return peft.get_peft_model(model, peft.LoraConfig(**lora_config))


@contextmanager
def _naming_module_types(model: nn.Module):
    """Re-raise peft's refusal to wrap a model as a ValueError that names the model and its layer types."""
    try:
        yield
    except (ValueError, TypeError, AttributeError, KeyError) as err:
        types = sorted({type(m).__name__ for m in model.modules() if not list(m.children())})
        raise ValueError(f"LoRA: peft cannot wrap {type(model).__name__} ({err}); its layer types are "
                         f"{', '.join(types)} (LoRA adapts linear layers: nn.Linear, transformers' Conv1D)") from err


def apply_lora_to_trunk(model: nn.Module, r: int = 8, alpha: float = 16.0) -> nn.Module:
    """LoRA on the trunk of a scalar-head model (a critic or reward model, :class:`~alignkit.models.heads.
    ScalarHeadModel`), in place: adapters on every linear layer of the trunk (its weights frozen), the head
    trained in full. Returns ``model``. :func:`merged_trunk_copy` gives the plain model to save.
    """
    if r <= 0:
        raise ValueError(f"LoRA rank r must be > 0, got {r}")
    peft = _import_peft()
    trunk = model.trunk
    config = peft.LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", bias="none")
    # injects the adapters into ``trunk``; kept outside ``_modules`` so the state dict lists the trunk once
    with _naming_module_types(trunk):
        object.__setattr__(model, "_lora_tuner", peft.LoraModel(trunk, config, "default"))
    for name, param in trunk.named_parameters():
        param.requires_grad_("lora_" in name)
    model.head.requires_grad_(True)
    return model


def merged_trunk_copy(model: nn.Module) -> nn.Module:
    """A copy of a model given :func:`apply_lora_to_trunk` with the adapters merged into the trunk's weights
    (plain linear layers again), which ``save_pretrained`` writes in transformers' own format."""
    import copy

    merged = copy.deepcopy(model)
    merged._lora_tuner.merge_and_unload()
    del merged._lora_tuner
    return merged
