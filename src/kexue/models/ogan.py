"""O-GAN: the discriminator is an encoder, and its mean is the score (post 3; kexue.fm/archives/6409).

Su Jianlin, "O-GAN: Extremely Concise Approach for Auto-Encoding Generative Adversarial Networks", arXiv 1903.01931;
official Keras code github.com/bojone/o-gan (``c7b3d089``).

- The discriminator is ``D(x) = avg(E(x))`` for an encoder-shaped network ``E: x -> R^{n_z}``. The training loss
  (``kexue.losses.ogan``) adds the Pearson correlation ρ(z, E(G(z))), which only sees the standardised direction
  N(E(·)) and so leaves the mean free for the score.
- After training, ``G(N(E(x)))`` reconstructs x at no extra cost: :meth:`OGAN.encode`, :meth:`OGAN.reconstruct`
  (with the official code's truncation ``scale = 0.9``) and :meth:`OGAN.interpolate` run in eval mode, so batch
  norm uses its running statistics and **never updates them**, and every submodule's train/eval flag is restored.
- Networks: the 28x28 DCGAN-style pair of :mod:`kexue.models.gan` (``ConvCritic(out_dim=z_dim)`` is the encoder,
  ``ConvGenerator`` the generator), or, with ``norm="sm"``, :class:`SelfModulatedGenerator`: the same generator
  with *self-modulated* batch norm (the official ``sm_4x4`` variant): BN without affine parameters whose scale and
  shift come from z, ``h * (γ(z) + 1) + β(z)``.
"""

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from kexue.models.gan import ConvCritic, ConvGenerator
from kexue.nn.init import init_
from kexue.ops.correlation import standardize

NORMS = ("bn", "sm")

# --------------------------------------------------------------------------------------------------------------
# Self-modulated batch norm and the generator that uses it
# --------------------------------------------------------------------------------------------------------------


class SelfModulatedBatchNorm(nn.Module):
    """Batch norm without affine parameters, modulated by the latent code: ``BN(h) * (γ(z) + 1) + β(z)``.

    γ and β each come from z through ``Linear(z_dim, hidden), ReLU, Linear(hidden, C)`` (official ``sm`` scripts).
    The output layers start at zero, so a fresh layer is plain batch norm (the official N(0, 0.02) kernels start
    close to that too).

    Args:
        num_features: C, the channels (``spatial``) or features normalised.
        z_dim: size of the code z.
        spatial: inputs are ``[B, C, H, W]`` (per-channel statistics) rather than ``[B, C]``.
        hidden: hidden units of the γ and β networks (default ``z_dim``, as in the official code).
    """

    def __init__(self, num_features: int, z_dim: int, *, spatial: bool = True, hidden: int | None = None) -> None:
        super().__init__()
        hidden = z_dim if hidden is None else hidden
        for name, value in (("num_features", num_features), ("z_dim", z_dim), ("hidden", hidden)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.spatial = spatial
        self.norm = (nn.BatchNorm2d if spatial else nn.BatchNorm1d)(num_features, affine=False)
        self.gamma = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_features))
        self.beta = nn.Sequential(nn.Linear(z_dim, hidden), nn.ReLU(), nn.Linear(hidden, num_features))
        self.init_weights()

    def init_weights(self) -> None:
        init_(self, "he", zero=("gamma.2", "beta.2"))

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """h ``[B, C, H, W]`` (or ``[B, C]``), z ``[B, z_dim]`` -> same shape as h."""
        if z.dim() != 2 or z.shape[0] != h.shape[0]:
            raise ValueError(f"z must be [B, z_dim] with the batch of h ({h.shape[0]}), got {tuple(z.shape)}")
        gamma, beta = self.gamma(z), self.beta(z)  # [B, C]
        if self.spatial:
            gamma, beta = gamma[:, :, None, None], beta[:, :, None, None]  # [B, C, 1, 1]
        return self.norm(h) * (gamma + 1) + beta


class SelfModulatedGenerator(nn.Module):
    """z ``[B, z_dim]`` -> images ``[B, channels, 28, 28]`` in [-1, 1]: :class:`~kexue.models.gan.ConvGenerator`'s
    layout (linear to 7x7, two upsample + 3x3 conv stages, 3x3 conv + tanh) with every batch norm self-modulated."""

    def __init__(self, z_dim: int = 64, channels: int = 1, width: int = 64) -> None:
        super().__init__()
        for name, value in (("z_dim", z_dim), ("channels", channels), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.z_dim, self.channels, self.width = z_dim, channels, width
        self.fc = nn.Linear(z_dim, 2 * width * 49)
        self.norm0 = SelfModulatedBatchNorm(2 * width * 49, z_dim, spatial=False)
        self.up = nn.Upsample(scale_factor=2)
        self.conv1 = nn.Conv2d(2 * width, width, 3, padding=1)
        self.norm1 = SelfModulatedBatchNorm(width, z_dim)
        self.conv2 = nn.Conv2d(width, width // 2, 3, padding=1)
        self.norm2 = SelfModulatedBatchNorm(width // 2, z_dim)
        self.out = nn.Conv2d(width // 2, channels, 3, padding=1)
        self.init_weights()

    def init_weights(self) -> None:
        init_(self, "he")
        for norm in (self.norm0, self.norm1, self.norm2):
            norm.init_weights()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"expected codes [B, {self.z_dim}], got {tuple(z.shape)}")
        h = torch.relu(self.norm0(self.fc(z), z)).view(z.shape[0], 2 * self.width, 7, 7)  # [B, 2w, 7, 7]
        h = torch.relu(self.norm1(self.conv1(self.up(h)), z))  # [B, w, 14, 14]
        h = torch.relu(self.norm2(self.conv2(self.up(h)), z))  # [B, w/2, 28, 28]
        return torch.tanh(self.out(h))  # [B, C, 28, 28]


# --------------------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------------------


@contextmanager
def _inference(module: nn.Module) -> Iterator[None]:
    """Eval mode and no autograd inside; each submodule's own train/eval flag is restored afterwards."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags:
            m.training = flag


class OGAN(nn.Module):
    """An encoder E and a generator G trained as an O-GAN (the losses are in :mod:`kexue.losses.ogan`).

    Args:
        encoder: images ``[B, C, H, W]`` -> codes ``[B, z_dim]`` (no activation on the output).
        generator: codes ``[B, z_dim]`` -> images ``[B, C, H, W]`` in [-1, 1].
        z_dim: n_z, at least 3: mean, std and direction of a code are functionally independent only from n_z = 3 on.
    """

    def __init__(self, encoder: nn.Module, generator: nn.Module, z_dim: int) -> None:
        super().__init__()
        if not isinstance(z_dim, int) or z_dim < 3:
            raise ValueError(f"z_dim must be an int >= 3 (ρ needs the mean and std of a code free), got {z_dim!r}")
        self.encoder, self.generator, self.z_dim = encoder, generator, z_dim

    # --- training-time pieces (autograd on, modes as set by the caller) ----------------------------------------

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """E(x): ``[B, C, H, W]`` -> ``[B, z_dim]`` (with autograd; the caller's train/eval mode)."""
        out = self.encoder(x)
        if out.shape != (x.shape[0], self.z_dim):
            raise ValueError(f"the encoder must return codes [B, {self.z_dim}], got {tuple(out.shape)} for a batch "
                             f"of {x.shape[0]}")
        return out

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The discriminator avg(E(x)) ``[B]``; real images get the *lower* score (the energy convention)."""
        return self.codes(x).mean(-1)

    # --- inference (eval mode, no autograd, batch-norm statistics untouched) ------------------------------------

    def _check_scale(self, scale: float) -> float:
        if not isinstance(scale, int | float) or not scale > 0:
            raise ValueError(f"scale must be a positive number (the truncation factor), got {scale!r}")
        return float(scale)

    def _check_images(self, x: torch.Tensor, name: str) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"{name} must be a float image batch [B, C, H, W] in [-1, 1], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")

    def sample(self, n: int, *, scale: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """G(scale · z) for n codes z ~ N(0, I): ``[n, C, H, W]`` in [-1, 1], in eval mode.

        Args:
            n: how many images.
            scale: truncation factor of the codes (1 = none).
            generator: a CPU ``torch.Generator`` for reproducible codes (default: the global RNG).
        """
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        scale = self._check_scale(scale)
        device = next(self.generator.parameters()).device
        # drawn on the CPU, so a seeded ``generator`` gives the same codes on every device
        z = torch.randn(n, self.z_dim, generator=generator).to(device)
        with _inference(self):
            return self.generator(scale * z)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """N(E(x)): the standardised codes ``[B, z_dim]`` (mean 0, std 1 across dims) of images ``[B, C, H, W]``.

        Training matches only the direction of E(G(z)) to z (ρ ignores E's mean and scale, and the mean is the
        score), while a code z ~ N(0, I) has mean ≈ 0 and std ≈ 1 across its dims: standardising is the inverse.
        """
        self._check_images(x, "x")
        with _inference(self):
            return standardize(self.codes(x))

    def reconstruct(self, x: torch.Tensor, scale: float = 0.9) -> torch.Tensor:
        """G(scale · N(E(x))) ``[B, C, H, W]``; ``scale`` < 1 truncates the code (0.9 in the official ``sample_ae``).

        Runs in eval mode: a sample's reconstruction does not depend on the rest of the batch, and batch-norm
        running statistics are not touched.
        """
        scale = self._check_scale(scale)
        code = self.encode(x)
        with _inference(self):
            return self.generator(scale * code)

    def interpolate(self, x1: torch.Tensor, x2: torch.Tensor, steps: int = 8, scale: float = 0.9) -> torch.Tensor:
        """Decode ``steps`` points on the segment from N(E(x1)) to N(E(x2)), both ends included.

        Args:
            x1, x2: image batches ``[B, C, H, W]`` of the same shape (pairs matched by index).
            steps: points per pair, >= 2.
            scale: truncation factor, as in :meth:`reconstruct`.

        Returns:
            ``[B, steps, C, H, W]``; ``[:, 0]`` and ``[:, -1]`` are the reconstructions of x1 and x2.
        """
        self._check_images(x1, "x1")
        if not isinstance(x2, torch.Tensor) or x2.shape != x1.shape:
            raise ValueError(f"x2 must have the shape of x1 {tuple(x1.shape)}, got "
                             f"{tuple(x2.shape) if isinstance(x2, torch.Tensor) else type(x2).__name__}")
        if not isinstance(steps, int) or steps < 2:
            raise ValueError(f"steps must be an int >= 2 (both end points are included), got {steps!r}")
        scale = self._check_scale(scale)
        c1, c2 = self.encode(x1), self.encode(x2)  # [B, z]
        t = torch.linspace(0, 1, steps, device=c1.device, dtype=c1.dtype)[None, :, None]  # [1, S, 1]
        codes = (1 - t) * c1[:, None] + t * c2[:, None]  # [B, S, z]
        with _inference(self):
            images = self.generator(scale * codes.flatten(0, 1))  # [B*S, C, H, W]
        return images.view(x1.shape[0], steps, *images.shape[1:])


def conv_ogan(z_dim: int = 64, channels: int = 1, *, g_width: int = 64, e_width: int = 64,
              norm: str = "bn") -> OGAN:
    """The 28x28 O-GAN: encoder ``ConvCritic(channels, e_width, out_dim=z_dim)`` and a ``ConvGenerator``
    (``norm="bn"``) or a :class:`SelfModulatedGenerator` (``norm="sm"``) of width ``g_width``."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(map(repr, NORMS))}, got {norm!r}")
    encoder = ConvCritic(channels=channels, width=e_width, out_dim=z_dim)
    gen_cls = ConvGenerator if norm == "bn" else SelfModulatedGenerator
    return OGAN(encoder, gen_cls(z_dim=z_dim, channels=channels, width=g_width), z_dim)
