"""NVAE (post 7): a deep hierarchical VAE with grouped latents and a shared top-down tower (arXiv:2007.03898).

- :mod:`~kexue.models.nvae.model`: :class:`NVAEConfig` and :class:`NVAE` (encoder tower, shared top-down tower,
  sampling with temperature and BN re-estimation, ``encode``, importance-weight terms).
- :mod:`~kexue.models.nvae.cells`: weight-normalised convs, BN-Swish, SE, skip paths, residual cells, combiners.
- :mod:`~kexue.models.nvae.distributions`: clamped Normal, Bernoulli and discretised logistic-mixture likelihoods.
- :mod:`~kexue.models.nvae.flows`: optional inverse-autoregressive flow cells.

The objectives and schedules are in :mod:`kexue.losses.vae`.
"""

from kexue.models.nvae.distributions import (
    Bernoulli,
    DiscretizedLogisticMixture,
    Normal,
    logistic_mixture_channels,
    quantize,
)
from kexue.models.nvae.model import (
    NVAE,
    EncodedGroup,
    LatentGroup,
    NVAEConfig,
    NVAEOutput,
    count_parameters,
    latent_dims,
)

__all__ = [
    "NVAE",
    "Bernoulli",
    "DiscretizedLogisticMixture",
    "EncodedGroup",
    "LatentGroup",
    "NVAEConfig",
    "NVAEOutput",
    "Normal",
    "count_parameters",
    "latent_dims",
    "logistic_mixture_channels",
    "quantize",
]
