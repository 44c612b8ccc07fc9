"""Auxiliary networks of the energy-based GAN (post 1): MEG's statistics network T(x, z) and Su's latent encoder E(x).

Kumar et al., "Maximum Entropy Generators for Energy-Based Models" (MEG, arXiv:1901.08508); Su Jianlin,
kexue.fm/archives/6331 (the InfoGAN-bound variant). The energy itself is a critic from :mod:`kexue.models.gan`
(:class:`~kexue.models.gan.MLPCritic` / :class:`~kexue.models.gan.ConvCritic`, read as U = low for real data).

- ``MLPStatistics``: T(x, z) = MLP(concat(x, z)) -> ``[B]``, LeakyReLU(0.2) (MEG's toy network, 3 hidden layers).
- ``ConvStatistics``: a conv trunk maps x to ``z_dim`` features, concatenated with z, then an MLP
  (2·z_dim -> width -> 1), as MEG's image statistics network.
- ``MLPEncoder`` / ``ConvEncoder``: x -> ẑ ``[B, z_dim]``, the mean of p(z | x) in the InfoGAN bound.

Like the critics, none of these uses batch norm: the MI estimators pair samples within a batch, and batch
statistics would leak information between the joint and the shuffled pairs.
"""

import torch
from torch import nn

from kexue.models.gan import ConvCritic
from kexue.nn.init import init_


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


def _mlp(in_dim: int, out_dim: int, width: int, depth: int) -> nn.Sequential:
    layers, d = [], in_dim
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.LeakyReLU(0.2)]
        d = width
    return nn.Sequential(*layers, nn.Linear(d, out_dim))


def _leaky_init(module: nn.Module) -> None:
    init_(module, "lecun", gain=lambda x: nn.functional.leaky_relu(x, 0.2))


def _check_pair(x: torch.Tensor, z: torch.Tensor, x_shape: tuple[int, ...], z_dim: int) -> None:
    if tuple(x.shape[1:]) != x_shape or z.dim() != 2 or z.shape != (x.shape[0], z_dim):
        raise ValueError(f"expected x [B, {', '.join(map(str, x_shape))}] and z [B, {z_dim}], got "
                         f"{tuple(x.shape)} and {tuple(z.shape)}")


class MLPStatistics(nn.Module):
    """T(x ``[B, x_dim]``, z ``[B, z_dim]``) -> ``[B]``: an MLP on the concatenation."""

    def __init__(self, x_dim: int = 2, z_dim: int = 2, width: int = 512, depth: int = 3) -> None:
        super().__init__()
        _check_positive(x_dim=x_dim, z_dim=z_dim, width=width, depth=depth)
        self.x_dim, self.z_dim = x_dim, z_dim
        self.net = _mlp(x_dim + z_dim, 1, width, depth)
        self.init_weights()

    def init_weights(self) -> None:
        _leaky_init(self)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        _check_pair(x, z, (self.x_dim,), self.z_dim)
        return self.net(torch.cat([x, z], dim=1)).squeeze(-1)


class ConvStatistics(nn.Module):
    """T(x ``[B, channels, 28, 28]``, z ``[B, z_dim]``) -> ``[B]``.

    x goes through a :class:`~kexue.models.gan.ConvCritic` trunk with ``z_dim`` outputs; its features and z are
    concatenated and scored by an MLP with one hidden layer of ``width`` units.
    """

    def __init__(self, channels: int = 1, z_dim: int = 64, width: int = 64, hidden: int = 512) -> None:
        super().__init__()
        _check_positive(channels=channels, z_dim=z_dim, width=width, hidden=hidden)
        self.channels, self.z_dim = channels, z_dim
        self.trunk = ConvCritic(channels=channels, width=width, out_dim=z_dim)
        self.head = _mlp(2 * z_dim, 1, hidden, 1)
        self.init_weights()

    def init_weights(self) -> None:
        self.trunk.init_weights()
        _leaky_init(self.head)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        _check_pair(x, z, (self.channels, 28, 28), self.z_dim)
        h = self.trunk(x)  # [B, z_dim]
        return self.head(torch.cat([h, z], dim=1)).squeeze(-1)


class MLPEncoder(nn.Module):
    """x ``[B, x_dim]`` -> ẑ ``[B, z_dim]`` through ``depth`` LeakyReLU(0.2) layers of ``width`` units."""

    def __init__(self, x_dim: int = 2, z_dim: int = 2, width: int = 512, depth: int = 3) -> None:
        super().__init__()
        _check_positive(x_dim=x_dim, z_dim=z_dim, width=width, depth=depth)
        self.x_dim, self.z_dim = x_dim, z_dim
        self.net = _mlp(x_dim, z_dim, width, depth)
        self.init_weights()

    def init_weights(self) -> None:
        _leaky_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.x_dim:
            raise ValueError(f"expected x [B, {self.x_dim}], got {tuple(x.shape)}")
        return self.net(x)


class ConvEncoder(nn.Module):
    """Images ``[B, channels, 28, 28]`` -> ẑ ``[B, z_dim]``: a :class:`~kexue.models.gan.ConvCritic` with ``z_dim``
    outputs (no batch norm, so each image is encoded on its own)."""

    def __init__(self, channels: int = 1, z_dim: int = 64, width: int = 64) -> None:
        super().__init__()
        _check_positive(channels=channels, z_dim=z_dim, width=width)
        self.z_dim = z_dim
        self.net = ConvCritic(channels=channels, width=width, out_dim=z_dim)

    def init_weights(self) -> None:
        self.net.init_weights()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        return z if z.dim() == 2 else z.unsqueeze(-1)  # z_dim = 1 comes back squeezed from the critic
