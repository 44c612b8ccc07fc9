"""The transport LP of post 6280 written out and solved by scipy's HiGHS: the slow twin of :mod:`exact`.

For small problems this makes the post's derivation executable:

- ``lp_primal``: min <Gamma, C> s.t. A Gamma = (a; b), Gamma >= 0, with A = [I_n (x) 1_m^T ; 1_n^T (x) I_m]
  (row sums give a, column sums give b; row-major flattening as in the post).
- ``lp_dual``: max a.f + b.g s.t. f_i + g_j <= C_ij, solved as its own LP (not read off the primal's multipliers),
  so that strong duality is checked, not assumed.
- ``kantorovich_rubinstein_lp``: the single-potential dual max (a - b).f s.t. f_i - f_j <= C_ij on a common support.
  When C is a metric it equals the primal (one may take g = -f); for a non-metric cost such as |x - y|^2 it can be
  strictly lower (the post's caveat).
- ``lp_duality``: both solved, with the duality gap and the complementary-slackness residual.

Sizes: the primal has n*m variables; use these for n, m up to a few hundred (POT is the engine beyond that).
"""

from dataclasses import dataclass

import numpy as np
import torch
from scipy import optimize, sparse

from kexue.ops.ot._checks import check_marginals


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def _constraints(n: int, m: int) -> sparse.csr_matrix:
    """A = [I_n (x) 1_m^T ; 1_n^T (x) I_m], shape [n + m, n * m]."""
    return sparse.vstack([sparse.kron(sparse.eye(n), np.ones((1, m))),
                          sparse.kron(np.ones((1, n)), sparse.eye(m))]).tocsr()


def _check_solved(res, what: str) -> None:
    if res.status != 0:
        raise RuntimeError(f"HiGHS could not solve the {what}: {res.message}")


@dataclass
class PrimalSolution:
    value: float
    plan: torch.Tensor  # [n, m]


@dataclass
class DualSolution:
    value: float
    f: torch.Tensor  # [n]
    g: torch.Tensor  # [m]


def lp_primal(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor) -> PrimalSolution:
    """Solve min <Gamma, M> over couplings of ``a`` ``[n]`` and ``b`` ``[m]`` with HiGHS; plan ``[n, m]``."""
    check_marginals(a, b, M)
    n, m = M.shape
    res = optimize.linprog(_np(M).ravel(), A_eq=_constraints(n, m), b_eq=np.concatenate([_np(a), _np(b)]),
                           bounds=(0, None), method="highs")
    _check_solved(res, "primal transport LP")
    plan = torch.as_tensor(res.x.reshape(n, m), dtype=M.dtype, device=M.device)
    return PrimalSolution(float(res.fun), plan)


def lp_dual(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor) -> DualSolution:
    """Solve max a.f + b.g s.t. f_i + g_j <= M_ij with HiGHS; potentials centred so that mean(f) = 0."""
    check_marginals(a, b, M)
    n, m = M.shape
    # linprog minimises: negate the objective. The constraint matrix of the dual is A^T.
    res = optimize.linprog(-np.concatenate([_np(a), _np(b)]), A_ub=_constraints(n, m).T, b_ub=_np(M).ravel(),
                           bounds=(None, None), method="highs")
    _check_solved(res, "dual transport LP")
    f, g = res.x[:n], res.x[n:]
    shift = f.mean()  # (f + k, g - k) is optimal too; fix k for a reproducible answer
    to = dict(dtype=M.dtype, device=M.device)
    return DualSolution(float(-res.fun), torch.as_tensor(f - shift, **to), torch.as_tensor(g + shift, **to))


def kantorovich_rubinstein_lp(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor) -> DualSolution:
    """The single-potential dual: max (a - b).f s.t. f_i - f_j <= M_ij, on a common support of n points.

    Args:
        a, b: ``[n]`` weights on the same n points; M: ``[n, n]`` cost between those points (zero diagonal).

    Returns:
        The value and f (with g = -f).
    """
    check_marginals(a, b, M)
    n = M.shape[0]
    if M.shape != (n, n):
        raise ValueError(f"the single-potential dual needs a square cost on a common support, got {tuple(M.shape)}")
    if (M.diagonal().abs() > 0).any():
        raise ValueError("M must have a zero diagonal (cost of not moving)")
    rows = [(i, j) for i in range(n) for j in range(n) if i != j]
    A = sparse.lil_matrix((len(rows), n))
    for r, (i, j) in enumerate(rows):
        A[r, i], A[r, j] = 1.0, -1.0
    Mn = _np(M)
    res = optimize.linprog(-(_np(a) - _np(b)), A_ub=A.tocsr(), b_ub=np.array([Mn[i, j] for i, j in rows]),
                           bounds=(None, None), method="highs")
    _check_solved(res, "Kantorovich-Rubinstein LP")
    f = res.x - res.x.mean()
    to = dict(dtype=M.dtype, device=M.device)
    return DualSolution(float(-res.fun), torch.as_tensor(f, **to), torch.as_tensor(-f, **to))


@dataclass
class Duality:
    primal: PrimalSolution
    dual: DualSolution
    gap: float  # primal - dual, >= 0 by weak duality, 0 by strong duality
    max_violation: float  # max(f_i + g_j - M_ij, 0): dual feasibility
    max_slackness: float  # max |f_i + g_j - M_ij| where the plan moves mass: complementary slackness


def lp_duality(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor, mass_tol: float = 1e-9) -> Duality:
    """Solve the primal and the dual independently and report the gap and the slackness residuals."""
    primal, dual = lp_primal(a, b, M), lp_dual(a, b, M)
    reduced = dual.f[:, None] + dual.g[None, :] - M  # <= 0 everywhere; = 0 where plan > 0
    moved = primal.plan > mass_tol
    return Duality(primal, dual, primal.value - dual.value, reduced.clamp_min(0).max().item(),
                   reduced[moved].abs().max().item() if moved.any() else 0.0)
