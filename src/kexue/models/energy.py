"""Auxiliary networks of the energy-based GAN (post 1): MEG's statistics network T(x, z) and Su's latent encoder E(x).

Kumar et al., "Maximum Entropy Generators for Energy-Based Models" (MEG, arXiv:1901.08508); Su Jianlin,
kexue.fm/archives/6331 (the InfoGAN-bound variant). The energy itself is a critic from :mod:`kexue.models.gan`
(:class:`~kexue.models.gan.MLPCritic` / :class:`~kexue.models.gan.ConvCritic`, read as U = low for real data).

- ``MLPStatistics``: T(x, z) = MLP(concat(x, z)) -> ``[B]``, LeakyReLU(0.2) (MEG's toy network, 3 hidden layers).
- ``ConvStatistics``: a conv trunk maps x to ``z_dim`` features, concatenated with z, then an MLP
  (2·z_dim -> width -> 1), as MEG's image statistics network.
- ``MLPEncoder`` / ``ConvEncoder``: x -> ẑ ``[B, z_dim]``, the mean of p(z | x) in the InfoGAN bound.
- ``MEGGenerator28`` / ``MEGEnergy28`` / ``MEGStatistics28``: the official code's 28×28 networks (its
  ``networks/mnist.py``, used for StackedMNIST and the MNIST anomaly runs): 5×5 (transposed) convolutions through
  2×2, 4×4, 7×7 and 14×14, base width ``dim`` (512 there).

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


# --------------------------------------------------------------------------------------------------------------
# The official code's 28x28 networks (MEG's StackedMNIST / MNIST architecture)
# --------------------------------------------------------------------------------------------------------------


def _meg_trunk(channels: int, dim: int) -> nn.Sequential:
    """Four 5×5 stride-2 convolutions 28 -> 14 -> 7 -> 4 -> 2, widths dim/8 .. dim, LeakyReLU(0.2), no norm."""
    layers, c = [], channels
    for out in (dim // 8, dim // 4, dim // 2, dim):
        layers += [nn.Conv2d(c, out, 5, stride=2, padding=2), nn.LeakyReLU(0.2)]
        c = out
    return nn.Sequential(*layers, nn.Flatten())


def _check_dim(dim: int) -> None:
    _check_positive(dim=dim)
    if dim % 8:
        raise ValueError(f"dim must be a multiple of 8 (the widths are dim/8, dim/4, dim/2, dim), got {dim}")


def _default_init(module: nn.Module) -> None:
    """PyTorch's own layer initialisation (what the official code leaves its energy and statistics nets with)."""
    for m in module.modules():
        if isinstance(m, nn.Linear | nn.Conv2d):
            m.reset_parameters()


class MEGGenerator28(nn.Module):
    """z ``[B, z_dim]`` -> images ``[B, channels, 28, 28]`` in [-1, 1], the official MEG MNIST generator.

    Linear to ``[dim, 2, 2]``, then four (BN, ReLU, 5×5 stride-2 transposed conv) stages to 4, 7, 14 and 28 pixels
    with widths dim/2, dim/4, dim/8 and ``channels``, and tanh. DCGAN initialisation (conv weights N(0, 0.02), BN
    scales N(1, 0.02)), as the official ``weights_init``.
    """

    def __init__(self, z_dim: int = 128, channels: int = 3, dim: int = 512) -> None:
        super().__init__()
        _check_positive(z_dim=z_dim, channels=channels)
        _check_dim(dim)
        self.z_dim, self.channels, self.dim = z_dim, channels, dim
        self.expand = nn.Linear(z_dim, 4 * dim)
        layers, c = [], dim
        for out, extra in ((dim // 2, 1), (dim // 4, 0), (dim // 8, 1), (channels, 1)):  # 2 -> 4 -> 7 -> 14 -> 28
            layers += [nn.BatchNorm2d(c), nn.ReLU(), nn.ConvTranspose2d(c, out, 5, 2, 2, output_padding=extra)]
            c = out
        self.main = nn.Sequential(*layers, nn.Tanh())
        self.init_weights()

    def init_weights(self) -> None:
        self.expand.reset_parameters()
        for m in self.main:
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected z [B, {self.z_dim}], got {tuple(z.shape)}")
        return self.main(self.expand(z).view(z.shape[0], self.dim, 2, 2))  # [B, C, 28, 28]


class MEGEnergy28(nn.Module):
    """Images ``[B, channels, 28, 28]`` -> energy ``[B]``: the official MEG MNIST energy (trunk + linear, no norm)."""

    def __init__(self, channels: int = 3, dim: int = 512) -> None:
        super().__init__()
        _check_positive(channels=channels)
        _check_dim(dim)
        self.channels = channels
        self.main = _meg_trunk(channels, dim)
        self.expand = nn.Linear(4 * dim, 1)
        self.init_weights()

    def init_weights(self) -> None:
        _default_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (self.channels, 28, 28):
            raise ValueError(f"expected images [B, {self.channels}, 28, 28], got {tuple(x.shape)}")
        return self.expand(self.main(x)).squeeze(-1)


class MEGStatistics28(nn.Module):
    """T(x ``[B, channels, 28, 28]``, z ``[B, z_dim]``) -> ``[B]``: the official MEG MNIST statistics network.

    The energy's trunk, a linear map to ``z_dim`` features, concatenated with z, then 2·z_dim -> dim -> 1 with
    LeakyReLU(0.2).
    """

    def __init__(self, channels: int = 3, z_dim: int = 128, dim: int = 512) -> None:
        super().__init__()
        _check_positive(channels=channels, z_dim=z_dim)
        _check_dim(dim)
        self.channels, self.z_dim = channels, z_dim
        self.main = _meg_trunk(channels, dim)
        self.expand = nn.Linear(4 * dim, z_dim)
        self.classify = nn.Sequential(nn.Linear(2 * z_dim, dim), nn.LeakyReLU(0.2), nn.Linear(dim, 1))
        self.init_weights()

    def init_weights(self) -> None:
        _default_init(self)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        _check_pair(x, z, (self.channels, 28, 28), self.z_dim)
        h = self.expand(self.main(x))  # [B, z_dim]
        return self.classify(torch.cat([h, z], dim=1)).squeeze(-1)
