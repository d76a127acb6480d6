import pytest
import torch

from alignkit.core.returns import gae, gae_from_transitions, reward_to_go


def test_reward_to_go_hand_computed():
    # gamma 0.5, r = [1, 2, 3]: R2 = 3, R1 = 2 + 0.5*3 = 3.5, R0 = 1 + 0.5*3.5 = 2.75
    r = torch.tensor([[1.0, 2.0, 3.0, 0.0]])
    m = torch.tensor([[1, 1, 1, 0]])
    assert reward_to_go(r, m, gamma=0.5).tolist() == [[2.75, 3.5, 3.0, 0.0]]
    # truncated with bootstrap V = 4: R2 = 3 + 0.5*4 = 5, R1 = 4.5, R0 = 3.25
    out = reward_to_go(r, m, gamma=0.5, bootstrap_value=torch.tensor([4.0]))
    assert out.tolist() == [[3.25, 4.5, 5.0, 0.0]]


def test_gae_hand_computed():
    # gamma 1, lam 0.5, r = [0, 0, 1], V = [0.5, 0.6, 0.8]
    # deltas: d2 = 1 - 0.8 = 0.2, d1 = 0 + 0.8 - 0.6 = 0.2, d0 = 0 + 0.6 - 0.5 = 0.1
    # A2 = 0.2, A1 = 0.2 + 0.5*0.2 = 0.3, A0 = 0.1 + 0.5*0.3 = 0.25; returns = A + V = [0.75, 0.9, 1.0]
    r = torch.tensor([[0.0, 0.0, 1.0]])
    v = torch.tensor([[0.5, 0.6, 0.8]])
    adv, ret = gae(r, v, torch.ones(1, 3), gamma=1.0, lam=0.5)
    torch.testing.assert_close(adv, torch.tensor([[0.25, 0.3, 0.2]]))
    torch.testing.assert_close(ret, torch.tensor([[0.75, 0.9, 1.0]]))


def _random_batch(seed, b=6, t=9):
    g = torch.Generator().manual_seed(seed)
    rewards = torch.randn(b, t, generator=g, dtype=torch.float64)
    values = torch.randn(b, t, generator=g, dtype=torch.float64)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    return rewards, values, mask


@pytest.mark.parametrize("gamma", [1.0, 0.9])
def test_gae_lambda_limits(gamma):
    rewards, values, mask = _random_batch(0)
    # lam = 1: A = reward-to-go - V
    adv, _ = gae(rewards, values, mask, gamma=gamma, lam=1.0)
    torch.testing.assert_close(adv, (reward_to_go(rewards, mask, gamma) - values) * mask)
    # lam = 0: A = one-step TD error r_t + gamma V_{t+1} - V_t (V after the last token = 0)
    adv0, _ = gae(rewards, values, mask, gamma=gamma, lam=0.0)
    next_v = torch.cat([values[:, 1:], torch.zeros(values.shape[0], 1, dtype=values.dtype)], 1) * torch.cat(
        [mask[:, 1:], torch.zeros(mask.shape[0], 1, dtype=mask.dtype)], 1
    )
    torch.testing.assert_close(adv0, (rewards + gamma * next_v - values) * mask)


def _gae_loop_reference(rewards, values, mask, gamma, lam, bootstrap=None):
    """Plain-Python GAE on the real tokens of each row (Schulman et al. 2016, eq. 16)."""
    adv = torch.zeros_like(rewards)
    for b in range(rewards.shape[0]):
        idx = [t for t in range(rewards.shape[1]) if mask[b, t]]
        last = 0.0
        for k in reversed(range(len(idx))):
            t = idx[k]
            next_v = values[b, idx[k + 1]].item() if k + 1 < len(idx) else (
                0.0 if bootstrap is None else bootstrap[b].item())
            delta = rewards[b, t].item() + gamma * next_v - values[b, t].item()
            last = delta + gamma * lam * last
            adv[b, t] = last
    return adv


@pytest.mark.parametrize("seed", range(4))
def test_gae_loop_vs_vectorised_with_ragged_and_holey_masks(seed):
    rewards, values, mask = _random_batch(seed)
    if seed % 2:  # non-contiguous masks too: padding in the middle is skipped
        mask = (torch.rand(mask.shape, generator=torch.Generator().manual_seed(seed)) > 0.3).long()
        mask[:, 0] = 1
    boot = torch.randn(rewards.shape[0], dtype=torch.float64) if seed >= 2 else None
    adv, ret = gae(rewards, values, mask, gamma=0.97, lam=0.9, bootstrap_value=boot)
    ref = _gae_loop_reference(rewards, values, mask, 0.97, 0.9, boot)
    torch.testing.assert_close(adv, ref)
    torch.testing.assert_close(ret, (ref + values) * mask)


def test_masked_positions_do_not_change_advantages():
    rewards, values, mask = _random_batch(7)
    adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
    pad = mask == 0
    rewards2 = torch.where(pad, torch.full_like(rewards, float("nan")), rewards)
    values2 = torch.where(pad, torch.full_like(values, 1e9), values)
    adv2, ret2 = gae(rewards2, values2, mask, gamma=1.0, lam=0.95)
    torch.testing.assert_close(adv2, adv)
    torch.testing.assert_close(ret2, ret)
    assert (adv2[pad] == 0).all()


def _transitions_loop_reference(r, v, nv, term, trunc, gamma, lam):
    """CleanRL-style backward loop over a single stream of transitions."""
    adv = [0.0] * len(r)
    last = 0.0
    for t in reversed(range(len(r))):
        done = term[t] or trunc[t]
        delta = r[t] + gamma * (0.0 if term[t] else nv[t]) - v[t]
        last = delta + gamma * lam * (0.0 if done else last)
        adv[t] = last
    return adv


def test_gae_from_transitions_matches_loop_reference():
    g = torch.Generator().manual_seed(0)
    t = 40
    r, v, nv = (torch.randn(3, t, generator=g, dtype=torch.float64) for _ in range(3))
    term = torch.rand(3, t, generator=g) < 0.1
    trunc = (torch.rand(3, t, generator=g) < 0.1) & ~term
    adv, ret = gae_from_transitions(r, v, nv, term, trunc, gamma=0.99, lam=0.95)
    for b in range(3):
        ref = _transitions_loop_reference(r[b].tolist(), v[b].tolist(), nv[b].tolist(), term[b].tolist(),
                                          trunc[b].tolist(), 0.99, 0.95)
        torch.testing.assert_close(adv[b], torch.tensor(ref, dtype=torch.float64))
    torch.testing.assert_close(ret, adv + v)


def _fitted_value_of_endless_env(bootstrap_truncation: bool, lam: float, gamma=0.9, horizon=5, iters=300):
    """One state, reward 1 per step, never terminates, cut by a time limit of ``horizon`` steps.

    Fit V by repeatedly regressing it onto its GAE returns (a tabular critic): the fixed point is
    1 / (1 - gamma) = 10 only if the truncated step bootstraps from V(s_T).
    """
    value = 0.0
    for _ in range(iters):
        v = torch.full((1, horizon), value, dtype=torch.float64)
        term = torch.zeros(1, horizon, dtype=torch.bool)
        trunc = torch.zeros(1, horizon, dtype=torch.bool)
        trunc[0, -1] = True
        if not bootstrap_truncation:  # the classic bug: a time-out treated as a terminal state
            term, trunc = trunc, term
        _, ret = gae_from_transitions(torch.ones(1, horizon, dtype=torch.float64), v, v, term, trunc,
                                      gamma=gamma, lam=lam)
        value = ret.mean().item()
    return value


def test_truncation_bootstrap_recovers_the_infinite_horizon_value():
    for lam in (0.95, 1.0):
        assert _fitted_value_of_endless_env(True, lam) == pytest.approx(1 / (1 - 0.9), abs=1e-6)
    # Without the bootstrap (lam = 1: Monte-Carlo returns) V is stuck at the mean truncated return:
    # mean over t of (1 - 0.9^(5-t)) / 0.1 = (4.0951 + 3.439 + 2.71 + 1.9 + 1) / 5 = 2.6288, far below 10.
    assert _fitted_value_of_endless_env(False, 1.0) == pytest.approx(2.6288, abs=1e-3)


def test_bad_inputs():
    with pytest.raises(ValueError, match="gamma"):
        gae(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), gamma=1.5)
    with pytest.raises(ValueError, match="same"):
        gae(torch.zeros(1, 2), torch.zeros(1, 3), torch.ones(1, 2))
