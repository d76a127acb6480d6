import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from alignkit.core.masked import aggregate_loss, masked_mean, masked_sum, masked_var, whiten


def test_hand_computed_masked_reductions():
    x = torch.tensor([[1.0, 2.0, 100.0], [3.0, float("nan"), 5.0]])
    m = torch.tensor([[1, 1, 0], [1, 0, 1]])
    # real entries 1, 2, 3, 5: sum 11, mean 2.75
    assert masked_sum(x, m).item() == 11.0
    assert masked_mean(x, m).item() == 2.75
    # per row: [1+2, 3+5] and means [1.5, 4]
    assert masked_sum(x, m, dim=-1).tolist() == [3.0, 8.0]
    assert masked_mean(x, m, dim=-1).tolist() == [1.5, 4.0]
    # deviations from 2.75: -1.75 -0.75 0.25 2.25; squares 3.0625 .5625 .0625 5.0625 = 8.75
    assert masked_var(x, m, unbiased=False).item() == pytest.approx(8.75 / 4)
    assert masked_var(x, m, unbiased=True).item() == pytest.approx(8.75 / 3)


def test_whiten_reference_figure_lm_human_preferences():
    # OpenAI lm-human-preferences `whiten(values, shift_mean=False)` with the biased variance:
    # mean 1.6, var = 0.6 / 9 = 0.0667, std = 0.2582; (1.2 - 1.6) / 0.2582 + 1.6 = 0.0508.
    x = torch.tensor([[1.2, 1.3, 1.4], [1.5, 1.6, 1.7], [1.8, 1.9, 2.0]])
    out = whiten(x, shift_mean=False, unbiased=False)
    torch.testing.assert_close(out[0], torch.tensor([0.0508, 0.4381, 0.8254]), atol=1e-4, rtol=0)


def test_whiten_ignores_padding_and_zeroes_it():
    x = torch.tensor([[1.0, 2.0, 3.0, -50.0], [4.0, 5.0, 6.0, 1e6]])
    m = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 0]])
    out = whiten(x, m)
    ref = whiten(x[:, :3].reshape(-1)).reshape(2, 3)
    torch.testing.assert_close(out[:, :3], ref)
    assert out[:, 3].tolist() == [0.0, 0.0]
    assert masked_mean(out, m).abs().item() < 1e-6
    assert masked_var(out, m).item() == pytest.approx(1.0, abs=1e-5)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=3, max_size=20), st.floats(0.1, 10), st.floats(-5, 5))
def test_whiten_is_affine_invariant(values, scale, shift):
    x = torch.tensor(values, dtype=torch.float64)
    if x.std() < 1e-3:
        return
    torch.testing.assert_close(whiten(x * scale + shift, eps=0.0), whiten(x, eps=0.0), atol=1e-6, rtol=1e-6)


def test_aggregation_modes_hand_computed():
    loss = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]])
    m = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # token-mean: (1+2+3+4)/4 = 2.5
    assert aggregate_loss(loss, m, "token-mean").item() == 2.5
    # seq-mean-token-mean: mean(6/3, 4/1) = 3
    assert aggregate_loss(loss, m, "seq-mean-token-mean").item() == 3.0
    # seq-mean-token-sum: mean(6, 4) = 5
    assert aggregate_loss(loss, m, "seq-mean-token-sum").item() == 5.0
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        aggregate_loss(loss, m, "token-sum")


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_micro_batch_accumulation_equals_global_loss(mode):
    """Uneven token counts per micro-batch; summing micro-losses with the global normaliser is exact."""
    torch.manual_seed(0)
    theta = torch.randn(8, 6, requires_grad=True)
    lengths = torch.tensor([6, 1, 2, 5, 3, 6, 1, 4])
    mask = (torch.arange(6)[None, :] < lengths[:, None]).float()

    def per_token(rows):
        return (theta[rows] ** 2) * torch.arange(1.0, 7.0)

    rows_all = torch.arange(8)
    global_loss = aggregate_loss(per_token(rows_all), mask, mode)
    (g_global,) = torch.autograd.grad(global_loss, theta)

    normalizer = mask.sum() if mode == "token-mean" else 8
    total = 0.0
    grads = torch.zeros_like(theta)
    for rows in (torch.tensor([0]), torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6, 7])):
        micro = aggregate_loss(per_token(rows), mask[rows], mode, normalizer=normalizer)
        total += micro.item()
        grads += torch.autograd.grad(micro, theta)[0]
    assert total == pytest.approx(global_loss.item(), rel=1e-6)
    torch.testing.assert_close(grads, g_global, atol=1e-6, rtol=1e-6)


def test_whiten_sets_a_spread_below_min_std_to_zero():
    noise = torch.tensor([5e-5, -8e-5, 2e-5, 0.0])  # std 5.5e-5
    assert float(whiten(noise).std()) > 0.4  # without a floor, noise is scaled up ~10,000x
    assert torch.equal(whiten(noise, min_std=1e-4), torch.zeros(4))  # noise is no signal, at any scale
    assert torch.equal(whiten(noise, torch.tensor([1, 1, 0, 1]), min_std=1e-4), torch.zeros(4))
    signal = torch.tensor([1.0, -2.0, 0.5, 0.0])
    torch.testing.assert_close(whiten(signal, min_std=1e-4), whiten(signal))  # real spreads: unchanged
