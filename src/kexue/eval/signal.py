"""Signal propagation at initialisation: per-layer second moments and input-output Jacobian spectra (post 5).

Post 7180 (https://kexue.fm/archives/7180) argues that variance-1/n weights keep a signal's norm from blowing up or
vanishing through a deep stack, because such a matrix is close to orthogonal *for a fixed vector*. Two diagnostics
check that on any model, for a batch of inputs:

- ``activation_second_moments``: E[h^2] after every chosen layer, recorded by forward hooks in call order. Flat
  log-RMS curves mean the forward signal is preserved (the depth analogue of mup's width "coord check").
- ``jacobian_singular_values``: the singular values of d f(x) / d x per input. The forward second moment only sees
  their mean square; their *spread* decides whether gradients of every direction survive (dynamical isometry,
  Saxe et al. 2014, Pennington et al. 2017). Here is the caveat the post leaves out: an n x n Gaussian matrix with
  variance 1/n has singular values spread over [0, 2] (the quarter-circle law, ``quarter_circle_density``), so a
  product of 50 of them is far from an isometry, while an exactly orthogonal stack is one.

``jacobian_singular_values`` (vmapped ``torch.func.jacrev``) has a per-sample ``torch.autograd.functional.jacobian``
twin, ``jacobian_singular_values_reference``.
"""

import fnmatch
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "SignalTrace",
    "activation_second_moments",
    "input_output_jacobian",
    "jacobian_singular_values",
    "jacobian_singular_values_reference",
    "log_spread",
    "quarter_circle_density",
]


# --------------------------------------------------------------------------------------------------------------
# Forward second moments
# --------------------------------------------------------------------------------------------------------------

@dataclass
class SignalTrace:
    """Second moments of a forward pass, input first.

    Attributes:
        names: ``"input"`` then the qualified name of each recorded module, in call order.
        second_moments: ``[len(names)]`` float64, E[h^2] over the batch and every feature of each output.
    """

    names: list[str]
    second_moments: torch.Tensor

    def log_rms(self) -> torch.Tensor:
        """``[len(names)]`` natural log of the RMS, 0.5 * log E[h^2] (``-inf`` for an all-zero output)."""
        return 0.5 * torch.log(self.second_moments)

    def drift(self, reference: int = 0) -> torch.Tensor:
        """``[len(names)]`` log-RMS relative to entry ``reference`` (0: the input); flat means preserved.

        A reference after the first layer discounts the one-off change of scale from the raw input to the first
        activation (E[tanh(z)^2] = 0.394 of the pre-activation's, for example), so that only the drift remains.
        """
        if not -len(self.names) <= reference < len(self.names):
            raise IndexError(f"reference must index one of the {len(self.names)} entries, got {reference}")
        log_rms = self.log_rms()
        return log_rms - log_rms[reference]


def _leaf_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if name and not any(True for _ in m.children())]


@torch.no_grad()
def activation_second_moments(model: nn.Module, x: torch.Tensor,
                              modules: Iterable[str] | None = None) -> SignalTrace:
    """E[h^2] of the input and of the output of every chosen module of ``model`` for the batch ``x``.

    Args:
        model: any module; it is called once as ``model(x)``.
        x: ``[B, ...]`` the batch of inputs.
        modules: glob patterns of qualified module names (``named_modules()``) to record, e.g. ``["*.act"]``;
            default: every leaf module. A module called several times is recorded each time.

    Returns:
        A :class:`SignalTrace`; second moments are computed in float64.

    Raises:
        ValueError: a pattern matches no module, or no chosen module was called.
    """
    names = [n for n, _ in model.named_modules() if n]
    if modules is None:
        chosen = set(_leaf_names(model))
    else:
        patterns = [modules] if isinstance(modules, str) else list(modules)
        chosen = set()
        for p in patterns:
            hit = {n for n in names if fnmatch.fnmatchcase(n, p)}
            if not hit:
                raise ValueError(f"modules pattern {p!r} matches no submodule; names are: {', '.join(names)}")
            chosen |= hit
    record_names, record_values = ["input"], [x.double().pow(2).mean()]

    def hook(name: str):
        def fn(_module: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
            if isinstance(out, torch.Tensor):
                record_names.append(name)
                record_values.append(out.double().pow(2).mean())
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n in chosen]
    try:
        model(x)
    finally:
        for h in handles:
            h.remove()
    if len(record_names) == 1:
        raise ValueError("none of the chosen modules was called by model(x) (or none returned a tensor)")
    return SignalTrace(record_names, torch.stack(record_values).cpu())


# --------------------------------------------------------------------------------------------------------------
# Input-output Jacobian
# --------------------------------------------------------------------------------------------------------------

def _per_sample(model: nn.Module):
    def f(xi: torch.Tensor) -> torch.Tensor:
        return model(xi.unsqueeze(0)).reshape(-1)
    return f


def input_output_jacobian(model: nn.Module, x: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """Per-sample Jacobians d model(x_b) / d x_b, with ``torch.func.jacrev`` vmapped over the batch.

    The model must treat samples independently (no batch norm in training mode) and be ``torch.func``-friendly.

    Args:
        x: ``[B, *in_shape]``.
        chunk_size: rows of the Jacobian computed at once (bounds memory; None = all).

    Returns:
        ``[B, out_numel, in_numel]`` in ``x``'s dtype.
    """
    if x.dim() < 2:
        raise ValueError(f"x must be a batch [B, ...], got shape {tuple(x.shape)}")
    jac = torch.func.vmap(torch.func.jacrev(_per_sample(model), chunk_size=chunk_size))(x)
    return jac.reshape(x.shape[0], -1, x[0].numel())


def jacobian_singular_values(model: nn.Module, x: torch.Tensor, *, chunk_size: int | None = None) -> torch.Tensor:
    """Singular values of each sample's input-output Jacobian, descending, computed in float64.

    Args:
        x: ``[B, *in_shape]``.

    Returns:
        ``[B, min(out_numel, in_numel)]`` float64 on the CPU.
    """
    jac = input_output_jacobian(model, x, chunk_size=chunk_size)
    return torch.linalg.svdvals(jac.detach().double().cpu())


def jacobian_singular_values_reference(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Slow twin of ``jacobian_singular_values``: one ``torch.autograd.functional.jacobian`` per sample."""
    out = []
    for xi in x:
        jac = torch.autograd.functional.jacobian(_per_sample(model), xi)
        out.append(torch.linalg.svdvals(jac.reshape(jac.shape[0], -1).double().cpu()))
    return torch.stack(out)


# --------------------------------------------------------------------------------------------------------------
# Reference laws and summaries
# --------------------------------------------------------------------------------------------------------------

def quarter_circle_density(s: torch.Tensor) -> torch.Tensor:
    """Limit density of the singular values of an n x n matrix with i.i.d. entries of variance 1/n (n -> inf).

    p(s) = sqrt(4 - s^2) / pi on [0, 2], zero outside; its mean square is 1 (tr W^T W / n = 1).
    """
    inside = (s >= 0) & (s <= 2)
    return torch.where(inside, torch.sqrt((4 - s * s).clamp_min(0)) / math.pi, torch.zeros_like(s))


def log_spread(s: torch.Tensor, q: float = 0.1) -> float:
    """Decades between the (1 - q) and q quantiles of singular values ``s``: 0 for an isometry.

    Quantiles rather than max/min, because exact zeros (dead ReLUs, rank deficiency) make max/min infinite.
    """
    if not 0 < q < 0.5:
        raise ValueError(f"q must be in (0, 0.5), got {q}")
    s = s.double().flatten()
    lo, hi = torch.quantile(s, q), torch.quantile(s, 1 - q)
    if lo <= 0:
        return math.inf
    return float(torch.log10(hi / lo))
