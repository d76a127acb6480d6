import pytest
import torch

from alignkit.core.value_loss import explained_variance, value_loss


def test_value_loss_hand_computed():
    v = torch.tensor([[1.0, 2.0, 5.0]], requires_grad=True)
    ret = torch.tensor([[0.0, 2.0, 3.0]])
    mask = torch.tensor([[1, 1, 0]])
    # 1/2 mean((1-0)^2, (2-2)^2) = 0.25
    loss, m = value_loss(v, ret, mask)
    assert loss.item() == 0.25 and m["value_loss"] == 0.25
    # clipped: old = [0.5, 2, .], c = 0.2 -> V_clip = [0.7, 2]; errs max(1, 0.49) = 1, max(0, 0) = 0 -> 0.25
    old = torch.tensor([[0.5, 2.0, 0.0]])
    loss_c, m_c = value_loss(v, ret, mask, old_values=old, clip_range=0.2)
    assert loss_c.item() == 0.25 and m_c["vf_clipfrac"] == 0.0
    # old = [1.5, ...]: V_clip = 1.3, err_clip = 1.69 > 1 -> loss 1/2 * (1.69 + 0) / 2 = 0.4225
    old2 = torch.tensor([[1.5, 2.0, 0.0]])
    loss_c2, m_c2 = value_loss(v, ret, mask, old_values=old2, clip_range=0.2)
    assert loss_c2.item() == pytest.approx(0.4225) and m_c2["vf_clipfrac"] == 0.5
    with pytest.raises(ValueError, match="old_values"):
        value_loss(v, ret, mask, clip_range=0.2)


def test_explained_variance():
    ret = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert explained_variance(ret, ret).item() == 1.0
    assert explained_variance(torch.full((4,), 2.5), ret).item() == pytest.approx(0.0)
    # V = 0: Var[R - 0] / Var[R] = 1 -> 0... with V = -R: Var[2R]/Var[R] = 4 -> -3
    assert explained_variance(-ret, ret).item() == pytest.approx(-3.0)
    assert torch.isnan(explained_variance(ret, torch.ones(4)))
