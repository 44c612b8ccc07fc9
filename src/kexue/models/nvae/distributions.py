"""The distributions NVAE uses: clamped Normals for the latents, Bernoulli and discretised logistic mixtures for pixels.

Vahdat & Kautz, arXiv:2007.03898, §3.2 (residual Normal) and §5; parameter clamps and likelihoods as in the official
code (NVlabs/NVAE ``distributions.py``), with a slow float64 twin for the mixture of logistics.

- :class:`Normal` soft-clamps its raw parameters, ``μ = 5 tanh(μ_raw / 5)``, ``log σ = 5 tanh(s_raw / 5)``,
  ``σ = exp(log σ) + 0.01``, and a sampling temperature multiplies σ. A residual posterior is built by adding the
  posterior head's raw outputs to the prior's *before* the clamp (so σ_q = σ_p · Δσ up to the clamp).
- :class:`Bernoulli` is the likelihood of (dynamically) binarised images and refuses anything but 0/1 pixels.
- :class:`DiscretizedLogisticMixture` is PixelCNN++'s discretised mixture of logistics, for any number of channels:
  channel c's mean is shifted linearly by the channels before it (``C(C-1)/2`` coefficients per component), pixels
  live on the grid ``k / (2^bits - 1)``, and the two edge bins take the logistic's tails.
  :func:`discretized_logistic_mixture_log_prob_reference` is the same density computed the obvious way in float64.
"""

import math

import torch
import torch.nn.functional as F

# --- latents -----------------------------------------------------------------------------------------------------


def soft_clamp(x: torch.Tensor, bound: float = 5.0) -> torch.Tensor:
    """``bound · tanh(x / bound)``: differentiable, ≈ x near 0, never leaves (-bound, bound)."""
    return bound * torch.tanh(x / bound)


class Normal:
    """A diagonal Normal with mean ``mu`` and standard deviation ``sigma`` (same shape, any shape).

    Build it from a network's raw outputs with :meth:`from_raw` (NVAE's clamps); ``Normal(mu, sigma)`` takes the
    parameters as they are (the standard Normal prior of the top group).
    """

    def __init__(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        self.mu, self.sigma = mu, sigma

    @classmethod
    def from_raw(cls, mu: torch.Tensor, log_sigma: torch.Tensor, temperature: float = 1.0) -> "Normal":
        """``μ = 5 tanh(mu/5)``, ``σ = temperature · (exp(5 tanh(log_sigma/5)) + 0.01)``."""
        sigma = torch.exp(soft_clamp(log_sigma.float())) + 1e-2
        return cls(soft_clamp(mu.float()), sigma * temperature if temperature != 1.0 else sigma)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A reparameterised sample ``μ + σ ε``, ε ~ N(0, I) (from ``generator`` if given)."""
        eps = torch.randn(self.mu.shape, generator=generator, device=self.mu.device, dtype=self.mu.dtype)
        return self.mu + self.sigma * eps

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        """Elementwise log-density (nats), same shape as ``z``."""
        u = (z - self.mu) / self.sigma
        return -0.5 * u * u - 0.5 * math.log(2 * math.pi) - torch.log(self.sigma)


# --- pixel likelihoods ---------------------------------------------------------------------------------------------


class Bernoulli:
    """Independent Bernoulli pixels with ``logits`` ``[B, C, H, W]``."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits.float()

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-likelihood per pixel position, summed over channels: ``[B, C, H, W] -> [B, H, W]`` (nats).

        Raises:
            ValueError: if ``x`` has a value other than 0 or 1 (binarise first, e.g. ``torch.bernoulli(x)`` for
                dynamically binarised MNIST) or its shape differs from the logits'.
        """
        if x.shape != self.logits.shape:
            raise ValueError(f"x has shape {tuple(x.shape)}, the Bernoulli logits {tuple(self.logits.shape)}")
        binary = (x == 0) | (x == 1)
        if not bool(binary.all()):
            bad = x[~binary]
            raise ValueError(f"the Bernoulli likelihood needs binary pixels (0 or 1); x has {bad.numel()} other "
                             f"values (e.g. {bad.flatten()[0].item():.4g}); binarise the images first, e.g. "
                             "x = torch.bernoulli(x) for dynamically binarised MNIST")
        return -F.binary_cross_entropy_with_logits(self.logits, x.to(self.logits.dtype), reduction="none").sum(1)

    @property
    def mean(self) -> torch.Tensor:
        """Pixel probabilities ``[B, C, H, W]``."""
        return torch.sigmoid(self.logits)

    def sample(self, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Binary pixels ``[B, C, H, W]`` (``temperature`` is accepted for a common interface and ignored)."""
        return torch.bernoulli(self.mean, generator=generator)


def logistic_mixture_channels(image_channels: int, num_mix: int) -> int:
    """Output channels a :class:`DiscretizedLogisticMixture` needs: ``num_mix · (1 + 2C + C(C-1)/2)``."""
    return num_mix * (1 + 2 * image_channels + image_channels * (image_channels - 1) // 2)


def _split_mixture(params: torch.Tensor, image_channels: int, num_mix: int):
    """``[B, M(1 + 2C + P), H, W]`` -> logits ``[B, M, H, W]``, means / log-scales ``[B, C, M, H, W]``, and the
    channel-mixing coefficients ``[B, P, M, H, W]`` (pairs (c, c') with c' < c, in order (1,0), (2,0), (2,1), ...)."""
    b, k, h, w = params.shape
    c, m = image_channels, num_mix
    pairs = c * (c - 1) // 2
    if k != logistic_mixture_channels(c, m):
        raise ValueError(f"params have {k} channels; a {m}-component mixture of {c}-channel logistics needs "
                         f"{logistic_mixture_channels(c, m)}")
    logits, means, log_scales, coeffs = torch.split(params, [m, c * m, c * m, pairs * m], dim=1)
    means = means.reshape(b, c, m, h, w)
    log_scales = log_scales.reshape(b, c, m, h, w).clamp(min=-7.0)  # σ >= e^-7, as in PixelCNN++ and NVAE
    coeffs = torch.tanh(coeffs.reshape(b, pairs, m, h, w))
    return logits, means, log_scales, coeffs


def _conditional_means(means: torch.Tensor, coeffs: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Channel c's mean plus Σ_{c'<c} coeff(c, c') · x_{c'}; ``x`` is ``[B, C, 1, H, W]`` in [-1, 1]."""
    out, pair = [means[:, 0]], 0
    for c in range(1, means.shape[1]):
        shift = 0
        for prev in range(c):
            shift = shift + coeffs[:, pair] * x[:, prev]
            pair += 1
        out.append(means[:, c] + shift)
    return torch.stack(out, dim=1)


def _check_pixels(x: torch.Tensor, num_bits: int) -> torch.Tensor:
    """Bin index ``[B, C, H, W]`` of pixels in [0, 1] on the grid k / (2^bits - 1); an error for anything else."""
    top = 2**num_bits - 1
    if bool(((x < 0) | (x > 1)).any()):
        raise ValueError(f"pixels must lie in [0, 1], got values in [{x.min().item():.4g}, {x.max().item():.4g}]")
    k = torch.round(x * top)
    if bool(((x * top - k).abs() > 1e-3).any()):
        raise ValueError(f"pixels must lie on the {num_bits}-bit grid k / {top} (quantise them first, e.g. with "
                         "kexue.models.nvae.quantize)")
    return k


class DiscretizedLogisticMixture:
    """A discretised mixture of ``num_mix`` logistics per pixel with autoregressive channel means.

    Args:
        params: ``[B, num_mix · (1 + 2C + C(C-1)/2), H, W]`` raw network outputs.
        image_channels: C.
        num_mix: mixture components (NVAE: 10).
        num_bits: pixel depth; values live on ``k / (2^num_bits - 1)``, k = 0..2^num_bits - 1 (8, or 5 for the
            256-px sets).
    """

    def __init__(self, params: torch.Tensor, image_channels: int, num_mix: int = 10, num_bits: int = 8) -> None:
        if not 1 <= num_bits <= 16:
            raise ValueError(f"num_bits must be in 1..16, got {num_bits}")
        self.image_channels, self.num_mix, self.num_bits = image_channels, num_mix, num_bits
        self.logits, self.means, self.log_scales, self.coeffs = _split_mixture(params.float(), image_channels,
                                                                               num_mix)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probability of each pixel position (all channels jointly), ``[B, C, H, W] -> [B, H, W]`` (nats).

        Raises:
            ValueError: pixels outside [0, 1] or off the ``num_bits`` grid.
        """
        k = _check_pixels(x, self.num_bits)
        top = 2**self.num_bits - 1
        xs = (2 * x.float() - 1).unsqueeze(2)  # [B, C, 1, H, W] in [-1, 1]
        centered = xs - _conditional_means(self.means, self.coeffs, xs)  # [B, C, M, H, W]
        inv_s = torch.exp(-self.log_scales)
        half_bin = 1.0 / top  # bins are 2 / top wide on [-1, 1]
        plus_in = inv_s * (centered + half_bin)
        min_in = inv_s * (centered - half_bin)
        log_cdf_plus = plus_in - F.softplus(plus_in)  # log σ(plus_in): the lowest bin takes the left tail
        log_one_minus_cdf_min = -F.softplus(min_in)  # log(1 - σ(min_in)): the highest bin takes the right tail
        cdf_delta = torch.sigmoid(plus_in) - torch.sigmoid(min_in)
        # where the bin's mass underflows float32, use density × bin width at the bin's centre instead
        mid_in = inv_s * centered
        log_pdf_mid = mid_in - self.log_scales - 2 * F.softplus(mid_in)
        log_mid = torch.where(cdf_delta > 1e-5, torch.log(cdf_delta.clamp(min=1e-12)),
                              log_pdf_mid + math.log(2 * half_bin))
        k = k.unsqueeze(2)
        log_bins = torch.where(k == 0, log_cdf_plus, torch.where(k == top, log_one_minus_cdf_min, log_mid))
        log_mix = log_bins.sum(1) + F.log_softmax(self.logits, dim=1)  # [B, M, H, W]
        return torch.logsumexp(log_mix, dim=1)

    def sample(self, temperature: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images ``[B, C, H, W]`` in [0, 1]: a component by Gumbel-max on ``logits / t``, then logistic noise
        scaled by ``t`` (not rounded to the grid)."""
        m = self.logits.shape[1]
        u = torch.rand(self.logits.shape, generator=generator, device=self.logits.device).clamp(1e-5, 1 - 1e-5)
        pick = (self.logits / max(temperature, 1e-6) - torch.log(-torch.log(u))).argmax(1)  # [B, H, W]
        one_hot = F.one_hot(pick, m).permute(0, 3, 1, 2).unsqueeze(1).float()  # [B, 1, M, H, W]
        means = (self.means * one_hot).sum(2)
        log_scales = (self.log_scales * one_hot).sum(2)
        coeffs = (self.coeffs * one_hot).sum(2)
        u = torch.rand(means.shape, generator=generator, device=means.device).clamp(1e-5, 1 - 1e-5)
        noisy = means + torch.exp(log_scales) * temperature * (torch.log(u) - torch.log1p(-u))
        return self._mix_channels(noisy, coeffs)

    def mean(self) -> torch.Tensor:
        """A point estimate ``[B, C, H, W]`` in [0, 1]: the mixture-weighted component means, channels mixed."""
        weights = torch.softmax(self.logits, dim=1).unsqueeze(1)  # [B, 1, M, H, W]
        return self._mix_channels((self.means * weights).sum(2), (self.coeffs * weights).sum(2))

    def _mix_channels(self, values: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
        out, pair = [], 0
        for c in range(self.image_channels):
            v = values[:, c]
            for prev in range(c):
                v = v + coeffs[:, pair] * out[prev]
                pair += 1
            out.append(v.clamp(-1, 1))
        return (torch.stack(out, 1) + 1) / 2


def discretized_logistic_mixture_log_prob_reference(params: torch.Tensor, x: torch.Tensor, image_channels: int,
                                                    num_mix: int, num_bits: int) -> torch.Tensor:
    """Slow twin of :meth:`DiscretizedLogisticMixture.log_prob`: explicit loops, float64, ``log(CDF(b+) - CDF(b-))``
    with CDF(-inf) = 0 and CDF(+inf) = 1 at the edge bins, and no underflow fallback. ``[B, H, W]`` nats."""
    logits, means, log_scales, coeffs = _split_mixture(params.double(), image_channels, num_mix)
    top = 2**num_bits - 1
    x = x.double()
    xs = 2 * x - 1
    b, _, h, w = x.shape
    total = torch.zeros(b, num_mix, h, w, dtype=torch.float64, device=x.device)
    for j in range(num_mix):
        pair = 0
        for c in range(image_channels):
            mean = means[:, c, j]
            for prev in range(c):
                mean = mean + coeffs[:, pair, j] * xs[:, prev]
                pair += 1
            s = torch.exp(log_scales[:, c, j])
            k = torch.round(x[:, c] * top)
            upper = torch.where(k == top, torch.ones_like(mean), torch.sigmoid((xs[:, c] + 1 / top - mean) / s))
            lower = torch.where(k == 0, torch.zeros_like(mean), torch.sigmoid((xs[:, c] - 1 / top - mean) / s))
            total[:, j] += torch.log(upper - lower)
    return torch.logsumexp(total + torch.log_softmax(logits, dim=1), dim=1)


def quantize(x: torch.Tensor, num_bits: int) -> torch.Tensor:
    """Reduce 8-bit images in [0, 1] (``uint8 / 255``) to ``num_bits``: ``floor(x · 255 / 2^(8 - bits)) / (2^bits - 1)``
    (NVAE's 5-bit pre-processing for the 256-px sets)."""
    if not 1 <= num_bits <= 8:
        raise ValueError(f"num_bits must be in 1..8, got {num_bits}")
    return torch.floor(torch.round(x * 255) / 2 ** (8 - num_bits)) / (2**num_bits - 1)
