import math

import pytest
import torch

from alignkit.core.kl import AdaptiveKLController, FixedKLController, kl_estimate, kl_shaped_rewards


def test_estimators_hand_computed():
    # log pi = -1, log pi_ref = -2: l = 1; k1 = 1, k2 = 0.5, k3 = e^-1 - 1 + 1 = 0.3679
    lp, ref = torch.tensor([-1.0]), torch.tensor([-2.0])
    assert kl_estimate(lp, ref, "k1").item() == 1.0
    assert kl_estimate(lp, ref, "k2").item() == 0.5
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx(math.exp(-1), abs=1e-6)
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_estimate(lp, ref, "k4")


def test_sample_means_approach_exact_kl_and_k3_nonnegative():
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    q = torch.tensor([0.25, 0.25, 0.25, 0.25])
    exact = float((p * (p / q).log()).sum())  # KL(p || q) = 0.2214
    g = torch.Generator().manual_seed(0)
    samples = torch.multinomial(p, 200_000, replacement=True, generator=g)
    lp, lq = p.log()[samples], q.log()[samples]
    k1 = kl_estimate(lp, lq, "k1")
    k3 = kl_estimate(lp, lq, "k3")
    # standard error of k1 here is ~0.6/sqrt(2e5) = 0.0013; a 0.01 tolerance is ~7 sigma
    assert k1.mean().item() == pytest.approx(exact, abs=0.01)
    assert k3.mean().item() == pytest.approx(exact, abs=0.01)
    assert (k3 >= 0).all()
    assert k3.var() < k1.var()  # the point of k3


def test_kl_shaped_rewards_hand_computed():
    lp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    scores = torch.tensor([2.0, -1.0])
    rewards, non_score = kl_shaped_rewards(scores, lp, ref, mask, beta=0.1)
    # row 0: -0.1 * [0.5, -1, 0] = [-0.05, 0.1, 0], score 2 at t=2; row 1: -0.1 * 1 = -0.1, score -1 at t=0
    torch.testing.assert_close(non_score, torch.tensor([[-0.05, 0.1, 0.0], [-0.1, 0.0, 0.0]]))
    torch.testing.assert_close(rewards, torch.tensor([[-0.05, 0.1, 2.0], [-1.1, 0.0, 0.0]]))


def test_adaptive_controller_reference_figures():
    # Ziegler et al. 2019: beta <- beta (1 + clip(KL/target - 1, -0.2, 0.2) * n_steps / horizon)
    # KL 12: error clip(1) = 0.2 -> 0.15 * (1 + 0.2 * 512/10000) = 0.15 * 1.01024 = 0.151536
    # KL 3: error clip(-0.5) = -0.2 -> 0.15 * 0.98976 = 0.148464;  KL 6: error 0 -> 0.15
    for kl, expected in [(12, 0.151536), (3, 0.148464), (6, 0.15)]:
        ctl = AdaptiveKLController(0.15, target=6, horizon=10000)
        assert ctl.update(kl, n_steps=512) == pytest.approx(expected, abs=1e-9)


def test_controllers_state_roundtrip_and_validation():
    ctl = AdaptiveKLController(0.2, 6, 10000)
    ctl.update(20, 256)
    clone = AdaptiveKLController(1.0, 1, 1)
    clone.load_state_dict(ctl.state_dict())
    assert clone.update(1.0, 64) == ctl.update(1.0, 64)
    fixed = FixedKLController(0.05)
    assert fixed.update(100.0, 10) == 0.05
    with pytest.raises(ValueError, match="finite"):
        ctl.update(float("nan"), 1)
    with pytest.raises(ValueError, match="beta"):
        FixedKLController(-1)
