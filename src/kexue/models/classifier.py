"""A small convolutional classifier whose penultimate layer is a feature space for offline image metrics.

FID, KID and precision/recall are defined on the features of a fixed network. Every GAN library fetches Inception-v3
weights at run time for them (``wasserstein-wgan.md`` §7.4), which cannot work offline and is a poor fit for 28x28
grey images anyway. kexue trains this network on MNIST or Fashion-MNIST instead (``kexue.eval.features``), as MEG's
``classifier_mnist.py`` and most MNIST GAN papers do; its scores are therefore on this network's scale only.

- Three conv blocks (3x3 conv, 2x2 max-pool, batch norm, ReLU), then one hidden linear layer: its ReLU output is the
  feature vector (``features``), the linear head on top gives the logits (``forward``), whose softmax serves as the
  classifier score and the labeller for mode counting.
- Input: float images in [0, 1], ``[N, C, H, W]``; the first batch norm absorbs the data's mean and scale, so no
  dataset statistics are baked into the caller.
- No training code here: the recipe lives in ``kexue.eval.features``.
"""

import itertools

import torch
from torch import nn

# --------------------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------------------


class ConvBlock(nn.Sequential):
    """3x3 conv (no bias: batch norm follows) -> 2x2 max-pool (halves H and W, floor) -> batch norm -> ReLU.

    Pooling before the norm and the ReLU runs those two on a quarter of the pixels, which matters on a CPU where
    they cost as much as the convolution itself.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.MaxPool2d(2),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------


class FeatureCNN(nn.Module):
    """Small CNN classifier with an exposed penultimate feature layer.

    Args:
        in_channels: image channels (1 for MNIST-like data).
        num_classes: number of classes (10 for MNIST / Fashion-MNIST).
        widths: output channels of the conv blocks; each block halves the spatial size.
        feature_dim: size of the penultimate (feature) layer.
        image_size: height = width of the input images, in pixels.
        dropout: dropout rate on the features before the head (training only).

    Attributes:
        num_features: ``feature_dim``; torchmetrics' FID reads it to size its state.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, ...] = (16, 32, 64),
                 feature_dim: int = 128, image_size: int = 28, dropout: float = 0.2) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2 or feature_dim < 1 or not widths:
            raise ValueError(f"FeatureCNN needs in_channels >= 1, num_classes >= 2, feature_dim >= 1 and at least "
                             f"one width; got {in_channels}, {num_classes}, {feature_dim}, {widths}")
        side = image_size
        for _ in widths:
            side //= 2
        if side < 1:
            raise ValueError(f"image_size={image_size} is too small for {len(widths)} pooling blocks")
        self.in_channels = in_channels
        self.image_size = image_size
        self.num_features = feature_dim
        chans = (in_channels, *widths)
        self.trunk = nn.Sequential(*[ConvBlock(a, b) for a, b in itertools.pairwise(chans)])
        self.hidden = nn.Linear(widths[-1] * side * side, feature_dim)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features.

        Args:
            x: images in [0, 1], ``[N, in_channels, image_size, image_size]``.

        Returns:
            ``[N, feature_dim]``, non-negative (post-ReLU).
        """
        h = self.trunk(x)  # [N, widths[-1], side, side]
        return torch.relu(self.hidden(h.flatten(1)))  # [N, feature_dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits ``[N, num_classes]`` for images ``[N, in_channels, image_size, image_size]`` in [0, 1]."""
        return self.head(self.dropout(self.features(x)))
