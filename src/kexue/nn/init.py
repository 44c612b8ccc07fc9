"""Initialisation from geometry: named schemes, calibrated gains and the truncated-normal correction (post 5).

Su Jianlin, "A geometric view of parameter initialisation", https://kexue.fm/archives/7180, with the follow-ups
https://kexue.fm/archives/8620 (second-moment view, constants) and https://kexue.fm/archives/8725 (averaging the
two dimensions of a non-square matrix).

In high dimension, a matrix with i.i.d. zero-mean entries of variance 1/n is close to orthogonal, so it nearly
preserves the norm of a *fixed* vector. Every scheme here is that statement with a different choice of n:

====================  ===========================================  ================================================
scheme                variance of an entry (before the gain)       what it preserves
====================  ===========================================  ================================================
``lecun``             1 / fan_in                                   per-coordinate second moment, forward (8620)
``su_fan_out``        1 / fan_out                                  whole-vector norm, W^T W ~ I (7180, Corollary 4)
``xavier``            2 / (fan_in + fan_out)                       arithmetic mean of the two (Glorot)
``geometric_mean``    1 / sqrt(fan_in * fan_out)                   x W1 W2 end to end, shared variance (8725)
``quadratic``         (fan_in + fan_out) / (fan_in^2 + fan_out^2)  least squares over both (8725)
``he``                2 / fan_in                                   ``lecun`` for ReLU (gain sqrt 2 built in)
``orthogonal``        exact: W^T W = I (or W W^T = I)              every vector's norm, not just a fixed one
``delta_orthogonal``  conv: orthogonal centre tap, zeros           an exact isometry of a convolution
====================  ===========================================  ================================================

Notable choices (and where they differ from ``torch.nn.init``):

- The fan convention is explicit: a ``Linear`` weight is ``(out, in)``; a convolution weight
  ``(out, in / groups, *kernel)`` has fan_in = in/groups * kernel area and fan_out = out/groups * kernel area (the
  number of outputs one input reaches). torch uses ``out * kernel`` for fan_out even with groups.
- ``gain`` may be a number or an activation: a name (``"relu"``, ``"tanh"``, ``"sigmoid"``, ...) or a callable. An
  activation's gain is *calibrated*: 1 / sqrt(E[f(z)^2]) for z ~ N(0, 1), computed by quadrature (so ReLU gets
  sqrt 2 and sigmoid 1 / sqrt(0.2933790)), not read from a table. torch's ``calculate_gain("tanh")`` is 5/3; the
  calibrated tanh gain is 1.5925; Su argues for about 1 (tanh x ~ x near 0). Pass a number to choose.
- ``distribution="truncated_normal"`` cuts at ``bound`` standard deviations (not at absolute values, the
  ``torch.nn.init.trunc_normal_`` pitfall) and rescales so that the variance after truncation is the scheme's:
  at +-2 sigma the variance of a cut standard normal is gamma = 0.7737413, so the std is multiplied by
  1 / sqrt(gamma) = 1.1368472 (8620).
- Biases are set to zero. Zero-initialising residual output projections (ReZero / SkipInit / Fixup style) is an
  explicit option, ``zero=("blocks.*.out",)``, never a hidden default.
- Everything is in place and takes a ``generator``, so it works after ``model.to_empty(device=...)`` on a model
  built on the ``meta`` device, and is reproducible.
"""

import fnmatch
import math
from collections.abc import Callable, Iterable
from functools import lru_cache

import numpy as np
import torch
from torch import nn

__all__ = [
    "ACTIVATIONS",
    "DISTRIBUTIONS",
    "SCHEMES",
    "TRUNC_CORRECTION",
    "TRUNC_GAMMA",
    "Calibrated",
    "calibrated_gain",
    "fans",
    "init_",
    "init_weight_",
    "resolve_gain",
    "scheme_variance",
    "second_moment",
    "truncated_normal_",
    "truncated_normal_variance",
    "truncated_normal_variance_quadrature",
]

# Variance of an entry as a function of (fan_in, fan_out), before the gain. Orthogonal schemes have none.
_VARIANCE: dict[str, Callable[[int, int], float]] = {
    "lecun": lambda fi, fo: 1.0 / fi,
    "su_fan_out": lambda fi, fo: 1.0 / fo,
    "xavier": lambda fi, fo: 2.0 / (fi + fo),
    "geometric_mean": lambda fi, fo: 1.0 / math.sqrt(fi * fo),
    "quadratic": lambda fi, fo: (fi + fo) / (fi * fi + fo * fo),
    "he": lambda fi, fo: 2.0 / fi,
}
SCHEMES = (*_VARIANCE, "orthogonal", "delta_orthogonal")
DISTRIBUTIONS = ("normal", "uniform", "truncated_normal")

# Activations by name. Their gains are computed from the functions (``calibrated_gain``), not read from a table.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "linear": lambda x: x,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "gelu": nn.functional.gelu,
    "silu": nn.functional.silu,
    "elu": nn.functional.elu,
    "selu": nn.functional.selu,
    "softplus": nn.functional.softplus,
}


# --------------------------------------------------------------------------------------------------------------
# Fans and variances
# --------------------------------------------------------------------------------------------------------------

def fans(weight: torch.Tensor, groups: int = 1) -> tuple[int, int]:
    """(fan_in, fan_out) of a ``Linear`` ``(out, in)`` or convolution ``(out, in / groups, *kernel)`` weight.

    Args:
        weight: the weight tensor, at least 2-D.
        groups: the convolution's ``groups`` (each input channel reaches ``out / groups`` output channels).

    Raises:
        ValueError: ``weight`` has fewer than 2 dimensions (a bias or a norm's scale has no fan_in and fan_out).
    """
    if weight.dim() < 2:
        raise ValueError(f"weight must have at least 2 dimensions (out, in, *kernel) to have a fan_in and fan_out, "
                         f"got shape {tuple(weight.shape)}; biases and norm scales are not initialised by a scheme")
    if groups < 1 or weight.shape[0] % groups:
        raise ValueError(f"groups must be a positive divisor of the {weight.shape[0]} output channels, got {groups}")
    area = math.prod(weight.shape[2:])
    return weight.shape[1] * area, weight.shape[0] // groups * area


def scheme_variance(scheme: str, fan_in: int, fan_out: int) -> float:
    """The variance of one entry under ``scheme``, before the gain (see the module table).

    Raises:
        ValueError: unknown scheme, an orthogonal scheme (it has no per-entry variance), or a fan < 1.
    """
    _check_scheme(scheme)
    if scheme not in _VARIANCE:
        raise ValueError(f"scheme {scheme!r} is exact, not a per-entry variance; use init_weight_ to apply it")
    if fan_in < 1 or fan_out < 1:
        raise ValueError(f"fan_in and fan_out must be >= 1, got {fan_in} and {fan_out}")
    return _VARIANCE[scheme](fan_in, fan_out)


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of: {', '.join(SCHEMES)}")


# --------------------------------------------------------------------------------------------------------------
# Truncated normal with the variance correction (8620)
# --------------------------------------------------------------------------------------------------------------

def truncated_normal_variance(bound: float = 2.0) -> float:
    """Variance of a standard normal cut to [-bound, bound], in closed form.

    gamma(b) = int_{-b}^{b} x^2 phi(x) dx / int_{-b}^{b} phi(x) dx = 1 - 2 b phi(b) / (2 Phi(b) - 1)
    (integrate x * x phi(x) by parts). gamma(2) = 0.7737413; ``truncated_normal_variance_quadrature`` is the twin.
    """
    if not bound > 0:
        raise ValueError(f"bound (in standard deviations) must be > 0, got {bound}")
    phi = math.exp(-0.5 * bound * bound) / math.sqrt(2 * math.pi)
    mass = math.erf(bound / math.sqrt(2))  # 2 Phi(b) - 1
    return 1.0 - 2.0 * bound * phi / mass


def truncated_normal_variance_quadrature(bound: float = 2.0) -> float:
    """The same gamma as the ratio of the two integrals in 8620, by adaptive quadrature (the reference twin)."""
    from scipy import integrate

    num, _ = integrate.quad(lambda x: x * x * math.exp(-0.5 * x * x), -bound, bound, epsabs=0, epsrel=1e-13)
    den, _ = integrate.quad(lambda x: math.exp(-0.5 * x * x), -bound, bound, epsabs=0, epsrel=1e-13)
    return num / den


TRUNC_GAMMA = truncated_normal_variance(2.0)  # 0.7737413...: variance left after cutting N(0, 1) at +-2
TRUNC_CORRECTION = 1.0 / math.sqrt(TRUNC_GAMMA)  # 1.1368472...: multiply the std by this to undo the cut


@torch.no_grad()
def truncated_normal_(tensor: torch.Tensor, std: float = 1.0, bound: float = 2.0, *,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Fill ``tensor`` with a zero-mean normal cut at ``bound`` *standard deviations* whose variance is ``std**2``.

    Samples a standard normal cut at [-bound, bound] (torch's inverse-CDF sampler at std 1, where its absolute
    bounds coincide with bounds in std units and small stds cannot lose precision), then scales by
    ``std / sqrt(gamma(bound))`` so that the variance *after* truncation is ``std**2``.

    Args:
        tensor: filled in place, any shape.
        std: the standard deviation the entries should have after truncation.
        bound: truncation point in units of the untruncated standard deviation (TensorFlow's 2).

    Returns:
        ``tensor``. Its entries lie in ``std / sqrt(gamma) * [-bound, bound]``.
    """
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std}")
    nn.init.trunc_normal_(tensor, 0.0, 1.0, -bound, bound, generator=generator)
    return tensor.mul_(std / math.sqrt(truncated_normal_variance(bound)))


# --------------------------------------------------------------------------------------------------------------
# Calibrated gains: 1 / sqrt(E[f(z)^2]), z ~ N(0, 1)
# --------------------------------------------------------------------------------------------------------------

# Gauss-Legendre nodes on [-L, 0] and [0, L]: splitting at 0 makes the rule exact up to rounding for activations
# whose only kink is at 0 (ReLU, ELU), and the Gaussian tail beyond L = 12 weighs less than 1e-32.
_HALF_WIDTH, _NODES = 12.0, 256


@lru_cache(maxsize=1)
def _quadrature_rule() -> tuple[torch.Tensor, torch.Tensor]:
    x, w = np.polynomial.legendre.leggauss(_NODES)
    half = _HALF_WIDTH / 2
    nodes = np.concatenate([half * (x - 1), half * (x + 1)])  # [-L, 0] then [0, L]
    weights = np.concatenate([half * w, half * w]) * np.exp(-0.5 * nodes**2) / math.sqrt(2 * math.pi)
    return torch.from_numpy(nodes), torch.from_numpy(weights)


def second_moment(fn: Callable[[torch.Tensor], torch.Tensor], std: float = 1.0) -> float:
    """E[f(z)^2] for z ~ N(0, std^2), by Gauss-Legendre quadrature in float64 (fast, deterministic).

    Examples: ReLU 1/2, sigmoid 0.2933790 (8620), identity ``std**2``. The Monte-Carlo estimate in the tests is the
    slow twin.

    Args:
        fn: an elementwise function of a float64 tensor.
        std: the standard deviation of the pre-activation.
    """
    if not std > 0:
        raise ValueError(f"std must be > 0, got {std}")
    nodes, weights = _quadrature_rule()
    values = fn(nodes * std)
    if not isinstance(values, torch.Tensor) or values.shape != nodes.shape:
        raise ValueError("fn must map a 1-D float64 tensor elementwise to a tensor of the same shape")
    return float((weights * values.double() ** 2).sum())


@lru_cache(maxsize=64)
def _named_gain(name: str) -> float:
    return 1.0 / math.sqrt(second_moment(ACTIVATIONS[name]))


def calibrated_gain(activation: str | Callable[[torch.Tensor], torch.Tensor]) -> float:
    """1 / sqrt(E[f(z)^2]), z ~ N(0, 1): the gain that maps a unit second moment to a unit second moment.

    With this gain, a layer ``f(W x)`` whose ``W`` has variance ``gain^2 / fan_in`` keeps ``E[h^2] = 1``
    (8620's "calibrated activation" f(x) / sqrt(E f(z)^2), moved into the weights). For ReLU it is sqrt 2 (He); for
    sigmoid 1 / sqrt(0.2933790). For a positively homogeneous f (ReLU, linear) it is exact at every scale; for
    tanh or sigmoid it calibrates the scale 1 only.

    Args:
        activation: a name from ``ACTIVATIONS`` or an elementwise callable.
    """
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of: {', '.join(ACTIVATIONS)} "
                             f"(or pass a callable, or a number as the gain)")
        return _named_gain(activation)
    if not callable(activation):
        raise TypeError(f"activation must be a name or a callable, got {type(activation).__name__}")
    return 1.0 / math.sqrt(second_moment(activation))


def resolve_gain(gain: float | str | Callable[[torch.Tensor], torch.Tensor]) -> float:
    """A number stays as it is (must be > 0); an activation name or callable becomes its ``calibrated_gain``."""
    if isinstance(gain, bool):
        raise TypeError("gain must be a number, an activation name or a callable, got a bool")
    if isinstance(gain, int | float):
        if not (gain > 0 and math.isfinite(gain)):
            raise ValueError(f"gain must be a finite number > 0, got {gain}")
        return float(gain)
    return calibrated_gain(gain)


class Calibrated(nn.Module):
    """f(x) / sqrt(E[f(z)^2]): an activation rescaled so that a standard normal input gives unit second moment."""

    def __init__(self, activation: str | Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = ACTIVATIONS[activation] if isinstance(activation, str) and activation in ACTIVATIONS else activation
        self.name = activation if isinstance(activation, str) else getattr(activation, "__name__", "fn")
        self.scale = calibrated_gain(activation)  # validates the name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x) * self.scale

    def extra_repr(self) -> str:
        return f"{self.name}, scale={self.scale:.7g}"


# --------------------------------------------------------------------------------------------------------------
# Applying a scheme
# --------------------------------------------------------------------------------------------------------------

@torch.no_grad()
def init_weight_(weight: torch.Tensor, scheme: str, gain: float | str | Callable = 1.0, *,
                 distribution: str = "normal", bound: float = 2.0, groups: int = 1,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Initialise one weight tensor in place under ``scheme``.

    Args:
        weight: ``(out, in)`` or ``(out, in / groups, *kernel)``.
        scheme: one of ``SCHEMES``.
        gain: a number, or an activation (name or callable) whose calibrated gain multiplies the std.
        distribution: ``"normal"``, ``"uniform"`` (U[-sqrt 3 sigma, sqrt 3 sigma]) or ``"truncated_normal"`` (cut at
            ``bound`` standard deviations, variance corrected); ignored by the orthogonal schemes.
        bound: truncation point in standard deviations.
        groups: the convolution's groups (for fan_out).
        generator: for reproducible draws.

    Returns:
        ``weight``. For variance schemes its entries have variance ``gain**2 * scheme_variance(...)``; for
        ``orthogonal`` the flattened ``(out, in * kernel)`` matrix has orthonormal rows or columns times ``gain``;
        ``delta_orthogonal`` does that to the kernel's centre tap and zeroes the rest.
    """
    _check_scheme(scheme)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; expected one of: {', '.join(DISTRIBUTIONS)}")
    if not weight.is_floating_point():
        raise ValueError(f"weight must be a floating-point tensor, got {weight.dtype}")
    if weight.numel() == 0:  # a zero fan has no variance to match (and orthogonality means nothing)
        raise ValueError(f"weight has no entries (shape {tuple(weight.shape)}); every size must be >= 1")
    fan_in, fan_out = fans(weight, groups)
    g = resolve_gain(gain)
    if scheme == "orthogonal":
        return nn.init.orthogonal_(weight, gain=g, generator=generator)
    if scheme == "delta_orthogonal":
        if weight.dim() == 2:
            return nn.init.orthogonal_(weight, gain=g, generator=generator)
        if any(k % 2 == 0 for k in weight.shape[2:]):
            raise ValueError(f"delta_orthogonal needs odd kernel sizes (a centre tap), got {tuple(weight.shape[2:])}")
        if groups != 1:
            raise ValueError(f"delta_orthogonal needs groups=1 (one orthogonal map across all channels), got {groups}")
        # Only the centre tap is non-zero, so the convolution is the 1x1 map by an orthogonal matrix at every
        # position: an exact isometry with 'same' padding (Xiao et al. 2018).
        weight.zero_()
        centre = (slice(None), slice(None), *(k // 2 for k in weight.shape[2:]))
        weight[centre] = nn.init.orthogonal_(torch.empty(weight.shape[:2], dtype=weight.dtype, device=weight.device),
                                             gain=g, generator=generator)
        return weight
    std = g * math.sqrt(_VARIANCE[scheme](fan_in, fan_out))
    if distribution == "normal":
        return weight.normal_(0.0, std, generator=generator)
    if distribution == "uniform":
        a = math.sqrt(3.0) * std  # U[-a, a] has variance a^2 / 3
        return weight.uniform_(-a, a, generator=generator)
    return truncated_normal_(weight, std, bound, generator=generator)


_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@torch.no_grad()
def init_(module: nn.Module, scheme: str, gain: float | str | Callable = 1.0, *, distribution: str = "normal",
          bound: float = 2.0, zero: Iterable[str] = (), generator: torch.Generator | None = None) -> nn.Module:
    """Initialise every ``Linear`` and ``Conv{1,2,3}d`` weight of ``module`` under ``scheme``; zero their biases.

    Other parameters (norm scales, embeddings, transposed convolutions) are left as they are: their fan
    convention differs, so they are a model's own ``init_weights()`` business.

    Args:
        module: a layer or a whole model (the module itself counts if it is a ``Linear`` or ``Conv``).
        scheme: one of ``SCHEMES`` (see the module docstring for each variance).
        gain: a number, or an activation name / callable whose calibrated gain is used (``"relu"`` -> sqrt 2).
        distribution: ``"normal"``, ``"uniform"`` or ``"truncated_normal"`` (see ``init_weight_``).
        bound: truncation point in standard deviations, for ``"truncated_normal"``.
        zero: glob patterns of qualified module names (as in ``named_modules()``, e.g. ``"blocks.*.proj_out"``)
            whose weights and biases are set to zero instead: the residual-branch output projections of
            ReZero / SkipInit / Fixup, so that every residual block starts as the identity. Each pattern must match
            at least one ``Linear`` or ``Conv``.
        generator: for reproducible draws.

    Returns:
        ``module``.

    Raises:
        ValueError: unknown scheme or distribution, a module with no ``Linear`` / ``Conv`` weight, or a ``zero``
            pattern that matches none.
    """
    _check_scheme(scheme)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"unknown distribution {distribution!r}; expected one of: {', '.join(DISTRIBUTIONS)}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    patterns = [zero] if isinstance(zero, str) else list(zero)
    layers = [(name, m) for name, m in module.named_modules() if isinstance(m, _WEIGHTED)]
    if not layers:
        raise ValueError(f"module ({type(module).__name__}) has no Linear or Conv1d/2d/3d weight to initialise")
    unmatched = [p for p in patterns if not any(fnmatch.fnmatchcase(name, p) for name, _ in layers)]
    if unmatched:
        raise ValueError(f"zero pattern(s) {unmatched} match no Linear/Conv module; names are: "
                         f"{', '.join(name or '<root>' for name, _ in layers)}")
    for name, m in layers:
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            m.weight.zero_()
        else:
            init_weight_(m.weight, scheme, gain, distribution=distribution, bound=bound,
                         groups=getattr(m, "groups", 1), generator=generator)
        if m.bias is not None:
            m.bias.zero_()
    return module
