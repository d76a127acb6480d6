"""Generation engines by name: :func:`make_generator` is the one place an engine is built.

An engine is any class implementing :class:`~alignkit.generation.base.Generator` whose constructor takes
``(model, eos_token_id, pad_token_id, **options)``. Engines are registered by *import path*
(``"package.module:ClassName"``) and imported only when chosen, so an optional engine (vLLM, SGLang) costs
nothing until it is used and needs no import here::

    register_engine("my-engine", "my_package.engines:MyGenerator")
    make_generator(policy, tokenizer, backend="my-engine", some_option=1)

Built in: ``"kv-cache"``, the default batched KV-cache sampler
(:class:`~alignkit.generation.engine.KVCacheGenerator`; options ``kernels``, ``weights_dtype``,
``own_weights``, ``max_length``).
"""

from __future__ import annotations

from .base import Generator

__all__ = ["ENGINES", "make_generator", "register_engine"]

ENGINES: dict[str, str] = {"kv-cache": "alignkit.generation.engine:KVCacheGenerator"}


def register_engine(name: str, target: str) -> None:
    """Make ``make_generator(..., backend=name)`` build ``target`` (``"module.path:ClassName"``), imported lazily.

    Raises:
        ValueError: ``name`` is already registered to another target, or ``target`` is not ``module:Class``.
    """
    module, _, attr = target.partition(":")
    if not module or not attr:
        raise ValueError(f"engine {name!r}: target must be 'module.path:ClassName', got {target!r}")
    if ENGINES.get(name, target) != target:
        raise ValueError(f"engine {name!r} is already registered to {ENGINES[name]!r}")
    ENGINES[name] = target


def _engine_class(backend: str) -> type:
    if backend not in ENGINES:
        raise ValueError(f"unknown generation backend {backend!r}; registered: {', '.join(sorted(ENGINES))} "
                         "(register_engine adds one)")
    from ..rewards.base import resolve_import_path  # the one resolver of "module:name" paths (nothing eval-ed)

    return resolve_import_path(ENGINES[backend], f"generation backend {backend!r}")


def make_generator(policy, tokenizer, backend: str = "kv-cache", **options) -> Generator:
    """Build the ``backend`` engine sampling from ``policy``, ending sequences at the tokenizer's EOS and
    padding with its pad token.

    Args:
        policy: a causal LM (used by reference unless the engine keeps its own weights).
        tokenizer: gives ``eos_token_id`` and ``pad_token_id`` (both must be set: ``load_tokenizer`` sets the pad).
        backend: a registered engine name (:data:`ENGINES`).
        options: passed to the engine's constructor.
    """
    for name in ("eos_token_id", "pad_token_id"):
        if getattr(tokenizer, name, None) is None:
            raise ValueError(f"tokenizer has no {name}; generation needs one (alignkit.models.load_tokenizer sets "
                             "the pad token to the tokenizer's pad, EOS or UNK)")
    return _engine_class(backend)(policy, tokenizer.eos_token_id, tokenizer.pad_token_id, **options)
