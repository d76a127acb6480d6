import math

import pytest
import torch

from alignkit.core.preference import DPO_LOSS_TYPES, bradley_terry_loss, dpo_loss


def test_bradley_terry_hand_computed():
    # equal rewards: -log sigma(0) = ln 2 (seed 001: sigma(A - B) with A = B)
    loss, m = bradley_terry_loss(torch.tensor([0.7, -2.0]), torch.tensor([0.7, -2.0]))
    assert loss.item() == pytest.approx(math.log(2))
    assert m["rewards_accuracy"] == 0.0 and m["rewards_margin"] == 0.0
    # r_w - r_l = 1: -log sigma(1) = log(1 + e^-1) = 0.3133; with margin 1: ln 2
    loss, m = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]))
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert m["rewards_accuracy"] == 1.0
    loss, _ = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]), margin=torch.tensor([1.0]))
    assert loss.item() == pytest.approx(math.log(2))


def test_dpo_at_reference_policy():
    lp = torch.tensor([-10.0, -3.0])
    lr = torch.tensor([-12.0, -4.0])
    # pi = pi_ref -> h = 0: sigmoid -log sigma(0) = ln 2; ipo (0 - 1/(2*0.1))^2 = 25; hinge max(0, 1) = 1
    expected = {"sigmoid": math.log(2), "ipo": 25.0, "ipo-token-mean": 25.0, "hinge": 1.0}
    for loss_type in DPO_LOSS_TYPES:
        loss, m = dpo_loss(lp, lr, lp.clone(), lr.clone(), beta=0.1, loss_type=loss_type)
        assert loss.item() == pytest.approx(expected[loss_type]), loss_type
        assert m["rewards_chosen"] == 0.0 and m["rewards_margin"] == 0.0


def test_dpo_hand_computed_and_label_smoothing():
    # chosen log-ratio 1 - 0 = +1, rejected log-ratio -1 - 0 = -1 -> h = 2, beta 0.5 -> beta h = 1
    args = (torch.tensor([1.0]), torch.tensor([-1.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    loss, m = dpo_loss(*args, beta=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)))  # 0.3133
    assert m["rewards_chosen"] == 0.5 and m["rewards_rejected"] == -0.5 and m["rewards_accuracy"] == 1.0
    # conservative eps 0.1: 0.9 * 0.3133 + 0.1 * log(1 + e) = 0.28197 + 0.13133 = 0.4133
    loss, _ = dpo_loss(*args, beta=0.5, label_smoothing=0.1)
    assert loss.item() == pytest.approx(0.9 * math.log(1 + math.exp(-1)) + 0.1 * math.log(1 + math.e))
    # ipo: (2 - 1/(2*0.5))^2 = 1; hinge: max(0, 1 - 1) = 0
    assert dpo_loss(*args, beta=0.5, loss_type="ipo")[0].item() == pytest.approx(1.0)
    assert dpo_loss(*args, beta=0.5, loss_type="hinge")[0].item() == 0.0


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    chosen = torch.tensor([-5.0], requires_grad=True)
    rejected = torch.tensor([-5.0], requires_grad=True)
    loss, _ = dpo_loss(chosen, rejected, torch.tensor([-5.0]), torch.tensor([-5.0]), beta=0.1)
    loss.backward()
    # d/dh [-log sigma(beta h)] = -beta (1 - sigma(0)) = -0.05
    assert chosen.grad.item() == pytest.approx(-0.05) and rejected.grad.item() == pytest.approx(0.05)


def test_bad_arguments():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="unknown DPO loss_type"):
        dpo_loss(x, x, x, x, loss_type="kto")
    with pytest.raises(ValueError, match="beta"):
        dpo_loss(x, x, x, x, beta=0.0)
    with pytest.raises(ValueError, match="label_smoothing"):
        dpo_loss(x, x, x, x, loss_type="ipo", label_smoothing=0.1)
    with pytest.raises(ValueError, match="shapes"):
        dpo_loss(x, torch.zeros(3), x, x)
