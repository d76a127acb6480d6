"""Load policies and tokenizers: safetensors only, no remote code unless asked, dropout off, a real pad token.

Why dropout off. RLHF compares log-probabilities of the same tokens computed at different times: the
sampler's, the policy's in train mode, the reference's (importance ratios and KL, seed 000/001). With
dropout active, ``log pi(a|s)`` differs between two identical forwards, so the PPO ratio is not 1 at the
first step and the KL to a copy of itself is not 0. Ziegler et al. 2019 (arXiv:1909.08593) train
with dropout disabled; so do we. :func:`disable_dropout` zeroes every ``nn.Dropout`` *and* every float
dropout attribute of modules and configs (Llama's attention reads ``self.attention_dropout``, copied from
the config at construction, and calls the functional dropout itself: no ``nn.Dropout`` module to find).

Pad token (see :func:`ensure_pad_token`). Many tokenizers have none (GPT-2, Llama 2, Mistral) or use their
EOS as pad (SmolLM2-Instruct). alignkit never finds real tokens by ``ids != pad_id``: every mask is an
explicit attention / response mask (:mod:`alignkit.models.padding`), so any id can pad. The default policy
(``"reuse"``, as TRL does) therefore never grows a pretrained model's vocabulary: it keeps the tokenizer's
pad, else takes its UNK, else its EOS. Adding a dedicated ``"<pad>"`` (and resizing the embeddings) is
opt-in (``pad_policy="add"``): it matters only for a reward model exported to plain transformers, whose
sequence-classification pooling reads "the last id that is not the pad id" and so would read the score
*before* a final EOS when pad == EOS.
"""

from __future__ import annotations

import os
import re

import torch
import transformers
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

__all__ = [
    "PAD_POLICIES",
    "disable_dropout",
    "load_causal_lm",
    "load_pretrained",
    "load_tokenizer",
    "ensure_pad_token",
    "resize_for_tokenizer",
    "resolve_model_path",
]

PAD_POLICIES = ("reuse", "add", "error")
DEFAULT_PAD_TOKEN = "<pad>"

# Attribute names that hold a dropout probability across architectures: attention_dropout, hidden_dropout,
# resid_pdrop, embd_pdrop, attn_pdrop, hidden_dropout_prob, classifier_dropout, activation_dropout,
# layerdrop and drop_path_rate (drop whole layers / residual branches at random in train mode: just as
# irreproducible), ...
_DROPOUT_NAME = re.compile(r"dropout|pdrop|layerdrop|drop_path", re.IGNORECASE)
# "name" or "org/name": could be a Hub id. Anything else that does not exist is a missing local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# transformers renamed from_pretrained's torch_dtype to dtype in 4.56.
_TRANSFORMERS_VERSION = tuple(int(x) for x in re.match(r"(\d+)\.(\d+)", transformers.__version__).groups())
_DTYPE_KWARG = "dtype" if _TRANSFORMERS_VERSION >= (4, 56) else "torch_dtype"


# ----------------------------------------------------------------------------------------------- dropout
def _is_prob(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _zero_config_dropout(config, seen: set[int]) -> None:
    if config is None or id(config) in seen or not isinstance(config, transformers.PretrainedConfig):
        return
    seen.add(id(config))
    for key, value in list(vars(config).items()):
        if isinstance(value, transformers.PretrainedConfig):
            _zero_config_dropout(value, seen)  # text_config, vision_config, ...
        elif _DROPOUT_NAME.search(key) and _is_prob(value):
            setattr(config, key, 0.0)


def disable_dropout(model: nn.Module) -> nn.Module:
    """Turn off every source of dropout in ``model`` (in place) so that train-mode forwards are deterministic.

    * every ``nn.Dropout``-family module gets ``p = 0``;
    * every float attribute of a module whose name mentions dropout (``attention_dropout``, ``resid_pdrop``,
      ``layerdrop``, ...) is set to 0 (modules that call ``F.dropout`` themselves read these);
    * the same fields of ``model.config`` and its sub-configs are set to 0, so that a saved checkpoint and
      modules built later from the config (a value head, a resized embedding) stay dropout-free.

    Returns ``model`` (the same object).
    """
    seen: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        for name, value in list(vars(module).items()):
            if _DROPOUT_NAME.search(name) and _is_prob(value):
                setattr(module, name, 0.0)
        _zero_config_dropout(getattr(module, "config", None), seen)
    return model


# ----------------------------------------------------------------------------------------------- paths
def resolve_model_path(name_or_path: str | os.PathLike) -> str:
    """Check a checkpoint location before handing it to transformers.

    Returns the expanded local directory if it exists, or ``name_or_path`` unchanged if it can only be a
    Hugging Face Hub id (``"name"`` or ``"org/name"``).

    Raises:
        FileNotFoundError: a local-looking path (absolute, relative with ``./``, ``~``, more than one ``/``,
            or an ``os.PathLike``) that does not exist. The message names the path.
        NotADirectoryError: the path is a file other than a ``.gguf``; checkpoints are directories
            (config.json + *.safetensors) or GGUF files.
    """
    raw = os.fspath(name_or_path)
    path = os.path.expanduser(raw)
    if os.path.isdir(path):
        return path
    if os.path.isfile(path) and is_gguf(path):
        return path
    if os.path.exists(path):
        raise NotADirectoryError(
            f"model path {raw!r} is a file; expected a checkpoint directory (config.json + *.safetensors)"
        )
    if isinstance(name_or_path, os.PathLike) or not _HUB_ID.match(raw):
        raise FileNotFoundError(f"model path {raw!r} does not exist")
    return raw


def is_gguf(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a GGUF checkpoint file (llama.cpp's format: weights, config and tokenizer)."""
    return os.fspath(path).lower().endswith(".gguf")


def _gguf_kwargs(path: str) -> tuple[str, dict]:
    """(directory, ``{"gguf_file": name}``) for transformers' GGUF loading (needs the ``gguf`` package)."""
    try:
        import gguf  # noqa: F401
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(f"loading {path!r} needs the 'gguf' package: pip install 'alignkit[gguf]'") from err
    directory, name = os.path.split(os.path.abspath(path))
    return directory, {"gguf_file": name}


def _load_gguf(auto_class, path: str, **kwargs) -> PreTrainedModel:
    """A GGUF checkpoint, dequantised (to fp32 unless ``dtype`` says otherwise), as an ordinary transformers
    model: transformers refuses ``save_pretrained`` on a GGUF-loaded model, so its weights are moved into a
    model built from its config, which saves as safetensors like any other."""
    directory, gguf_kwargs = _gguf_kwargs(path)
    loaded = auto_class.from_pretrained(directory, **gguf_kwargs, **kwargs)
    config = loaded.config
    for attribute in ("quantization_config", "_pre_quantization_dtype"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    model = auto_class.from_config(config, **{k: v for k, v in kwargs.items() if k == _DTYPE_KWARG})
    model.load_state_dict(loaded.state_dict(), strict=True)
    model.generation_config = loaded.generation_config
    return model


def _resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str | None:
    if dtype is None or isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    if isinstance(dtype, str):
        aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16", "float": "float32"}
        resolved = getattr(torch, aliases.get(dtype, dtype), None)
        if isinstance(resolved, torch.dtype):
            return resolved
    raise ValueError(f"dtype must be a torch.dtype, 'auto', or a name like 'bfloat16'/'float32'; got {dtype!r}")


def load_pretrained(
    auto_class,
    name_or_path: str | os.PathLike,
    *,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    **kwargs,
) -> PreTrainedModel:
    """``auto_class.from_pretrained`` with alignkit's safety defaults (shared by every loader here).

    * weights from ``*.safetensors`` only (``use_safetensors=True``): a pickle checkpoint (``*.bin``) can
      execute code when unpickled, so it is refused; convert it once with ``save_pretrained``;
    * ``trust_remote_code`` is passed explicitly (default ``False``): no Python from the checkpoint runs;
    * a local path that does not exist is reported by name (see :func:`resolve_model_path`);
    * ``dtype=None`` leaves transformers' default (v5: the checkpoint's own dtype).
    """
    path = resolve_model_path(name_or_path)
    dtype = _resolve_dtype(dtype)
    if dtype is not None:
        kwargs[_DTYPE_KWARG] = dtype
    if is_gguf(path):  # a single file: no code, no pickle; dequantised by transformers' GGUF reader
        return _load_gguf(auto_class, path, **kwargs)
    try:
        return auto_class.from_pretrained(path, trust_remote_code=trust_remote_code, use_safetensors=True, **kwargs)
    except OSError as err:
        where = "local directory" if os.path.isdir(path) else "Hugging Face Hub id (no such local directory)"
        raise OSError(
            f"could not load {auto_class.__name__} from {os.fspath(name_or_path)!r} as a {where}: {err}. "
            "alignkit loads weights from *.safetensors only (use_safetensors=True)."
        ) from err


# ----------------------------------------------------------------------------------------------- policy
def load_causal_lm(
    name_or_path_or_model: str | os.PathLike | nn.Module,
    dtype: torch.dtype | str | None = None,
    trust_remote_code: bool = False,
    device: torch.device | str | None = None,
    tokenizer=None,
) -> PreTrainedModel:
    """Load a policy: an ``AutoModelForCausalLM`` with dropout disabled.

    Args:
        name_or_path_or_model: a checkpoint directory, a ``.gguf`` file (dequantised; needs the ``gguf``
            package: ``alignkit[gguf]``), a Hub id, or a model already in memory (used as is, not copied:
            dropout is disabled on that object).
        dtype: ``torch.bfloat16``, ``"float32"``, ``"auto"``...; None keeps the checkpoint's dtype (or the
            in-memory model's).
        trust_remote_code: allow the checkpoint's own Python code (custom architectures). Off by default:
            turning it on runs code from the checkpoint directory.
        device: move the model there after loading.
        tokenizer: if given, the embeddings are resized to ``len(tokenizer)`` when it has more tokens (a pad
            token added by :func:`load_tokenizer`) and ``config.pad_token_id`` is set from it.
    Returns:
        The model, dropout disabled (see :func:`disable_dropout`); mode (train/eval) is left as loaded.
    Raises:
        FileNotFoundError: a local path that does not exist (the message names it).
    """
    if isinstance(name_or_path_or_model, nn.Module):
        model = name_or_path_or_model
        dtype = _resolve_dtype(dtype)
        if isinstance(dtype, torch.dtype):
            model.to(dtype=dtype)
    else:
        model = load_pretrained(
            AutoModelForCausalLM, name_or_path_or_model, dtype=dtype, trust_remote_code=trust_remote_code
        )
    if tokenizer is not None:
        resize_for_tokenizer(model, tokenizer)
    if device is not None:
        model.to(device)
    return disable_dropout(model)


# ----------------------------------------------------------------------------------------------- tokenizer
def ensure_pad_token(tokenizer, pad_policy: str = "reuse", pad_token: str = DEFAULT_PAD_TOKEN):
    """Make sure ``tokenizer`` has a pad token (modifies it in place); by default without new tokens.

    Policy (``pad_policy``), applied when there is no pad token or ``pad_token_id == eos_token_id``:

    * ``"reuse"`` (default; TRL's choice of existing tokens): pad with the UNK token if there is one
      distinct from EOS (SmolLM2-Instruct: ``<|endoftext|>`` instead of its pad ``<|im_end|>`` = EOS), else
      keep the pad that equals EOS, else (no pad at all) EOS. The vocabulary and the model's embeddings never
      change. Safe because alignkit builds every mask explicitly, never from ``ids != pad_id``; UNK first
      because a reward model exported to plain transformers pools at "the last id that is not the pad id",
      which with pad == EOS reads the score before a final EOS
      (:meth:`~alignkit.models.RewardModel.save_pretrained` warns when that is the case).
    * ``"add"``: add ``pad_token`` (``"<pad>"``) as a new special token when the pad is missing or equals
      EOS. The vocabulary grows by one: resize the model's embeddings with :func:`resize_for_tokenizer`
      (or pass ``tokenizer=`` to :func:`load_causal_lm`); the new row is initialised to the mean of the
      old ones (transformers' ``mean_resizing``). A LoRA adapter then has to save the resized embeddings.
    * ``"error"``: raise when the pad is missing or equals EOS, for setups that must be told.

    Returns:
        ``tokenizer``, with ``pad_token_id is not None``.
    Raises:
        ValueError: an unknown policy; ``"error"`` with no pad or pad == EOS; ``"reuse"`` on a tokenizer with
            neither pad, UNK nor EOS.
    """
    if pad_policy not in PAD_POLICIES:
        raise ValueError(f"pad_policy must be one of {PAD_POLICIES}, got {pad_policy!r}")
    pad_id, eos_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad_id is not None and pad_id != eos_id:
        return tokenizer
    problem = "has no pad token" if pad_id is None else f"uses its EOS token {tokenizer.eos_token!r} as pad token"
    name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
    if pad_policy == "reuse":
        unk_id = tokenizer.unk_token_id
        if unk_id is not None and unk_id != eos_id:
            tokenizer.pad_token = tokenizer.unk_token
            return tokenizer
        if pad_id is not None:
            return tokenizer
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
            return tokenizer
        raise ValueError(
            f"tokenizer {name!r} has no pad, UNK or EOS token to pad with; use pad_policy='add' to add "
            f"{pad_token!r} (the model's embeddings are then resized)"
        )
    if pad_policy == "error":
        raise ValueError(
            f"tokenizer {name!r} {problem}; pad_policy='error' refuses to choose one. Use pad_policy='reuse' "
            f"(UNK or EOS pads, no new token) or 'add' (a dedicated {pad_token!r}; the model is resized), or "
            "give the tokenizer a pad token distinct from EOS yourself."
        )
    tokenizer.add_special_tokens({"pad_token": pad_token})
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError(
            f"tokenizer {name!r}: adding pad token {pad_token!r} did not give an id distinct from EOS "
            f"({tokenizer.eos_token_id}); pass another pad_token"
        )
    return tokenizer


def load_tokenizer(path_or_tokenizer, trust_remote_code: bool = False, pad_policy: str = "reuse"):
    """Load a tokenizer (``AutoTokenizer``) and guarantee a pad token.

    Args:
        path_or_tokenizer: a tokenizer directory, a ``.gguf`` file or Hub id, or a tokenizer object (changed
            in place).
        trust_remote_code: allow a custom tokenizer class's code from the checkpoint. Off by default.
        pad_policy: ``"reuse"`` (default: the tokenizer's pad, else UNK, else EOS; no new token), ``"add"``
            (a new ``"<pad>"``; the model then needs :func:`resize_for_tokenizer`) or ``"error"``. See
            :func:`ensure_pad_token`.
    Returns:
        The tokenizer, with ``pad_token_id is not None``.
    """
    if isinstance(path_or_tokenizer, (str, os.PathLike)):
        path = resolve_model_path(path_or_tokenizer)
        if is_gguf(path):  # the tokenizer (and chat template) stored in the GGUF file
            directory, gguf_kwargs = _gguf_kwargs(path)
            tokenizer = AutoTokenizer.from_pretrained(directory, **gguf_kwargs)
        else:
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    else:
        tokenizer = path_or_tokenizer
    return ensure_pad_token(tokenizer, pad_policy=pad_policy)


def resize_for_tokenizer(model: PreTrainedModel, tokenizer) -> PreTrainedModel:
    """Fit ``model`` to ``tokenizer``: grow the embeddings if the tokenizer has more tokens, set pad ids.

    Embeddings (and an untied LM head) grow to ``len(tokenizer)`` with mean-initialised new rows; a model
    whose vocabulary is already larger (padded to a multiple of 64, say) is left as is. ``config.pad_token_id``
    (and the generation config's) are set to the tokenizer's. Do this before :func:`apply_lora`: a PEFT
    wrapper does not resize. Returns ``model``.
    """
    n_tokens = len(tokenizer)
    n_embeddings = model.get_input_embeddings().num_embeddings
    if n_tokens > n_embeddings:
        model.resize_token_embeddings(n_tokens, mean_resizing=True)
    pad_id = tokenizer.pad_token_id
    if pad_id is not None:
        model.config.pad_token_id = pad_id
        text_config = model.config.get_text_config()
        if text_config is not model.config:
            text_config.pad_token_id = pad_id
        generation_config = getattr(model, "generation_config", None)
        if generation_config is not None:
            generation_config.pad_token_id = pad_id
    return model
