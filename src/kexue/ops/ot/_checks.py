"""Input validation for the transport ops: one place, messages that say what was expected."""

import torch


def check_points(x: torch.Tensor, y: torch.Tensor) -> None:
    """``x``: ``[n, d]``, ``y``: ``[m, d]``, finite, same ``d``."""
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor [num_points, dim], got "
                             f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.shape[0] == 0:
            raise ValueError(f"{name} has no points")
        if not torch.isfinite(t).all():
            raise ValueError(f"{name} contains NaN or Inf")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")


def check_marginals(a: torch.Tensor, b: torch.Tensor, M: torch.Tensor, rtol: float = 1e-6) -> None:
    """``a``: ``[n]``, ``b``: ``[m]``, non-negative, equal total mass; ``M``: ``[n, m]`` finite."""
    if M.dim() != 2:
        raise ValueError(f"M must be a 2-D cost matrix [n, m], got shape {tuple(M.shape)}")
    for name, w, size in (("a", a, M.shape[0]), ("b", b, M.shape[1])):
        if w.dim() != 1 or w.shape[0] != size:
            raise ValueError(f"{name} must have shape [{size}] to match M {tuple(M.shape)}, got {tuple(w.shape)}")
        if not torch.isfinite(w).all():
            raise ValueError(f"{name} contains NaN or Inf")
        if (w < 0).any():
            raise ValueError(f"{name} has negative weights (min {w.min().item():.3g}); weights must be >= 0")
    if not torch.isfinite(M).all():
        raise ValueError("M contains NaN or Inf")
    sa, sb = a.sum().item(), b.sum().item()
    if abs(sa - sb) > rtol * max(abs(sa), abs(sb), 1e-30):
        raise ValueError(f"a and b must have the same total mass, got sum(a) = {sa:.10g} and sum(b) = {sb:.10g}")
    if sa <= 0:
        raise ValueError("a and b have zero total mass")


def uniform_like(n: int, ref: torch.Tensor) -> torch.Tensor:
    return torch.full((n,), 1.0 / n, dtype=ref.dtype, device=ref.device)
