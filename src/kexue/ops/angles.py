"""The angle between two random directions in R^n (kexue.fm/archives/7076, used by 7180).

For independent isotropic vectors x, y in R^n, the angle theta = arccos(<x, y> / (|x| |y|)) has density

    p_n(theta) = Gamma(n/2) / (Gamma((n-1)/2) sqrt(pi)) * sin(theta)^(n-2),   theta in [0, pi],

with mean pi/2 and, by Laplace's method, theta ~ N(pi/2, 1/(n-2)) for large n: in high dimension two random
vectors are almost orthogonal. That is the geometric fact behind variance-1/n initialisation (post 7180).

- ``angle_log_density`` / ``angle_variance``: the exact law (variance by adaptive quadrature in float64).
- ``random_angles``: Monte-Carlo samples, the "slow twin" the exact law is checked against.
"""

import math

import torch
from scipy import integrate


def _log_normaliser(n: int) -> float:
    return math.lgamma(n / 2) - math.lgamma((n - 1) / 2) - 0.5 * math.log(math.pi)


def _check_dim(n: int) -> None:
    if not isinstance(n, int) or n < 2:
        raise ValueError(f"n (the dimension) must be an int >= 2, got {n!r}")


def angle_log_density(theta: torch.Tensor, n: int) -> torch.Tensor:
    """log p_n(theta) for theta in [0, pi] (``-inf`` at the end points for n > 2).

    Args:
        theta: angles in radians, any shape.
        n: the dimension, >= 2.

    Returns:
        Tensor of the same shape and dtype as ``theta``.
    """
    _check_dim(n)
    # sin^(n-2) underflows for large n away from pi/2; the log form does not.
    return _log_normaliser(n) + (n - 2) * torch.log(torch.sin(theta))


def angle_variance(n: int) -> float:
    """Var(theta) = integral of (theta - pi/2)^2 p_n(theta) over [0, pi], by quadrature in float64.

    Examples: ``angle_variance(3)`` = pi^2/4 - 2 = 0.467401..., ``angle_variance(2)`` = pi^2/12.
    """
    _check_dim(n)
    c = _log_normaliser(n)

    def integrand(t: float) -> float:
        s = math.sin(t)
        return 0.0 if s <= 0.0 else (t - math.pi / 2) ** 2 * math.exp(c + (n - 2) * math.log(s))

    # The mass concentrates in a window of width ~1/sqrt(n) around pi/2: tell quad where to look.
    width = min(math.pi / 2, 12 / math.sqrt(max(n - 2, 1)))
    value, _ = integrate.quad(integrand, math.pi / 2 - width, math.pi / 2 + width, epsabs=0, epsrel=1e-11,
                              limit=200)
    return value


def laplace_variance(n: int) -> float:
    """Laplace's approximation Var(theta) ~ 1/(n - 2) (n > 2)."""
    if not isinstance(n, int) or n < 3:
        raise ValueError(f"n must be an int >= 3 for the Laplace approximation, got {n!r}")
    return 1.0 / (n - 2)


def random_angles(n: int, pairs: int, *, generator: torch.Generator | None = None, chunk: int = 2**22,
                  dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> torch.Tensor:
    """Angles between ``pairs`` independent pairs of standard Gaussian vectors in R^n.

    Args:
        n: the dimension, >= 2.
        pairs: how many pairs.
        generator: a torch generator on ``device``, for reproducible samples.
        chunk: at most this many numbers are drawn at once (bounds memory for large n * pairs).

    Returns:
        ``[pairs]`` tensor of angles in [0, pi].
    """
    _check_dim(n)
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    rows = max(1, chunk // (2 * n))
    out = []
    for start in range(0, pairs, rows):
        m = min(rows, pairs - start)
        x = torch.randn(2, m, n, generator=generator, dtype=dtype, device=device)
        cos = torch.nn.functional.cosine_similarity(x[0], x[1], dim=-1)
        out.append(torch.arccos(cos.clamp(-1.0, 1.0)))
    return torch.cat(out)
