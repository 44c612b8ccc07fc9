"""Input validation for the transport ops: one place, messages that say what was expected."""

import numpy as np
import torch


def check_points(x: torch.Tensor, y: torch.Tensor, ndim: int = 2) -> None:
    """``x``: ``[n, d]``, ``y``: ``[m, d]`` (``ndim=1``: ``[n]`` and ``[m]``), floating point, non-empty, finite,
    same ``d``."""
    shape = "[num_points, dim]" if ndim == 2 else "[num_points]"
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or t.dim() != ndim:
            raise ValueError(f"{name} must be a {ndim}-D tensor {shape}, got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if not t.is_floating_point():  # integer points would also make integer (zero) uniform weights
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype} (use .float() or .double())")
        if t.shape[0] == 0:
            raise ValueError(f"{name} has no points")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or Inf")
    if ndim == 1:
        return
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")


def check_marginals(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor | None, rtol: float = 1e-6
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """``a``: ``[n]``, ``b``: ``[m]``, non-negative, equal total mass; ``M``: ``[n, m]`` finite (None: no cost).

    The checks run on float64 NumPy copies (views for float64 CPU tensors), which the solvers need anyway: a
    handful of small NumPy reductions cost far less than as many torch calls next to a millisecond solve.

    Returns:
        ``a``, ``b`` and ``M`` as float64 NumPy arrays.
    """
    if not all(isinstance(t, torch.Tensor) for t in (a, b)) or not (M is None or isinstance(M, torch.Tensor)):
        raise ValueError("a, b and M must be torch tensors")
    if M is not None and M.dim() != 2:
        raise ValueError(f"M must be a 2-D cost matrix [n, m], got shape {tuple(M.shape)}")
    if M is not None:
        sizes = M.shape[0], M.shape[1]
    else:  # no cost matrix: any lengths (the caller checks them against its points)
        sizes = a.shape[0] if a.dim() else -1, b.shape[0] if b.dim() else -1
    out = []
    for name, w, size in (("a", a, sizes[0]), ("b", b, sizes[1])):
        if w.dim() != 1 or w.shape[0] != size:
            shape = f" to match M {tuple(M.shape)}" if M is not None else ""
            raise ValueError(f"{name} must have shape [{size}]{shape}, got {tuple(w.shape)}")
        w64 = _numpy64(w)
        if not np.isfinite(w64).all():
            raise ValueError(f"{name} contains NaN or Inf")
        if (w64 < 0).any():
            raise ValueError(f"{name} has negative weights (min {w64.min():.3g}); weights must be >= 0")
        out.append(w64)
    M64 = None
    if M is not None:
        M64 = np.ascontiguousarray(_numpy64(M))
        if not np.isfinite(M64).all():
            raise ValueError("M contains NaN or Inf")
    sa, sb = float(out[0].sum()), float(out[1].sum())
    if abs(sa - sb) > rtol * max(abs(sa), abs(sb), 1e-30):
        raise ValueError(f"a and b must have the same total mass, got sum(a) = {sa:.10g} and sum(b) = {sb:.10g}")
    if sa <= 0:
        raise ValueError("a and b have zero total mass")
    return out[0], out[1], M64


def _numpy64(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t if t.dtype == torch.float64 else t.double()).numpy()  # a view for float64 CPU tensors


def uniform_like(n: int, ref: torch.Tensor) -> torch.Tensor:
    return torch.full((n,), 1.0 / n, dtype=ref.dtype, device=ref.device)
