"""Synthetic data generated in code with a seed: 2-D toy mixtures and StackedMNIST.

Conventions follow the energy-based GAN code (spec/energy-gan.md section 4.3, after the WGAN-GP toy sets):

- 8 Gaussians: centres on the circle of radius 2 (angles k*pi/4), std 0.02, everything divided by 1.414.
- 25 Gaussians: centres on the grid {-4, -2, 0, 2, 4}^2, std 0.05, everything divided by 2.828.
- Swiss roll: sklearn's ``make_swiss_roll(noise=0.25)`` columns [0, 2], divided by 7.5.
- StackedMNIST (Metz et al. 2017, "Unrolled GANs", arXiv:1611.02163): three random MNIST digits as the channels of
  one image, so 1,000 modes ``100*d0 + 10*d1 + d2``.

Every function draws from its own ``np.random.Generator(seed)``: the global NumPy state is never touched.
"""

import numpy as np

_MIXTURES = {  # kind -> (default std, default divisor), in the un-divided coordinates
    "8": (0.02, 1.414),
    "25": (0.05, 2.828),
}
SWISS_ROLL_NOISE, SWISS_ROLL_SCALE = 0.25, 7.5  # sklearn's noise, and the divisor of the WGAN-GP toy script
TOY_SETS_2D = ("8gaussians", "25gaussians", "swissroll")  # the names of the conventional 2-D toy sets


def mixture_centres(kind: str = "8") -> np.ndarray:
    """Centres of the ``"8"`` or ``"25"`` Gaussian mixture before division, float32 ``[K, 2]``."""
    if kind == "8":
        angles = np.arange(8) * (np.pi / 4)
        return (2 * np.stack([np.cos(angles), np.sin(angles)], axis=1)).astype(np.float32)
    if kind == "25":
        grid = np.arange(-4, 5, 2, dtype=np.float32)
        return np.stack(np.meshgrid(grid, grid, indexing="ij"), axis=-1).reshape(25, 2)
    raise ValueError(f"kind={kind!r} is not one of '8', '25'")


def gaussian_mixture_2d(
    n: int, kind: str = "8", std: float | None = None, scale: float | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points from an equal-weight isotropic Gaussian mixture in 2-D.

    Each point is ``(c_k + std * eps) / scale`` with ``k`` uniform over the components and ``eps ~ N(0, I)``.

    Args:
        n: number of points.
        kind: ``"8"`` (ring) or ``"25"`` (grid).
        std: component standard deviation before division; ``None`` for the convention (0.02 / 0.05).
        scale: divisor applied to everything; ``None`` for the convention (1.414 / 2.828), 1.0 for raw coordinates.
        seed: seed of the local generator.

    Returns:
        float32 points ``[n, 2]``, int64 component labels ``[n]``, float32 centres ``[K, 2]`` (divided by
        ``scale``, so the effective std is ``std / scale``).
    """
    centres = mixture_centres(kind)
    default_std, default_scale = _MIXTURES[kind]
    std = default_std if std is None else std
    scale = default_scale if scale is None else scale
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(centres), size=n)
    points = centres[labels] + std * rng.standard_normal((n, 2))
    return (points / scale).astype(np.float32), labels.astype(np.int64), (centres / scale).astype(np.float32)


def swiss_roll_2d(n: int, noise: float = SWISS_ROLL_NOISE, scale: float = SWISS_ROLL_SCALE,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The 2-D Swiss roll: ``t (cos t, sin t) + noise * eps`` with ``t ~ U(1.5 pi, 4.5 pi)``, divided by ``scale``.

    Same distribution as sklearn's ``make_swiss_roll`` columns [0, 2] (its height column is dropped).

    Returns:
        float32 points ``[n, 2]`` and float32 roll positions ``t`` ``[n]`` (useful for colouring plots).
    """
    rng = np.random.default_rng(seed)
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    points = t[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1) + noise * rng.standard_normal((n, 2))
    return (points / scale).astype(np.float32), t.astype(np.float32)


def toy_2d(name: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """``n`` points of a conventional 2-D toy set (``TOY_SETS_2D``), divided as the module docstring says.

    Returns:
        float32 points ``[n, 2]`` and the mixture's float32 centres ``[K, 2]`` (None for the Swiss roll).
    """
    if name == "swissroll":
        return swiss_roll_2d(n, seed=seed)[0], None
    if name not in TOY_SETS_2D:
        raise ValueError(f"toy set must be one of {TOY_SETS_2D}, got {name!r}")
    points, _, centres = gaussian_mixture_2d(n, kind=name[: -len("gaussians")], seed=seed)
    return points, centres


def toy_std(name: str) -> float:
    """The per-coordinate noise of toy set ``name`` in its divided coordinates: a mixture component's std over the
    divisor (0.02 / 1.414, 0.05 / 2.828), or the Swiss roll's noise over its divisor (0.25 / 7.5)."""
    if name == "swissroll":
        return SWISS_ROLL_NOISE / SWISS_ROLL_SCALE
    if name not in TOY_SETS_2D:
        raise ValueError(f"toy set must be one of {TOY_SETS_2D}, got {name!r}")
    std, scale = _MIXTURES[name[: -len("gaussians")]]
    return std / scale


def stacked_mnist(
    n: int, seed: int, images: np.ndarray, labels: np.ndarray, channels: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """StackedMNIST: each sample stacks ``channels`` independently drawn MNIST digits as its channels.

    Args:
        n: number of samples.
        seed: seed of the local generator (the energy-GAN protocol fixes its training stacks with seed 111).
        images: uint8 MNIST images ``[N, 28, 28]``.
        labels: their digits ``[N]``.
        channels: digits per sample (3 gives 1,000 modes, 4 gives 10,000).

    Returns:
        uint8 images ``[n, channels, 28, 28]`` and int64 mode labels ``[n]``: the digits read as a base-10 number,
        ``100*d0 + 10*d1 + d2`` for 3 channels.
    """
    if len(images) != len(labels):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
    rng = np.random.default_rng(seed)
    index = rng.integers(len(images), size=(n, channels))  # [n, channels] rows of MNIST
    digits = np.asarray(labels, dtype=np.int64)[index]  # [n, channels]
    modes = digits @ (10 ** np.arange(channels - 1, -1, -1, dtype=np.int64))  # [n]
    return np.asarray(images)[index], modes
