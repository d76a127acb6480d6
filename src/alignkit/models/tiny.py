"""Build tokenizers and small causal LMs locally, with no download.

Tests, benchmarks and the quickstart use these; real users load their models with
:func:`alignkit.models.loading.load_causal_lm` instead. The standard tiny config of the benchmarks is
Llama-style, 4 layers, hidden 256, 4 heads, vocab 2048.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "unk": "<unk>"}


def build_tokenizer(corpus: Iterable[str], vocab_size: int = 2048, model: str = "bpe"):
    """Train a byte-level BPE (or word-level) tokenizer on ``corpus`` and wrap it for transformers.

    Args:
        corpus: training texts.
        vocab_size: target vocabulary size (special tokens included).
        model: ``"bpe"`` (byte-level BPE: any text encodes) or ``"word"`` (whitespace words; unknown
            words map to ``<unk>``; handy when a test wants one token per word).
    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with distinct pad (id 0), bos (1), eos (2), unk (3)
        tokens, left padding (what generation wants), and a simple chat template.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [SPECIAL_TOKENS[k] for k in ("pad", "bos", "eos", "unk")]
    if model == "bpe":
        tok = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk"]))
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif model == "word":
        tok = Tokenizer(models.WordLevel(unk_token=SPECIAL_TOKENS["unk"]))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    else:
        raise ValueError(f"model must be 'bpe' or 'word', got {model!r}")
    tok.train_from_iterator(list(corpus), trainer=trainer)
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=SPECIAL_TOKENS["pad"],
        bos_token=SPECIAL_TOKENS["bos"],
        eos_token=SPECIAL_TOKENS["eos"],
        unk_token=SPECIAL_TOKENS["unk"],
        padding_side="left",
    )
    wrapped.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    return wrapped


def tiny_llama_config(
    vocab_size: int = 2048,
    hidden_size: int = 256,
    num_layers: int = 4,
    num_heads: int = 4,
    num_kv_heads: int | None = None,
    intermediate_size: int | None = None,
    max_position_embeddings: int = 1024,
    pad_token_id: int = 0,
    bos_token_id: int = 1,
    eos_token_id: int = 2,
):
    """A ``LlamaConfig`` for a small model (defaults: the benchmarks' standard tiny config)."""
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or int(hidden_size * 8 / 3 // 16 * 16),
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        tie_word_embeddings=False,
        attention_dropout=0.0,
    )


def build_tiny_llama(seed: int = 0, **config_kwargs):
    """A randomly initialised ``LlamaForCausalLM`` in eval mode (see :func:`tiny_llama_config`)."""
    import torch
    from transformers import LlamaForCausalLM

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_llama_config(**config_kwargs))
    return model.eval()
