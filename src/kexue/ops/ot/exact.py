"""Exact discrete optimal transport on top of POT's network simplex (post 6280).

The Wasserstein-p distance between weighted point clouds is the value of a linear programme,

    C(a, b) = min_{P >= 0, P 1 = a, P^T 1 = b} <P, M>,    M_ij = ||x_i - y_j||^p,    W_p = C^(1/p),

solved exactly by ``ot.emd`` (network simplex, the well-kept solver of the field). Gradients do not unroll the
solver: by LP sensitivity (the envelope theorem), dC/dM = P*, dC/da = f* and dC/db = g*, the optimal plan and dual
potentials. :class:`_TransportCost` is the minimal ``autograd.Function`` that returns these stored gradients
times the incoming one; gradients w.r.t. the points then flow through ``M`` by ordinary autograd.

Dual potentials are defined up to f + k, g - k; because the weights live on the simplex (sum a = sum b is fixed),
only gradients orthogonal to constants are meaningful, so f and g are centred (mean zero), as POT does.

The slow twin is :mod:`kexue.ops.ot.lp` (the same LP solved by scipy's HiGHS, primal and dual separately).
"""

import numpy as np
import ot
import torch

from kexue.ops.ot._checks import check_marginals, check_points, uniform_like


def cost_matrix(x: torch.Tensor, y: torch.Tensor, p: float = 1.0) -> torch.Tensor:
    """M_ij = ||x_i - y_j||_2^p, differentiable in ``x`` and ``y``.

    Args:
        x: ``[n, d]`` points; y: ``[m, d]`` points.
        p: exponent, > 0.

    Returns:
        ``[n, m]`` cost matrix, same dtype and device as ``x``.
    """
    check_points(x, y)
    if p <= 0:
        raise ValueError(f"p must be > 0, got {p}")
    if p == 2:
        return (x[:, None, :] - y[None, :, :]).pow(2).sum(-1)
    # The direct (not matrix-product) mode is exact for near points and has a zero subgradient at coincident
    # points, where the Euclidean norm is not differentiable.
    dist = torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
    return dist if p == 1 else dist.pow(p)


def _solve(a64: np.ndarray, b64: np.ndarray, M64: np.ndarray, num_iter_max: int):
    b64 = b64 * (a64.sum() / b64.sum())  # remove float round-off between the masses (checked equal beforehand)
    # Potentials are centred here (mean f = 0), so POT's own centring pass is skipped.
    plan, log = ot.emd(a64, b64, M64, numItermax=num_iter_max, log=True, center_dual=False)
    if log["result_code"] != 1:
        raise RuntimeError(f"exact OT did not converge ({log['warning']}); raise num_iter_max (now {num_iter_max})")
    return plan, log


class _TransportCost(torch.autograd.Function):
    """C(a, b, M) with gradients (f*, g*, P*) from the solver, never by differentiating through it."""

    @staticmethod
    def forward(ctx, a, b, M, num_iter_max):
        plan, log = _solve(*check_marginals(a, b, M), num_iter_max)
        to = dict(dtype=M.dtype, device=M.device)
        ctx.save_for_backward(torch.as_tensor(log["u"], **to), torch.as_tensor(log["v"], **to),
                              torch.as_tensor(plan, **to))
        return torch.as_tensor(log["cost"], **to)

    @staticmethod
    def backward(ctx, grad):
        f, g, plan = ctx.saved_tensors
        return grad * (f - f.mean()), grad * (g - g.mean()), grad * plan, None


def transport_plan(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor, *, num_iter_max: int = 100_000_000,
                   log: bool = False):
    """The optimal plan P* of min <P, M> over couplings of ``a`` and ``b``.

    Args:
        a: ``[n]`` non-negative source weights; b: ``[m]`` target weights with the same total mass.
        M: ``[n, m]`` cost matrix.
        log: also return ``{"cost", "f", "g"}``: an optimal dual pair, shifted so that mean(f) = 0
            (then a.f + b.g = cost).

    Returns:
        ``[n, m]`` plan in the dtype and on the device of ``M`` (and the log dict if asked).
    """
    plan, info = _solve(*check_marginals(a, b, M), num_iter_max)
    to = dict(dtype=M.dtype, device=M.device)
    plan = torch.as_tensor(plan, **to)
    if not log:
        return plan
    f, g = torch.as_tensor(info["u"], **to), torch.as_tensor(info["v"], **to)
    shift = f.mean()  # (f + k, g - k) is optimal for any k
    return plan, {"cost": float(info["cost"]), "f": f - shift, "g": g + shift}


def transport_cost(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor, *, num_iter_max: int = 100_000_000
                   ) -> torch.Tensor:
    """min <P, M> over couplings of ``a`` and ``b``: a scalar tensor, differentiable w.r.t. a, b and M."""
    return _TransportCost.apply(a, b, M, num_iter_max)  # checks inside, on the arrays the solver gets


def wasserstein(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None, b: torch.Tensor | None = None,
                p: float = 1.0, *, num_iter_max: int = 100_000_000) -> torch.Tensor:
    """Exact W_p between the weighted point clouds (x, a) and (y, b).

    Args:
        x: ``[n, d]`` points; y: ``[m, d]`` points.
        a: ``[n]`` weights (default uniform); b: ``[m]`` weights (default uniform); equal total mass.
        p: ground cost ||x - y||^p; the result is the p-th root of the transport cost.

    Returns:
        Scalar tensor (dtype and device of ``x``), differentiable w.r.t. points and weights.

    Example:
        >>> x = torch.tensor([[0.0, 0.0]]); y = torch.tensor([[3.0, 4.0]])
        >>> wasserstein(x, y).item()
        5.0
    """
    M = cost_matrix(x, y, p)
    a = uniform_like(x.shape[0], x) if a is None else a
    b = uniform_like(y.shape[0], x) if b is None else b
    cost = transport_cost(a, b, M, num_iter_max=num_iter_max)
    return cost if p == 1 else cost.clamp_min(0).pow(1.0 / p)


def wasserstein_1d(x: torch.Tensor, y: torch.Tensor, a: torch.Tensor | None = None,
                   b: torch.Tensor | None = None) -> torch.Tensor:
    """The 1-D closed form W_1 = integral of |F_a(t) - F_b(t)| dt, by sorting (no LP).

    Args:
        x: ``[n]`` points; y: ``[m]`` points; a, b: weights (default uniform), equal total mass.

    Returns:
        Scalar tensor, differentiable w.r.t. points and weights.
    """
    check_points(x, y, ndim=1)
    a = uniform_like(x.shape[0], x) if a is None else a
    b = uniform_like(y.shape[0], x) if b is None else b
    check_marginals(a, b, None)
    if a.shape[0] != x.shape[0] or b.shape[0] != y.shape[0]:
        raise ValueError(f"a and b must have one weight per point: got {a.shape[0]} and {b.shape[0]} weights for "
                         f"{x.shape[0]} and {y.shape[0]} points")
    # Signed mass on the merged support; the CDF difference is constant between consecutive support points.
    t = torch.cat([x, y])
    mass = torch.cat([a, -b])
    order = torch.argsort(t.detach())
    t, mass = t[order], mass[order]
    cdf_diff = torch.cumsum(mass, 0)[:-1]
    return (cdf_diff.abs() * (t[1:] - t[:-1])).sum()
