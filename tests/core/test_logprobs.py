import math

import pytest
import torch

from alignkit.core.logprobs import entropy_from_logits, naive_token_logprobs, token_logprobs


def test_hand_computed_logprob_and_temperature():
    # logits [1, 2, 1, 1], token 1: log p = 2 - log(3e + e^2) = 2 - log(8.1548 + 7.3891) = 2 - 2.7437 = -0.7437
    logits = torch.tensor([[1.0, 2.0, 1.0, 1.0]])
    got = token_logprobs(logits, torch.tensor([1]))
    assert got.item() == pytest.approx(2 - math.log(3 * math.e + math.e**2), abs=1e-6)
    assert got.item() == pytest.approx(-0.7437, abs=1e-4)
    # T = 2: z/T = [0.5, 1, 0.5, 0.5]; log p = 1 - log(3 e^0.5 + e) = 1 - log(4.9462 + 2.7183) = -1.0366
    got_t = token_logprobs(logits, torch.tensor([1]), temperature=2.0)
    assert got_t.item() == pytest.approx(1 - math.log(3 * math.exp(0.5) + math.e), abs=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.3])
@pytest.mark.parametrize("chunk_rows", [1, 3, 64, None])
def test_matches_naive_values_and_gradients(temperature, chunk_rows):
    torch.manual_seed(0)
    logits = torch.randn(4, 7, 50, requires_grad=True)
    tokens = torch.randint(0, 50, (4, 7))
    ours = token_logprobs(logits, tokens, temperature, chunk_rows)
    ref = naive_token_logprobs(logits, tokens, temperature)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    weights = torch.randn(4, 7)
    (g_ours,) = torch.autograd.grad((ours * weights).sum(), logits)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), logits)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-6, rtol=0)


def test_gradcheck_double():
    torch.manual_seed(1)
    logits = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    tokens = torch.randint(0, 6, (5,))
    # The function computes in fp32 internally; compare its analytic gradient against finite differences
    # of the fp64 naive formula instead of gradcheck (which needs fp64 end to end).
    out = token_logprobs(logits.float(), tokens, temperature=0.8, chunk_rows=2)
    (g,) = torch.autograd.grad(out.sum(), logits)
    ref = torch.log_softmax(logits / 0.8, -1).gather(-1, tokens[:, None]).sum()
    (g_ref,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=1e-5)


def test_bf16_logits_computed_in_fp32():
    torch.manual_seed(2)
    logits = torch.randn(3, 8, 1000).to(torch.bfloat16)
    tokens = torch.randint(0, 1000, (3, 8))
    ours = token_logprobs(logits, tokens)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, naive_token_logprobs(logits, tokens), atol=1e-5, rtol=0)


def test_rejects_bad_inputs():
    logits = torch.randn(2, 3, 5)
    with pytest.raises(ValueError, match="leading shape"):
        token_logprobs(logits, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids"):
        token_logprobs(logits, torch.full((2, 3), 5))
    with pytest.raises(ValueError, match="temperature"):
        token_logprobs(logits, torch.zeros(2, 3, dtype=torch.long), temperature=0.0)
    with pytest.raises(TypeError, match="integer"):
        token_logprobs(logits, torch.zeros(2, 3))


def test_entropy_hand_computed_and_gradient():
    # Uniform over 4 -> H = ln 4 = 1.3863. Logits [0, ln 3] -> p = [1/4, 3/4]:
    # H = -(0.25 ln 0.25 + 0.75 ln 0.75) = 0.3466 + 0.2158 = 0.5623
    h = entropy_from_logits(torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3), -1e4, -1e4]]))
    assert h[0].item() == pytest.approx(math.log(4), abs=1e-6)
    assert h[1].item() == pytest.approx(0.5623, abs=1e-4)

    torch.manual_seed(3)
    logits = torch.randn(6, 9, requires_grad=True)
    ours = entropy_from_logits(logits, temperature=0.9, chunk_rows=4)
    p = torch.softmax(logits / 0.9, -1)
    ref = -(p * torch.log_softmax(logits / 0.9, -1)).sum(-1)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=0)
    w = torch.randn(6)
    (g,) = torch.autograd.grad((ours * w).sum(), logits)
    (g_ref,) = torch.autograd.grad((ref * w).sum(), logits)
    torch.testing.assert_close(g, g_ref, atol=1e-6, rtol=0)
