import pytest
import torch

from alignkit.core.logprobs import entropy_from_logits, token_logprobs
from alignkit.core.policy_loss import ppo_clip_loss, reinforce_loss


def test_reinforce_and_ppo_share_the_gradient_at_ratio_one():
    # logits [1, 2, 1, 1], action 1, advantage 1: d(-log p_1)/dz = softmax(z) - onehot(1)
    # softmax = [e, e^2, e, e] / (3e + e^2) = [0.1749, 0.4754, 0.1749, 0.1749] -> [0.1749, -0.5246, 0.1749, 0.1749]
    expected = torch.tensor([0.1749, -0.5246, 0.1749, 0.1749])
    mask = torch.ones(1, 1)
    adv = torch.ones(1, 1)
    logits = torch.tensor([[[1.0, 2.0, 1.0, 1.0]]], requires_grad=True)
    lp = token_logprobs(logits, torch.tensor([[1]]))
    loss, _ = reinforce_loss(lp, adv, mask)
    (g_reinforce,) = torch.autograd.grad(loss, logits)
    lp = token_logprobs(logits, torch.tensor([[1]]))
    loss, metrics = ppo_clip_loss(lp, lp.detach(), adv, mask)
    (g_ppo,) = torch.autograd.grad(loss, logits)
    torch.testing.assert_close(g_reinforce[0, 0], expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(g_ppo, g_reinforce)
    assert metrics["ratio_mean"] == 1.0 and metrics["clipfrac"] == 0.0 and metrics["approx_kl"] == 0.0


def test_ppo_clip_hand_computed():
    # eps 0.2; token 0: ratio 1.5, A=+1 -> max(-1.5, -1.2) = -1.2 (clipped)
    # token 1: ratio 0.5, A=+1 -> max(-0.5, -0.8) = -0.5 (unclipped: pessimistic)
    # token 2: ratio 0.5, A=-1 -> max(0.5, 0.8) = 0.8 (clipped)
    # token 3: ratio 1.5, A=-1 -> max(1.5, 1.2) = 1.5 (unclipped)
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.5]])
    old = torch.zeros(1, 4)
    lp = ratio.log().requires_grad_()
    adv = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    loss, m = ppo_clip_loss(lp, old, adv, torch.ones(1, 4), clip_eps=0.2)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 0.8 + 1.5) / 4)
    assert m["clipfrac"] == 0.5
    assert m["ratio_min"] == pytest.approx(0.5) and m["ratio_max"] == pytest.approx(1.5)
    # clipped tokens carry no gradient
    (g,) = torch.autograd.grad(loss, lp)
    assert g[0, 0] == 0 and g[0, 2] == 0 and g[0, 1] != 0 and g[0, 3] != 0
    # dual clip c = 1.3 caps token 3 (A<0, loss 1.5) at 1.3
    loss_dc, m_dc = ppo_clip_loss(lp, old, adv, torch.ones(1, 4), clip_eps=0.2, dual_clip=1.3)
    assert loss_dc.item() == pytest.approx((-1.2 - 0.5 + 0.8 + 1.3) / 4)
    assert m_dc["dual_clipfrac"] == 0.25


def test_approx_kl_is_k3_of_old_vs_new():
    # old log p = -1, new log p = -1.5: rho = e^-0.5; k3 = rho - 1 - log rho = 0.6065 - 1 + 0.5 = 0.1065
    _, m = ppo_clip_loss(torch.tensor([[-1.5]]), torch.tensor([[-1.0]]), torch.ones(1, 1), torch.ones(1, 1))
    assert m["approx_kl"] == pytest.approx(0.1065, abs=1e-4)


def test_entropy_bonus_and_padding_invariance():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 5, requires_grad=True)
    tokens = torch.randint(0, 5, (2, 3))
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    lp = token_logprobs(logits, tokens)
    ent = entropy_from_logits(logits)
    adv = torch.tensor([[0.5, -1.0, 99.0], [2.0, 99.0, 99.0]])
    base, _ = ppo_clip_loss(lp, lp.detach(), adv, mask)
    with_bonus, m = ppo_clip_loss(lp, lp.detach(), adv, mask, entropy=ent, entropy_coef=0.01)
    mean_ent = (ent * mask).sum() / mask.sum()
    assert with_bonus.item() == pytest.approx(base.item() - 0.01 * mean_ent.item(), abs=1e-6)
    assert m["entropy"] == pytest.approx(mean_ent.item(), abs=1e-6)
    # advantages at padded positions do not matter
    adv2 = torch.where(mask.bool(), adv, torch.full_like(adv, -1e6))
    loss2, _ = ppo_clip_loss(lp, lp.detach(), adv2, mask)
    assert loss2.item() == pytest.approx(base.item())
    with pytest.raises(ValueError, match="entropy"):
        reinforce_loss(lp, adv, mask, entropy_coef=0.1)


def test_reinforce_default_is_reward_times_sequence_logprob():
    # seed 003: loss = -1/n sum_i r_i * log pi(y_i|x) with log pi(y|x) = sum_t log pi(a_t|s_t)
    lp = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    r = torch.tensor([2.0, -1.0])
    loss, _ = reinforce_loss(lp, r, mask)
    assert loss.item() == pytest.approx(-(2.0 * -3.0 + -1.0 * -0.5) / 2)
