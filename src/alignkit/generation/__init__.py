"""Sampling completions from a policy: the Generator protocol, engines by name (:func:`make_generator`) and the
default KV-cache engine (imported on first use: ``alignkit.generation`` itself is light)."""

from .base import Completions, Generator, SamplingParams, left_pad, process_logits, sample_from_probs, sample_tokens
from .registry import ENGINES, make_generator, register_engine

_ENGINE_NAMES = ("FAST_PATH_MODEL_TYPES", "HFCacheBackend", "KVCacheGenerator", "LlamaStaticCacheBackend")

__all__ = [
    "ENGINES",
    "Completions",
    "Generator",
    "SamplingParams",
    "left_pad",
    "make_generator",
    "process_logits",
    "register_engine",
    "sample_from_probs",
    "sample_tokens",
    *_ENGINE_NAMES,
]


def __getattr__(name: str):
    if name in _ENGINE_NAMES:
        from . import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
