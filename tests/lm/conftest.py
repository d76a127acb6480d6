import pytest
import torch

from alignkit.models.tiny import build_tiny_llama


@pytest.fixture(scope="module")
def small_llama():
    """2 layers, hidden 64, vocab 97: small enough for many forward passes in a test."""
    torch.manual_seed(0)
    return build_tiny_llama(seed=0, vocab_size=97, hidden_size=64, num_layers=2, num_heads=4, num_kv_heads=2,
                            intermediate_size=128, max_position_embeddings=256)
