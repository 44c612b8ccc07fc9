"""Mode counting: StackedMNIST (modes covered, KL to uniform) and 2-D Gaussian mixtures (coverage, quality, KL).

Protocols (``energy-gan.md`` §4.3 and §5.4):

- **StackedMNIST** (Metz et al. 2017, arXiv:1611.02163; Srivastava et al. 2017, VEEGAN, arXiv:1705.07761; used by
  PacGAN and MEG): each of the ``n_stack`` channels of a sample is labelled by a pretrained MNIST classifier; the
  digit tuple is the sample's mode (10ⁿ modes). Draw 26·10ⁿ samples; report the number of non-empty modes and
  KL(p̂_modes ‖ uniform) over the 10ⁿ cells (empty cells add 0, since 0·log 0 = 0).
- **2-D mixtures** (VEEGAN / PacGAN; the exact protocol is recalled, not taken from a peer's code): each sample is
  assigned to its nearest centre; it is *high quality* if it lies within 3σ of that centre; a mode is *covered* when
  at least ``min_count`` high-quality samples fall on it (1 by default, as in PacGAN's grid experiments); the KL is
  taken between the histogram of high-quality samples over the modes and the uniform distribution.
"""

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from kexue.eval.features import FeatureNet, as_images

# --------------------------------------------------------------------------------------------------------------
# Histogram statistics
# --------------------------------------------------------------------------------------------------------------


def _as_labels(labels: Any, num_modes: int, name: str = "labels") -> torch.Tensor:
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if labels.dim() != 1 or labels.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of mode indices, got shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer mode indices, got dtype {labels.dtype}")
    labels = labels.long().cpu()
    if labels.min() < 0 or labels.max() >= num_modes:
        raise ValueError(f"{name} must lie in [0, {num_modes - 1}], got values in [{labels.min()}, {labels.max()}]")
    return labels


def kl_to_uniform(counts: Any) -> float:
    r"""KL(p̂ ‖ uniform) = Σ_m p̂_m log(p̂_m · M) in nats, for a histogram ``counts`` ``[M]`` (empty cells add 0).

    Returns ``inf`` for an all-zero histogram (there is no distribution to compare).
    """
    c = torch.as_tensor(np.asarray(counts), dtype=torch.float64)
    if c.dim() != 1 or (c < 0).any():
        raise ValueError(f"counts must be a 1-D array of non-negative counts, got shape {tuple(c.shape)}")
    total = c.sum()
    if total == 0:
        return math.inf
    p = c / total
    return torch.special.xlogy(p, p * len(c)).sum().item()


@dataclass
class ModeCount:
    """Result of counting modes over a label histogram.

    Attributes:
        covered: number of non-empty modes.
        num_modes: number of possible modes.
        kl: KL(p̂ ‖ uniform) in nats.
        num_samples: samples counted.
        counts: the histogram ``[num_modes]``.
        provenance: where the labels came from (for StackedMNIST: the feature network and its weights hash, the
            number of stacks and the protocol's sample count); empty for :func:`count_modes` on given labels.
    """

    covered: int
    num_modes: int
    kl: float
    num_samples: int
    counts: np.ndarray = field(repr=False)
    provenance: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The metrics record (without the histogram), with ``provenance`` when there is one."""
        out = {"modes_covered": self.covered, "num_modes": self.num_modes, "kl_to_uniform": self.kl,
               "num_samples": self.num_samples}
        if self.provenance:
            out["provenance"] = dict(self.provenance)
        return out


def count_modes(labels: Any, num_modes: int) -> ModeCount:
    """Histogram of integer mode labels ``[N]`` in [0, num_modes): non-empty modes and KL to uniform."""
    if num_modes < 1:
        raise ValueError(f"num_modes must be >= 1, got {num_modes}")
    labels = _as_labels(labels, num_modes)
    counts = torch.bincount(labels, minlength=num_modes).numpy()
    return ModeCount(int((counts > 0).sum()), num_modes, kl_to_uniform(counts), len(labels), counts)


def count_modes_reference(labels: Any, num_modes: int) -> ModeCount:
    """Slow twin of :func:`count_modes`: a Python ``Counter`` and an explicit sum for the KL."""
    labels = [int(v) for v in _as_labels(labels, num_modes)]
    hist = Counter(labels)
    n = len(labels)
    kl = sum((c / n) * math.log((c / n) * num_modes) for c in hist.values())
    counts = np.array([hist.get(m, 0) for m in range(num_modes)])
    return ModeCount(len(hist), num_modes, kl, n, counts)


# --------------------------------------------------------------------------------------------------------------
# StackedMNIST
# --------------------------------------------------------------------------------------------------------------


def stacked_num_samples(n_stack: int = 3) -> int:
    """The protocol's sample count, 26·10ⁿ (26,000 for 3 stacks)."""
    return 26 * 10**n_stack


def digits_to_mode(digits: Any) -> torch.Tensor:
    """Digit tuples ``[N, n_stack]`` (0..9, first channel most significant) -> mode indices ``[N]`` in [0, 10ⁿ)."""
    d = torch.as_tensor(np.asarray(digits) if not isinstance(digits, torch.Tensor) else digits)
    if d.dim() != 2 or d.is_floating_point() or (d < 0).any() or (d > 9).any():
        raise ValueError(f"digits must be an integer array [N, n_stack] with values 0..9, got shape {tuple(d.shape)}"
                         f" dtype {d.dtype}")
    weights = 10 ** torch.arange(d.shape[1] - 1, -1, -1)  # [n_stack]: 100, 10, 1 for three stacks
    return (d.long() * weights).sum(1)


def stacked_mnist_modes(images: Any, net: FeatureNet, batch_size: int = 2000) -> ModeCount:
    """Mode count of StackedMNIST samples, each channel labelled by the MNIST feature network.

    Args:
        images: ``[N, n_stack, 28, 28]``, uint8 or float in [0, 1]; use :func:`stacked_num_samples` samples.
        net: an MNIST feature network (:func:`kexue.eval.features.get_feature_net` with ``data="mnist"``).
        batch_size: images per classifier pass.

    Returns:
        The :class:`ModeCount` over 10ⁿ modes, its ``provenance`` naming the feature network, its weights hash,
        the number of stacks and the protocol's sample count (a run with fewer samples is recorded as such, since
        the KL's finite-sample bias grows as 10ⁿ / (2N)).
    """
    x = as_images(images, channels=None, name="images")  # [N, S, 28, 28]
    n, s = x.shape[:2]
    if net.provenance.get("data") not in (None, "mnist"):
        raise ValueError(f"stacked_mnist_modes needs an MNIST feature network, got one trained on "
                         f"{net.provenance.get('data')!r}")
    digits = net.predict(x.reshape(n * s, 1, *x.shape[2:]), batch_size).reshape(n, s)  # channel-wise labels
    result = count_modes(digits_to_mode(digits), 10**s)
    result.provenance = {"feature_net": net.provenance.get("feature_net"),
                         "weights_sha256": net.provenance.get("weights_sha256"),
                         "n_stack": s, "protocol_samples": stacked_num_samples(s)}
    return result


# --------------------------------------------------------------------------------------------------------------
# 2-D mixtures
# --------------------------------------------------------------------------------------------------------------


@dataclass
class MixtureModes:
    """Coverage of a 2-D Gaussian mixture by samples.

    Attributes:
        covered: modes with at least ``min_count`` high-quality samples.
        num_modes: number of centres.
        high_quality: share of samples within ``sigmas``·σ of their nearest centre.
        kl: KL(histogram of high-quality samples over modes ‖ uniform), nats; ``inf`` if there are none.
        num_samples: samples scored.
        counts: high-quality samples per mode ``[num_modes]``.
        provenance: the protocol's settings ``{"std", "sigmas", "min_count"}``.
    """

    covered: int
    num_modes: int
    high_quality: float
    kl: float
    num_samples: int
    counts: np.ndarray = field(repr=False)
    provenance: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """The metrics record (without the histogram), with the protocol's settings as ``provenance``."""
        return {"modes_covered": self.covered, "num_modes": self.num_modes, "high_quality": self.high_quality,
                "kl_to_uniform": self.kl, "num_samples": self.num_samples, "provenance": dict(self.provenance)}


def _mixture_inputs(samples: Any, centres: Any, std: float, sigmas: float,
                    min_count: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(np.asarray(samples) if not isinstance(samples, torch.Tensor) else samples).double().cpu()
    c = torch.as_tensor(np.asarray(centres) if not isinstance(centres, torch.Tensor) else centres).double().cpu()
    if x.dim() != 2 or len(x) == 0:
        raise ValueError(f"samples must have shape [N, D] with N > 0, got {tuple(x.shape)}")
    if c.dim() != 2 or c.shape[1] != x.shape[1] or len(c) == 0:
        raise ValueError(f"centres must have shape [K, {x.shape[1]}], got {tuple(c.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("samples contain NaN or infinite values")
    if not (std > 0 and sigmas > 0 and min_count >= 1):
        raise ValueError(f"need std > 0, sigmas > 0 and min_count >= 1, got {std}, {sigmas}, {min_count}")
    return x, c


def mixture_modes(samples: Any, centres: Any, std: float, *, sigmas: float = 3.0, min_count: int = 1) -> MixtureModes:
    """Modes covered, share of high-quality samples and KL for samples of a Gaussian mixture with equal std.

    Args:
        samples: ``[N, D]`` (D = 2 for the toy mixtures).
        centres: ``[K, D]`` the mixture's centres (in the same scale as the samples).
        std: the components' standard deviation (same scale).
        sigmas: a sample is high quality within ``sigmas * std`` of its nearest centre (3).
        min_count: high-quality samples a mode needs to count as covered (1).
    """
    x, c = _mixture_inputs(samples, centres, std, sigmas, min_count)
    dist = torch.cdist(x, c)  # [N, K]
    nearest_d, nearest = dist.min(1)
    good = nearest_d <= sigmas * std
    counts = torch.bincount(nearest[good], minlength=len(c)).numpy()
    return MixtureModes(int((counts >= min_count).sum()), len(c), good.double().mean().item(), kl_to_uniform(counts),
                        len(x), counts, {"std": std, "sigmas": sigmas, "min_count": min_count})


def mixture_modes_reference(samples: Any, centres: Any, std: float, *, sigmas: float = 3.0,
                            min_count: int = 1) -> MixtureModes:
    """Slow twin of :func:`mixture_modes`: a Python loop over samples and centres."""
    x, c = _mixture_inputs(samples, centres, std, sigmas, min_count)
    counts = np.zeros(len(c), dtype=np.int64)
    good = 0
    for point in x.tolist():
        dists = [math.dist(point, centre) for centre in c.tolist()]
        k = min(range(len(c)), key=dists.__getitem__)
        if dists[k] <= sigmas * std:
            good += 1
            counts[k] += 1
    return MixtureModes(int((counts >= min_count).sum()), len(c), good / len(x), kl_to_uniform(counts), len(x),
                        counts, {"std": std, "sigmas": sigmas, "min_count": min_count})
