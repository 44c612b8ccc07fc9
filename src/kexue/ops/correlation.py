"""Standardisation and Pearson correlation of code vectors: the geometry behind O-GAN (kexue.fm/archives/6409).

A vector :math:`z \\in \\mathbb R^{n}` splits "orthogonally" into its mean, its standard deviation and its
standardised direction

.. math::
    \\text{avg}(z) = \\tfrac1n \\textstyle\\sum_i z_i, \\quad
    \\text{std}(z) = \\sqrt{\\tfrac1n \\textstyle\\sum_i (z_i - \\text{avg}\\,z)^2}, \\quad
    \\mathcal N(z) = (z - \\text{avg}\\,z) / \\text{std}(z),

and the Pearson correlation :math:`\\rho(z, \\hat z) = \\cos(\\mathcal N(z), \\mathcal N(\\hat z))` sees only the
direction. Two facts O-GAN builds on, both tested:

- :math:`\\rho(z, a\\hat z + b) = \\rho(z, \\hat z)` for :math:`a > 0`, so :math:`\\nabla_{\\hat z}\\rho` is
  orthogonal to :math:`\\mathbf 1` (the gradient of :math:`\\text{avg}\\,\\hat z`): maximising ρ never pushes on the
  mean, which is left free to serve as the discriminator's score.
- :math:`\\|\\mathcal N(z) - \\mathcal N(\\hat z)\\|^2 = 2n(1 - \\rho)`, exactly, since
  :math:`\\|\\mathcal N(\\cdot)\\|^2 = n`.

Statistics are population ones (divide by n, not n - 1), as in the post and the official code. Every function
works on the last dimension and broadcasts over the others.
"""

import torch


def _check_codes(z: torch.Tensor, name: str) -> None:
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor [..., n], got "
                         f"{type(z).__name__ if not isinstance(z, torch.Tensor) else z.dtype}")
    if z.dim() < 1 or z.shape[-1] < 2:
        raise ValueError(f"{name} must have at least 2 entries in its last dimension (a correlation needs a spread), "
                         f"got shape {tuple(z.shape)}")


def standardize(z: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """:math:`\\mathcal N(z)`: subtract the mean of the last dimension and divide by its population std.

    Args:
        z: ``[..., n]`` codes, n >= 2.
        eps: added to the variance, so a constant vector maps to 0 instead of NaN.

    Returns:
        ``[..., n]`` with mean 0 and mean square 1 along the last dimension (for a non-constant input).
    """
    _check_codes(z, "z")
    centred = z - z.mean(-1, keepdim=True)
    return centred * torch.rsqrt(centred.pow(2).mean(-1, keepdim=True) + eps)


def pearson(z: torch.Tensor, z_hat: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pearson correlation of matching rows, computed as the official code does: the dot product of the
    L2-normalised centred vectors (``l2_normalize(z - mean z) · l2_normalize(ẑ - mean ẑ)``).

    Args:
        z, z_hat: ``[..., n]`` of the same shape, n >= 2.
        eps: floor on each centred norm (Keras' ``l2_normalize`` floors the squared norm at 1e-12 likewise), so a
            constant row gives ρ = 0 rather than NaN.

    Returns:
        ``[...]`` correlations in [-1, 1].
    """
    _check_codes(z, "z")
    _check_codes(z_hat, "z_hat")
    if z.shape != z_hat.shape:
        raise ValueError(f"z and z_hat must have the same shape, got {tuple(z.shape)} and {tuple(z_hat.shape)}")
    a = z - z.mean(-1, keepdim=True)
    b = z_hat - z_hat.mean(-1, keepdim=True)
    a = a / a.norm(dim=-1, keepdim=True).clamp_min(eps)
    b = b / b.norm(dim=-1, keepdim=True).clamp_min(eps)
    return (a * b).sum(-1)


def pearson_reference(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """The textbook formula, covariance over the product of the standard deviations, in float64 (the slow twin of
    :func:`pearson`).

    .. math::
        \\rho = \\frac{\\tfrac1n\\sum_i (z_i - \\text{avg}\\,z)(\\hat z_i - \\text{avg}\\,\\hat z)}
                     {\\text{std}(z)\\,\\text{std}(\\hat z)}

    Args:
        z, z_hat: ``[..., n]`` of the same shape with non-constant rows.

    Returns:
        ``[...]`` float64 correlations.
    """
    z, z_hat = z.double(), z_hat.double()
    n = z.shape[-1]
    mz, mh = z.sum(-1, keepdim=True) / n, z_hat.sum(-1, keepdim=True) / n
    cov = ((z - mz) * (z_hat - mh)).sum(-1) / n
    sz = (((z - mz) ** 2).sum(-1) / n).sqrt()
    sh = (((z_hat - mh) ** 2).sum(-1) / n).sqrt()
    return cov / (sz * sh)
