"""Generator and critic networks shared by the GAN posts (1: energy GAN, 2: WGAN, 3: O-GAN).

- ``MLPGenerator`` / ``MLPCritic`` for 2-D toy data (mixtures of Gaussians, swiss roll).
- ``ConvGenerator`` / ``ConvCritic``: DCGAN-style networks for 28x28 images with any channel count (1 for MNIST,
  3 for StackedMNIST). The generator upsamples with nearest-neighbour + 3x3 convolution rather than transposed
  convolutions (no checkerboard artefacts); the critic has no batch norm, because a gradient penalty is taken per
  sample and batch norm would couple the samples of a batch.

Networks return one score per sample (``[B]``) for critics and images in [-1, 1] for image generators. Weights are
initialised explicitly by ``init_weights()`` (called by the constructors), so a model can also be built on
``meta`` and initialised after ``to_empty``.
"""

import torch
from torch import nn

from kexue.nn.init import init_


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")


class MLPGenerator(nn.Module):
    """z ``[B, z_dim]`` -> x ``[B, out_dim]`` through ``depth`` hidden ReLU layers of ``width`` units."""

    def __init__(self, z_dim: int = 2, out_dim: int = 2, width: int = 128, depth: int = 3) -> None:
        super().__init__()
        _check_positive(z_dim=z_dim, out_dim=out_dim, width=width, depth=depth)
        self.z_dim = z_dim
        layers, d = [], z_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.ReLU()]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, out_dim))
        self.init_weights()

    def init_weights(self) -> None:
        init_(self, "he")  # ReLU layers: variance 2 / fan_in keeps activations' scale through depth (post 5)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MLPCritic(nn.Module):
    """x ``[B, in_dim]`` -> score ``[B]`` through ``depth`` hidden LeakyReLU(0.2) layers of ``width`` units."""

    def __init__(self, in_dim: int = 2, width: int = 128, depth: int = 3) -> None:
        super().__init__()
        _check_positive(in_dim=in_dim, width=width, depth=depth)
        layers, d = [], in_dim
        for _ in range(depth):
            layers += [nn.Linear(d, width), nn.LeakyReLU(0.2)]
            d = width
        self.net = nn.Sequential(*layers, nn.Linear(d, 1))
        self.init_weights()

    def init_weights(self) -> None:
        init_(self, "lecun", gain=lambda x: nn.functional.leaky_relu(x, 0.2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class ConvGenerator(nn.Module):
    """z ``[B, z_dim]`` -> images ``[B, channels, 28, 28]`` in [-1, 1].

    Linear to ``[width*2, 7, 7]``, then two (upsample x2, conv 3x3, BN, ReLU) stages to 14 and 28, and a 3x3 conv
    to ``channels`` with tanh.
    """

    def __init__(self, z_dim: int = 64, channels: int = 1, width: int = 64) -> None:
        super().__init__()
        _check_positive(z_dim=z_dim, channels=channels, width=width)
        if width < 2:
            raise ValueError(f"width must be >= 2 (the last stage has width // 2 channels), got {width}")
        self.z_dim, self.channels = z_dim, channels
        self.fc = nn.Sequential(nn.Linear(z_dim, 2 * width * 49), nn.BatchNorm1d(2 * width * 49), nn.ReLU())
        self.body = nn.Sequential(
            nn.Upsample(scale_factor=2), nn.Conv2d(2 * width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, width // 2, 3, padding=1), nn.BatchNorm2d(width // 2),
            nn.ReLU(),
            nn.Conv2d(width // 2, channels, 3, padding=1), nn.Tanh(),
        )
        self.width = width
        self.init_weights()

    def init_weights(self) -> None:
        init_(self, "he")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], 2 * self.width, 7, 7)  # [B, 2w, 7, 7]
        return self.body(h)  # [B, C, 28, 28]


class ConvCritic(nn.Module):
    """Images ``[B, channels, 28, 28]`` -> score ``[B]``: two stride-2 4x4 convolutions (28 -> 14 -> 7), then linear.

    ``features(x)`` returns the ``[B, feature_dim]`` penultimate activations (O-GAN uses them as an encoder).
    """

    def __init__(self, channels: int = 1, width: int = 64, out_dim: int = 1) -> None:
        super().__init__()
        _check_positive(channels=channels, width=width, out_dim=out_dim)
        self.channels = channels
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.feature_dim = 2 * width * 49
        self.head = nn.Linear(self.feature_dim, out_dim)
        self.init_weights()

    def init_weights(self) -> None:
        init_(self, "lecun", gain=lambda x: nn.functional.leaky_relu(x, 0.2))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1:] != (self.channels, 28, 28):
            raise ValueError(f"expected images [B, {self.channels}, 28, 28], got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.features(x))
        return out.squeeze(-1) if out.shape[-1] == 1 else out
