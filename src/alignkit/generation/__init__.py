"""Sampling completions from a policy: the Generator protocol and the default KV-cache engine."""

from .base import Completions, Generator, SamplingParams, left_pad, process_logits, sample_from_probs, sample_tokens
from .engine import FAST_PATH_MODEL_TYPES, HFCacheBackend, KVCacheGenerator, LlamaStaticCacheBackend

__all__ = [
    "FAST_PATH_MODEL_TYPES",
    "Completions",
    "Generator",
    "HFCacheBackend",
    "KVCacheGenerator",
    "LlamaStaticCacheBackend",
    "SamplingParams",
    "left_pad",
    "process_logits",
    "sample_from_probs",
    "sample_tokens",
]
