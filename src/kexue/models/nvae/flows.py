"""Inverse-autoregressive flow cells applied to a group's posterior sample (optional; off for MNIST as in the paper).

Vahdat & Kautz, arXiv:2007.03898, §3.2 ("normalizing flows"), after Kingma et al., "Improved Variational Inference
with Inverse Autoregressive Flow", arXiv:1606.04934. The masks follow the official code's ``neural_ar_operations.py``.

A flow cell maps a posterior sample z to ``z' = (z - μ(z)) · exp(-s(z))`` where μ and s at position i depend only on
positions before i, in the order (pixel in raster order, then channel). The Jacobian is therefore triangular with
diagonal ``exp(-s)``, so ``log q(z') = log q(z) + Σ s``. The official code uses the shift only (s = 0); the scale is
kept here and starts near zero. Two cells run per flow, the second with the pixel order reversed
(``mirror``), so every latent can depend on every other.

- :func:`autoregressive_mask` builds the kernel mask: rows above the centre and pixels left of it are open, the
  centre tap connects channel blocks in order (strictly for the first layer, ``zero_diag``), the rest is closed.
- Only z is transformed; the flow does not see the encoder features, so it is a learned invertible map on top of
  the Normal posterior (prior sampling never runs it).
"""

import torch
import torch.nn.functional as F
from torch import nn

from kexue.models.nvae.distributions import soft_clamp


def _channel_mask(in_channels: int, out_channels: int, groups: int, zero_diag: bool) -> torch.Tensor:
    """``[C_out, C_in / groups]`` mask of the centre tap: output block i sees input blocks < i (≤ i without
    ``zero_diag``); depthwise convolutions (groups = C_in) see their own channel unless ``zero_diag``."""
    if groups == in_channels:
        return torch.full((out_channels, 1), 0.0 if zero_diag else 1.0)
    if in_channels % out_channels and out_channels % in_channels:
        raise ValueError(f"masked conv needs one channel count to divide the other, got {in_channels} -> "
                         f"{out_channels}")
    mask = torch.ones(out_channels, in_channels)
    if out_channels >= in_channels:  # each input channel owns `ratio` consecutive outputs
        ratio = out_channels // in_channels
        for i in range(in_channels):
            mask[i * ratio:(i + 1) * ratio, i + (0 if zero_diag else 1):] = 0
    else:  # each output channel owns `ratio` consecutive inputs
        ratio = in_channels // out_channels
        for i in range(out_channels):
            mask[i, (i + (0 if zero_diag else 1)) * ratio:] = 0
    return mask


def autoregressive_mask(in_channels: int, out_channels: int, kernel_size: int, groups: int = 1,
                        zero_diag: bool = False, mirror: bool = False) -> torch.Tensor:
    """The ``[C_out, C_in / groups, k, k]`` mask that makes a convolution autoregressive (see the module docstring)."""
    if kernel_size % 2 != 1:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    m = kernel_size // 2
    mask = torch.ones(out_channels, in_channels // groups, kernel_size, kernel_size)
    mask[:, :, m:, :] = 0  # the centre row and below ...
    mask[:, :, m, :m] = 1  # ... except the pixels left of the centre
    mask[:, :, m, m] = _channel_mask(in_channels, out_channels, groups, zero_diag)
    return mask.flip(2, 3) if mirror else mask


class MaskedConv2d(nn.Conv2d):
    """A weight-normalised convolution whose kernel is multiplied by :func:`autoregressive_mask`."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, groups: int = 1,
                 zero_diag: bool = False, mirror: bool = False, init_scale: float = 1.0) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2, groups=groups)
        self.register_buffer("mask", autoregressive_mask(in_channels, out_channels, kernel_size, groups, zero_diag,
                                                         mirror), persistent=False)
        norm = (self.weight.detach() * self.mask).flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        self.log_weight_norm = nn.Parameter(torch.log(norm + 1e-2) + torch.log(torch.tensor(init_scale)))

    def normalized_weight(self) -> torch.Tensor:
        """The masked, weight-normalised kernel ``[C_out, C_in / groups, k, k]``."""
        w = self.weight * self.mask
        return self.log_weight_norm.exp() * w / (w.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, padding=self.padding, groups=self.groups)


class FlowCell(nn.Module):
    """One affine IAF step ``[B, C_z, H, W] -> (z', log|det ∂z'/∂z| per element)``.

    Args:
        latent_channels: C_z.
        expansion: hidden channels = ``expansion · C_z`` (the official code: 6).
        mirror: reverse the pixel order (the second cell of a :class:`PairedFlow`).
    """

    def __init__(self, latent_channels: int, expansion: int = 6, mirror: bool = False) -> None:
        super().__init__()
        hidden = expansion * latent_channels
        self.hidden = nn.Sequential(
            MaskedConv2d(latent_channels, hidden, 3, zero_diag=True, mirror=mirror), nn.ELU(),
            MaskedConv2d(hidden, hidden, 5, groups=hidden, mirror=mirror), nn.ELU(),
        )
        # small initial shift and scale: the flow starts near the identity
        self.shift = MaskedConv2d(hidden, latent_channels, 1, mirror=mirror, init_scale=0.1)
        self.log_scale = MaskedConv2d(hidden, latent_channels, 1, mirror=mirror, init_scale=0.1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.hidden(z)
        s = soft_clamp(self.log_scale(h), 3.0)
        return (z - self.shift(h)) * torch.exp(-s), -s


class PairedFlow(nn.Module):
    """Two :class:`FlowCell` s, the second mirrored. Returns ``(z', log|det|)`` with the log-det elementwise."""

    def __init__(self, latent_channels: int, expansion: int = 6) -> None:
        super().__init__()
        self.cells = nn.ModuleList([FlowCell(latent_channels, expansion, mirror=False),
                                    FlowCell(latent_channels, expansion, mirror=True)])

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        log_det = torch.zeros_like(z)
        for cell in self.cells:
            z, ld = cell(z)
            log_det = log_det + ld
        return z, log_det
