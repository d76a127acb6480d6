"""Trust Region Policy Optimization: natural-gradient step under a KL constraint.

Seed 002 ("Trust Region Policy Optimization (TRPO)") and seed 004 state the problem
    max_theta  E[ pi_theta(a|s) / pi_old(a|s) * A ]   s.t.   E_s[ KL(pi_old(.|s) || pi_theta(.|s)) ] <= delta.
Schulman et al. 2015 (appendix C) solve it approximately: linearise the surrogate (gradient g) and take
the quadratic model of the KL, whose Hessian at theta_old is the Fisher information F:
    x     = F^-1 g                                   by conjugate gradient, using only products F v
    step  = sqrt(2 delta / (x^T F x)) * x            (so that 1/2 step^T F step = delta)
    F v   = grad_theta( (grad_theta KL) . v )        (Pearlmutter's trick; no F is ever formed)
and a backtracking line search shrinks the step until the *actual* KL is <= delta and the *actual*
surrogate improves. If no fraction passes, the parameters are left unchanged.

Cost per step: one gradient, one double-backward graph for the KL, ``cg_iters`` Hessian-vector products
(each about the cost of a backward pass), and up to ``max_backtracks`` forward passes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

__all__ = [
    "conjugate_gradient",
    "fisher_vector_product",
    "backtracking_line_search",
    "LineSearchResult",
    "trpo_step",
]

Params = Sequence[torch.Tensor]


def _flat(tensors: Sequence[torch.Tensor | None], like: Params) -> torch.Tensor:
    return torch.cat([
        (t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(tensors, like, strict=True)
    ])


def conjugate_gradient(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    max_iters: int = 10,
    residual_tol: float = 1e-10,
) -> torch.Tensor:
    """Solve A x = b for symmetric positive-definite A given only x -> A x (Hestenes & Stiefel 1952).

    In exact arithmetic it converges in at most n iterations for an n x n system.

    Args:
        matvec: v ``[n]`` -> A v ``[n]``.
        b: ``[n]``.
        max_iters: iteration cap (TRPO uses ~10: an approximate natural gradient is enough).
        residual_tol: stop when the squared residual norm r^T r drops below this.
    Returns:
        x ``[n]``.
    """
    x = torch.zeros_like(b)
    r = b.clone()  # residual b - A x with x = 0
    p = r.clone()
    rs_old = r @ r
    for _ in range(max_iters):
        if rs_old <= residual_tol:
            break
        ap = matvec(p)
        curvature = p @ ap
        if curvature <= 0:
            raise ValueError(
                f"conjugate gradient met non-positive curvature p^T A p = {float(curvature):.3g}; "
                "the matrix is not positive definite (increase damping)"
            )
        alpha = rs_old / curvature
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = r @ r
        p = r + (rs_new / rs_old) * p
        rs_old = rs_new
    return x


def fisher_vector_product(
    mean_kl: torch.Tensor, params: Params, damping: float = 0.1
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Return v -> (H + damping I) v, with H the Hessian of ``mean_kl`` w.r.t. ``params``.

    At theta = theta_old the Hessian of KL(pi_old || pi_theta) equals the Fisher information matrix.

    Args:
        mean_kl: scalar mean KL(pi_old || pi_theta) over states, built with a graph to ``params`` and with
            pi_old detached.
        params: the policy parameters (the flattened order defines v's layout).
        damping: lambda >= 0 added to the diagonal; keeps CG stable when F is near-singular.
    Returns:
        A function ``[n] -> [n]`` (n = total number of parameters). It can be called many times.
    """
    params = list(params)
    grads = torch.autograd.grad(mean_kl, params, create_graph=True, allow_unused=True)
    flat_grad = _flat(grads, params)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        hv = torch.autograd.grad(flat_grad @ v, params, retain_graph=True, allow_unused=True)
        return _flat(hv, params).detach() + damping * v

    return fvp


@dataclass
class LineSearchResult:
    """Outcome of :func:`backtracking_line_search`."""

    accepted: bool
    step_fraction: float  # fraction of the full step kept (0.0 when nothing was accepted)
    surrogate: float  # surrogate after the step (the old one if rejected)
    kl: float  # KL after the step (0.0 if rejected: parameters unchanged)
    improvement: float
    backtracks: int


def _set_flat(params: Params, flat: torch.Tensor) -> None:
    """Copy a flat vector into the parameters (in place: optimiser references stay valid)."""
    offset = 0
    for p in params:
        n = p.numel()
        p.copy_(flat[offset : offset + n].view_as(p))
        offset += n


def backtracking_line_search(
    params: Params,
    full_step: torch.Tensor,
    evaluate: Callable[[], tuple[float, float]],
    max_kl: float,
    old_surrogate: float,
    expected_improvement: float | None = None,
    max_backtracks: int = 10,
    shrink: float = 0.5,
    accept_ratio: float = 0.0,
) -> LineSearchResult:
    """Try theta_old + f * full_step for f = 1, shrink, shrink^2, ... and keep the first acceptable one.

    A step is accepted only if KL <= max_kl, the surrogate strictly improves, and (if
    ``expected_improvement`` is given) improvement / (f * expected_improvement) >= accept_ratio.
    If none passes, the parameters are restored exactly.

    Args:
        params: parameters, modified in place.
        full_step: ``[n]`` flattened step.
        evaluate: () -> (surrogate, kl) at the current parameter values (no grad needed).
        max_kl: delta.
        old_surrogate: surrogate at theta_old.
        expected_improvement: g . full_step, the linear model's predicted gain for the full step.
        max_backtracks: number of fractions tried.
        shrink: factor in (0, 1) between fractions.
        accept_ratio: minimum actual/expected improvement ratio.
    """
    params = list(params)
    with torch.no_grad():
        old = torch.nn.utils.parameters_to_vector(params).clone()
        fraction = 1.0
        for i in range(max_backtracks):
            _set_flat(params, old + fraction * full_step)
            surrogate, kl = evaluate()
            improvement = surrogate - old_surrogate
            ok = kl <= max_kl and improvement > 0
            if ok and expected_improvement is not None and expected_improvement > 0:
                ok = improvement / (fraction * expected_improvement) >= accept_ratio
            if ok:
                return LineSearchResult(True, fraction, surrogate, kl, improvement, i)
            fraction *= shrink
        _set_flat(params, old)
    return LineSearchResult(False, 0.0, old_surrogate, 0.0, 0.0, max_backtracks)


def trpo_step(
    params: Params,
    surrogate_fn: Callable[[], torch.Tensor],
    kl_fn: Callable[[], torch.Tensor],
    max_kl: float = 0.01,
    damping: float = 0.1,
    cg_iters: int = 10,
    max_backtracks: int = 10,
    shrink: float = 0.5,
    accept_ratio: float = 0.0,
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """One TRPO update of ``params`` (in place).

    Args:
        params: the policy parameters to update (requires_grad=True).
        surrogate_fn: () -> scalar surrogate to *maximise*, e.g. mean(ratio * A) over real tokens, with
            ratio = exp(log pi - log pi_old) and pi_old, A fixed.
        kl_fn: () -> scalar mean KL(pi_old || pi_theta) over real positions (pi_old fixed).
        max_kl: the trust-region radius delta.
        damping: Fisher damping.
        cg_iters: conjugate-gradient iterations.
        max_backtracks, shrink, accept_ratio: see :func:`backtracking_line_search`.
        all_reduce: for data-parallel TRPO, a function that sums a tensor over processes. Each process's
            ``surrogate_fn`` and ``kl_fn`` then return its share of the global sums (its rows' terms divided
            by the global count); the gradient, every Fisher-vector product and the line search's values
            are summed, so every process takes the step one process would take on the whole batch.
    Returns:
        metrics: surrogate_before, surrogate_after, kl, step_fraction, accepted (0/1), backtracks,
        expected_improvement, grad_norm, step_norm.
    """
    if max_kl <= 0:
        raise ValueError(f"max_kl must be > 0, got {max_kl}")
    reduce = all_reduce or (lambda t: t)
    params = [p for p in params if p.requires_grad]
    surrogate = surrogate_fn()
    grads = torch.autograd.grad(surrogate, params, allow_unused=True)
    g = reduce(_flat(grads, params).detach())
    metrics = {"surrogate_before": float(reduce(surrogate.detach())), "grad_norm": float(g.norm())}
    if not torch.isfinite(g).all():
        raise FloatingPointError("TRPO: the surrogate gradient is not finite")
    if float(g.norm()) == 0.0:
        metrics.update(surrogate_after=metrics["surrogate_before"], kl=0.0, step_fraction=0.0, accepted=0.0,
                       backtracks=0.0, expected_improvement=0.0, step_norm=0.0)
        return metrics
    local_fvp = fisher_vector_product(kl_fn(), params, 0.0)

    def fvp(v: torch.Tensor) -> torch.Tensor:
        return reduce(local_fvp(v)) + damping * v

    x = conjugate_gradient(fvp, g, max_iters=cg_iters)
    xfx = float(x @ fvp(x))
    step = torch.sqrt(torch.tensor(2.0 * max_kl / max(xfx, 1e-12))) * x
    expected = float(g @ step)

    def evaluate() -> tuple[float, float]:
        both = reduce(torch.stack([surrogate_fn().detach(), kl_fn().detach()]).double())
        return float(both[0]), float(both[1])

    result = backtracking_line_search(
        params, step, evaluate, max_kl, metrics["surrogate_before"], expected, max_backtracks, shrink, accept_ratio
    )
    metrics.update(
        surrogate_after=result.surrogate,
        kl=result.kl,
        step_fraction=result.step_fraction,
        accepted=float(result.accepted),
        backtracks=float(result.backtracks),
        expected_improvement=expected,
        step_norm=float(step.norm()) * result.step_fraction,
    )
    return metrics
