import pytest
import torch

from alignkit.core.trust_region import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    trpo_step,
)


@pytest.mark.parametrize("n", [5, 20])
def test_conjugate_gradient_solves_spd_within_n_iterations(n):
    g = torch.Generator().manual_seed(n)
    a = torch.randn(n, n, generator=g, dtype=torch.float64)
    spd = a @ a.T + n * torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    calls = []

    def matvec(v):
        calls.append(1)
        return spd @ v

    x = conjugate_gradient(matvec, b, max_iters=n, residual_tol=1e-20)
    torch.testing.assert_close(x, torch.linalg.solve(spd, b), atol=1e-8, rtol=1e-8)
    assert len(calls) <= n


def test_conjugate_gradient_rejects_indefinite_matrix():
    with pytest.raises(ValueError, match="positive definite"):
        conjugate_gradient(lambda v: -v, torch.ones(3))


class _SoftmaxPolicy(torch.nn.Module):
    """pi(a|s) = softmax(W phi(s)); a tiny stand-in for an LM head."""

    def __init__(self, n_states=6, n_actions=4, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.features = torch.randn(n_states, 3, generator=g, dtype=torch.float64)
        self.w = torch.nn.Parameter(0.1 * torch.randn(3, n_actions, generator=g, dtype=torch.float64))

    def logp(self):
        return torch.log_softmax(self.features @ self.w, -1)  # [S, A]


def _mean_kl(old_logp, new_logp):
    return (old_logp.exp() * (old_logp - new_logp)).sum(-1).mean()


def test_fisher_vector_product_equals_explicit_hessian():
    pol = _SoftmaxPolicy()
    old = pol.logp().detach()
    fvp = fisher_vector_product(_mean_kl(old, pol.logp()), [pol.w], damping=0.05)

    def kl_of(flat_w):
        logp = torch.log_softmax(pol.features @ flat_w.view(3, 4), -1)
        return _mean_kl(old, logp)

    hess = torch.autograd.functional.hessian(kl_of, pol.w.detach().reshape(-1))
    v = torch.randn(12, dtype=torch.float64)
    torch.testing.assert_close(fvp(v), hess @ v + 0.05 * v)


def _bandit_problem(seed):
    pol = _SoftmaxPolicy(seed=seed)
    g = torch.Generator().manual_seed(100 + seed)
    actions = torch.randint(0, 4, (64,), generator=g)
    states = torch.randint(0, 6, (64,), generator=g)
    adv = torch.randn(64, generator=g, dtype=torch.float64) + (actions == 2).double()
    old = pol.logp().detach()

    def surrogate():
        lp = pol.logp()[states, actions]
        return (torch.exp(lp - old[states, actions]) * adv).mean()

    def kl():
        return _mean_kl(old[states], pol.logp()[states])

    return pol, surrogate, kl


@pytest.mark.parametrize("max_kl", [1e-3, 1e-2, 0.1])
@pytest.mark.parametrize("seed", range(3))
def test_trpo_step_respects_kl_and_improves(max_kl, seed):
    pol, surrogate, kl = _bandit_problem(seed)
    before = surrogate().item()
    metrics = trpo_step([pol.w], surrogate, kl, max_kl=max_kl, damping=1e-3)
    with torch.no_grad():
        actual_kl, after = kl().item(), surrogate().item()
    assert metrics["accepted"] == 1.0
    assert actual_kl <= max_kl
    assert metrics["kl"] == pytest.approx(actual_kl)
    assert after > before
    # the full step sits on the trust-region boundary of the quadratic model: actual KL ~ delta
    if metrics["step_fraction"] == 1.0:
        assert actual_kl == pytest.approx(max_kl, rel=0.35)


@pytest.mark.parametrize("seed", range(20))
def test_line_search_never_accepts_a_step_over_the_kl_limit(seed):
    pol, surrogate, kl = _bandit_problem(seed % 3)
    start = pol.w.detach().clone()
    g = torch.Generator().manual_seed(seed)
    scale = float(torch.empty(1).uniform_(0.1, 20, generator=g))
    if seed % 2:  # a random direction
        step = torch.randn(12, generator=g, dtype=torch.float64) * scale
    else:  # an ascent direction, often too long: the search must shrink it under the KL limit
        (grad,) = torch.autograd.grad(surrogate(), pol.w)
        step = grad.reshape(-1) / grad.norm() * scale
    max_kl = 1e-3

    def evaluate():
        return surrogate().item(), kl().item()

    result = backtracking_line_search([pol.w], step, evaluate, max_kl=max_kl,
                                      old_surrogate=surrogate().item(), max_backtracks=8)
    with torch.no_grad():
        actual_kl = kl().item()
    if result.accepted:
        assert actual_kl <= max_kl and result.kl == pytest.approx(actual_kl)
        assert result.improvement > 0
    else:
        assert torch.equal(pol.w.detach(), start)


def test_line_search_rejects_when_surrogate_does_not_improve():
    pol, surrogate, kl = _bandit_problem(1)
    start = pol.w.detach().clone()
    result = backtracking_line_search([pol.w], torch.full((12,), 1e-3, dtype=torch.float64),
                                      lambda: (0.0, 0.0), max_kl=1.0, old_surrogate=0.0)
    assert not result.accepted and result.step_fraction == 0.0
    assert torch.equal(pol.w.detach(), start)
