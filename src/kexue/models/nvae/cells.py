"""NVAE's building blocks: weight-normalised convolutions, BN-Swish, squeeze-excitation, skip paths and cells.

Vahdat & Kautz, "NVAE: A Deep Hierarchical Variational Autoencoder", arXiv:2007.03898, §3.1 and Fig. 3; the layer
choices follow the official code (NVlabs/NVAE ``neural_operations.py``, architecture ``res_mbconv``).

- Every cell outputs ``skip(s) + 0.1 * residual(s)``; the skip is the identity, a factorised reduce (stride 2) or a
  nearest upsample + 1×1 conv (upsampling), so a deep stack starts close to the identity map.
- Encoder cells (``res_bnswish`` ×2): BN → Swish → Conv3×3 → BN → Swish → Conv3×3 → SE.
- Generative cells (``mconv``): BN → Conv1×1 (expand ×6, ×3 in post-processing) → BN-Swish → depthwise Conv5×5 →
  BN-Swish → Conv1×1 → BN → SE; MobileNetV2's inverted residual, which widens the receptive field cheaply.
- :class:`Conv2d` carries NVAE's weight normalisation (a learned log-norm per output channel); the 1×1 and
  depthwise convolutions inside the inverted residual skip it, as in the official code. The spectral regulariser
  (:mod:`kexue.losses.vae`) reads every :class:`Conv2d`'s :meth:`Conv2d.normalized_weight`.
- BatchNorm uses momentum 0.05 and eps 1e-5. :class:`BNSwish` can recompute its output in the backward pass
  (gradient checkpointing "at the BN-Swish layers", which Su reports saves ≈18% memory); the batch statistics are
  computed once outside the checkpoint, so the running averages are updated exactly once per step.
"""

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

BN_MOMENTUM = 0.05
BN_EPS = 1e-5
RESIDUAL_SCALE = 0.1  # every cell: skip + 0.1 * residual

# cell kind -> (branch, stride); stride 2 halves the resolution and doubles the channels, -1 does the reverse
CELL_KINDS = {
    "normal_pre": ("res_bnswish", 1), "down_pre": ("res_bnswish", 2),
    "normal_enc": ("res_bnswish", 1), "down_enc": ("res_bnswish", 2),
    "normal_dec": ("mconv_e6k5", 1), "up_dec": ("mconv_e6k5", -1),
    "normal_post": ("mconv_e3k5", 1), "up_post": ("mconv_e3k5", -1),
}


# --- convolutions and activations --------------------------------------------------------------------------------


class Conv2d(nn.Conv2d):
    """``nn.Conv2d`` with NVAE's weight normalisation ``W = exp(g) · V / ||V||`` (norm per output channel).

    Args:
        weight_norm: learn the log-norm ``g`` (``[C_out, 1, 1, 1]``, initialised to ``log ||V|| + 0.01``) instead
            of using ``V`` directly.
        Other arguments as for ``nn.Conv2d`` (bias defaults to True here).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 groups: int = 1, bias: bool = True, weight_norm: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=bias)
        self.log_weight_norm = None
        if weight_norm:
            norm = self.weight.detach().flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            self.log_weight_norm = nn.Parameter(torch.log(norm + 1e-2))

    def normalized_weight(self) -> torch.Tensor:
        """The weight the convolution applies, ``[C_out, C_in / groups, k, k]`` (after weight normalisation)."""
        if self.log_weight_norm is None:
            return self.weight
        norm = self.weight.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        return self.log_weight_norm.exp() * self.weight / (norm + 1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.normalized_weight(), self.bias, self.stride, self.padding, self.dilation, self.groups)


def _bn_swish(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
              eps: float) -> torch.Tensor:
    """Swish(BN(x)) from given batch statistics: a pure function, so it can be recomputed in the backward pass.
    The per-channel affine map is formed in float32 (x may be half precision under autocast)."""
    scale = weight.float() * torch.rsqrt(var.float() + eps)
    shift = bias.float() - mean.float() * scale
    return F.silu(torch.addcmul(shift.view(1, -1, 1, 1), x, scale.view(1, -1, 1, 1)).to(x.dtype))


class BNSwish(nn.Module):
    """BatchNorm2d (momentum 0.05, eps 1e-5) followed by Swish, ``[B, C, H, W] -> [B, C, H, W]``.

    With ``checkpoint = True`` (set by ``NVAEConfig.checkpointing``) and gradients enabled in training mode, only the
    input is kept for the backward pass and the normalised and activated tensors are recomputed there. The batch
    mean and variance are computed (and the running averages updated) outside the recomputed region, so the module
    behaves exactly as without checkpointing.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.checkpoint = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn = self.bn
        if not (self.checkpoint and self.training and torch.is_grad_enabled()):
            return F.silu(bn(x))
        var, mean = torch.var_mean(x, dim=(0, 2, 3), correction=0)
        with torch.no_grad():  # what nn.BatchNorm2d does in training mode (unbiased variance for the running one)
            n = x.numel() // x.shape[1]
            momentum = BN_MOMENTUM if bn.momentum is not None else 1.0 / (int(bn.num_batches_tracked) + 1)
            bn.running_mean.lerp_(mean.detach().to(bn.running_mean.dtype), momentum)
            bn.running_var.lerp_((var.detach() * n / max(n - 1, 1)).to(bn.running_var.dtype), momentum)
            bn.num_batches_tracked.add_(1)
        return checkpoint(_bn_swish, x, mean, var, bn.weight, bn.bias, bn.eps, use_reentrant=False)


def _batchnorm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class SqueezeExcitation(nn.Module):
    """Channel gating: ``x * sigmoid(FC(ReLU(FC(mean_hw x))))`` with a bottleneck of ``max(C // 16, 4)`` units."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = max(channels // 16, 4)
        self.fc = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=(2, 3)))  # [B, C]
        return x * gate[:, :, None, None]


# --- skip paths --------------------------------------------------------------------------------------------------


class FactorizedReduce(nn.Module):
    """Stride-2 skip, ``[B, C_in, H, W] -> [B, C_out, H/2, W/2]``: Swish, then four 1×1 stride-2 convolutions on the
    input shifted by (0, 0), (1, 1), (0, 1) and (1, 0) pixels, concatenated, so every input pixel is seen."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        quarter = out_channels // 4
        sizes = [quarter, quarter, quarter, out_channels - 3 * quarter]
        self.convs = nn.ModuleList(Conv2d(in_channels, c, 1, stride=2) for c in sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.silu(x)
        fmt = torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format
        shifted = (x, *(v.contiguous(memory_format=fmt) for v in (x[:, :, 1:, 1:], x[:, :, :, 1:], x[:, :, 1:, :])))
        return torch.cat([conv(s) for conv, s in zip(self.convs, shifted, strict=True)], dim=1)


class UpsampleSkip(nn.Module):
    """Upsampling skip, ``[B, C_in, H, W] -> [B, C_out, 2H, 2W]``: nearest ×2, then a 1×1 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


# --- residual branches -------------------------------------------------------------------------------------------


class ResBNSwish(nn.Module):
    """Encoder branch: (BN → Swish → Conv3×3) ×2; the first convolution carries the stride (1 or 2)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            BNSwish(in_channels), Conv2d(in_channels, out_channels, 3, stride=stride, padding=1),
            BNSwish(out_channels), Conv2d(out_channels, out_channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class InvertedResidual(nn.Module):
    """Generative branch (MobileNetV2 style): [nearest ×2] → BN → Conv1×1 (×``expansion``) → BN-Swish → depthwise
    Conv k×k → BN-Swish → Conv1×1 → BN. ``upsample`` puts the ×2 upsampling first (the ``up_*`` cells)."""

    def __init__(self, in_channels: int, out_channels: int, expansion: int, kernel_size: int = 5,
                 upsample: bool = False) -> None:
        super().__init__()
        hidden = in_channels * expansion
        layers: list[nn.Module] = [nn.Upsample(scale_factor=2, mode="nearest")] if upsample else []
        layers += [
            _batchnorm(in_channels),
            Conv2d(in_channels, hidden, 1, bias=False, weight_norm=False), BNSwish(hidden),
            Conv2d(hidden, hidden, kernel_size, padding=kernel_size // 2, groups=hidden, bias=False,
                   weight_norm=False), BNSwish(hidden),
            Conv2d(hidden, out_channels, 1, bias=False, weight_norm=False), _batchnorm(out_channels),
        ]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


# --- cells and combiners ----------------------------------------------------------------------------------------


class Cell(nn.Module):
    """A residual cell ``skip(s) + 0.1 · SE(branch(s))`` of one of the kinds in ``CELL_KINDS``.

    Args:
        in_channels: C_in. ``down_*`` cells output 2·C_in channels at half the resolution, ``up_*`` cells C_in / 2
            at twice the resolution, the others C_in at the same resolution.
        kind: e.g. ``"normal_enc"``, ``"down_pre"``, ``"up_dec"``.
        use_se: apply squeeze-excitation to the branch.
    """

    def __init__(self, in_channels: int, kind: str, use_se: bool = True) -> None:
        super().__init__()
        if kind not in CELL_KINDS:
            raise ValueError(f"kind must be one of {sorted(CELL_KINDS)}, got {kind!r}")
        branch, stride = CELL_KINDS[kind]
        self.kind = kind
        out_channels = {1: in_channels, 2: 2 * in_channels, -1: in_channels // 2}[stride]
        self.out_channels = out_channels
        if stride == 1:
            self.skip: nn.Module = nn.Identity()
        elif stride == 2:
            self.skip = FactorizedReduce(in_channels, out_channels)
        else:
            self.skip = UpsampleSkip(in_channels, out_channels)
        if branch == "res_bnswish":
            self.branch: nn.Module = ResBNSwish(in_channels, out_channels, max(stride, 1))
        else:
            expansion = 6 if branch == "mconv_e6k5" else 3
            self.branch = InvertedResidual(in_channels, out_channels, expansion, 5, upsample=stride == -1)
        self.se = SqueezeExcitation(out_channels) if use_se else nn.Identity()

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return self.skip(s) + RESIDUAL_SCALE * self.se(self.branch(s))


class EncoderCombiner(nn.Module):
    """Merges an encoder feature with the decoder state for a posterior head: ``x_enc + Conv1×1(s_dec)``."""

    def __init__(self, enc_channels: int, dec_channels: int) -> None:
        super().__init__()
        self.conv = Conv2d(dec_channels, enc_channels, 1)

    def forward(self, x_enc: torch.Tensor, s_dec: torch.Tensor) -> torch.Tensor:
        return x_enc + self.conv(s_dec)


class DecoderCombiner(nn.Module):
    """Feeds a latent sample into the decoder state: ``Conv1×1([s; z])``, ``[B, C + C_z, H, W] -> [B, C, H, W]``."""

    def __init__(self, dec_channels: int, latent_channels: int) -> None:
        super().__init__()
        self.conv = Conv2d(dec_channels + latent_channels, dec_channels, 1)

    def forward(self, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([s, z], dim=1))
