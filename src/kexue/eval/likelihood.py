"""Importance-weighted log-likelihood (nats) and bits per dimension for latent-variable models.

Reference: Burda, Grosse and Salakhutdinov, "Importance Weighted Autoencoders", arXiv:1509.00519; NVAE
(arXiv:2007.03898) reports its test NLL this way with 1000 samples.

For a model with prior p(z), decoder p(x|z) and encoder q(z|x), and K samples z_k ~ q(z|x),

    log p(x) ≥ L_K(x) = log (1/K) Σ_k exp(log p(x|z_k) + log p(z_k) − log q(z_k|x)),

with E[L_1] the ELBO, E[L_K] non-decreasing in K, and L_K → log p(x) as K → ∞. The model is seen only through a
callable that draws K samples for a batch and returns the three log-densities, so any VAE fits.

- Samples are drawn in chunks and combined with a running ``logaddexp``, so K = 1000 on a big batch needs the
  memory of one chunk; the one-shot :func:`iw_log_likelihood` on all K at once is its slow twin.
- Everything is accumulated in float64 (log-weights of image models are in the thousands of nats).
"""

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch

from kexue._progress import progress

# ``log_weights(x, k)`` -> (log p(x|z), log p(z), log q(z|x)), each [k, B] for a batch x of B examples.
LogWeightsFn = Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


def _check_terms(log_px_given_z: torch.Tensor, log_pz: torch.Tensor, log_qz_given_x: torch.Tensor,
                 k: int | None = None, b: int | None = None) -> torch.Tensor:
    """The log importance weights ``[K, B]`` (float64), after checking the three terms agree in shape."""
    terms = {"log_px_given_z": log_px_given_z, "log_pz": log_pz, "log_qz_given_x": log_qz_given_x}
    for name, t in terms.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.dim() != 2:
            raise ValueError(f"{name} must have shape [K, B] (samples x examples), got {tuple(t.shape)}")
    shapes = {tuple(t.shape) for t in terms.values()}
    if len(shapes) != 1:
        raise ValueError(f"log_px_given_z, log_pz and log_qz_given_x must have the same shape [K, B], got "
                         f"{', '.join(f'{n} {tuple(t.shape)}' for n, t in terms.items())}")
    shape = shapes.pop()
    if (k is not None and shape[0] != k) or (b is not None and shape[1] != b):
        raise ValueError(f"log_weights returned terms of shape {shape}, expected [{k}, {b}] (samples, batch)")
    log_w = log_px_given_z.double() + log_pz.double() - log_qz_given_x.double()
    if torch.isnan(log_w).any() or torch.isposinf(log_w).any():
        raise ValueError("log importance weights contain NaN or +inf; check the model's log-densities")
    return log_w


def iw_log_likelihood(log_px_given_z: torch.Tensor, log_pz: torch.Tensor, log_qz_given_x: torch.Tensor) -> torch.Tensor:
    """The K-sample importance-weighted bound L_K per example, from all K samples at once.

    Args:
        log_px_given_z, log_pz, log_qz_given_x: ``[K, B]`` log-densities (nats) at z_k ~ q(z|x_b).

    Returns:
        ``[B]`` float64: logsumexp_k(log w_k) − log K.
    """
    log_w = _check_terms(log_px_given_z, log_pz, log_qz_given_x)
    return torch.logsumexp(log_w, 0) - math.log(log_w.shape[0])


def iw_log_likelihood_chunked(log_weights: LogWeightsFn, x: torch.Tensor, num_samples: int,
                              chunk_size: int = 100) -> torch.Tensor:
    """L_K per example for one batch, drawing the K samples in chunks and combining them with ``logaddexp``.

    Args:
        log_weights: ``log_weights(x, k) -> (log p(x|z), log p(z), log q(z|x))``, each ``[k, B]``.
        x: a batch of B examples (any shape ``[B, ...]``).
        num_samples: K.
        chunk_size: samples per call of ``log_weights``.

    Returns:
        ``[B]`` float64 estimates of log p(x).
    """
    if num_samples < 1 or chunk_size < 1:
        raise ValueError(f"num_samples and chunk_size must be >= 1, got {num_samples} and {chunk_size}")
    running = None
    done = 0
    while done < num_samples:
        k = min(chunk_size, num_samples - done)
        log_w = _check_terms(*log_weights(x, k), k=k, b=len(x))
        part = torch.logsumexp(log_w, 0)  # [B]
        running = part if running is None else torch.logaddexp(running, part)
        done += k
    return running - math.log(num_samples)


def bits_per_dim(nll_nats: float | torch.Tensor, num_dims: int) -> float | torch.Tensor:
    """Convert a negative log-likelihood per example (nats) to bits per dimension: nll / (D · ln 2).

    For continuous densities on data rescaled from 0..255 to [0, 1], add D · ln 256 to the NLL first (or score the
    data on its 0..255 scale); for discrete likelihoods (binarised MNIST, discretised logistics) no offset applies.
    """
    if num_dims < 1:
        raise ValueError(f"num_dims must be >= 1, got {num_dims}")
    return nll_nats / (num_dims * math.log(2))


@torch.no_grad()
def importance_weighted_nll(log_weights: LogWeightsFn, data: torch.Tensor | Iterable[torch.Tensor], *,
                            num_samples: int = 1000, chunk_size: int = 100, batch_size: int = 100,
                            num_dims: int | None = None, desc: str = "IW-NLL") -> dict[str, Any]:
    """Importance-weighted NLL over a data set, batched, with a progress bar.

    Args:
        log_weights: ``log_weights(x, k)`` for a batch ``x`` of B examples returns ``(log p(x|z), log p(z),
            log q(z|x))``, each ``[k, B]`` nats, with fresh samples z ~ q(z|x) on every call.
        data: a tensor ``[N, ...]`` (split into ``batch_size`` batches) or an iterable of batches.
        num_samples: K importance samples per example (1 gives the ELBO; NVAE uses 1000).
        chunk_size: samples drawn per call.
        batch_size: examples per batch when ``data`` is a tensor.
        num_dims: data dimensions per example, to also report bits/dim.
        desc: progress-bar label.

    Returns:
        ``{"nll_nats", "nll_std_err", "bits_per_dim" (if num_dims), "num_examples", "num_samples",
        "log_px" (float64 [N])}``; ``nll_std_err`` is the standard error over examples.
    """
    if isinstance(data, torch.Tensor):
        if len(data) == 0:
            raise ValueError("data is empty")
        batches: Iterable[torch.Tensor] = data.split(batch_size)
        total = math.ceil(len(data) / batch_size)
    else:
        batches, total = data, None
    estimates = []
    bar = progress(batches, total=total, desc=desc, unit="batch")
    for x in bar:
        est = iw_log_likelihood_chunked(log_weights, x, num_samples, chunk_size)
        estimates.append(est.cpu())
        bar.set_postfix(nll=f"{-torch.cat(estimates).mean().item():.3f}")
    if not estimates:
        raise ValueError("data yielded no batches")
    log_px = torch.cat(estimates)
    n = len(log_px)
    out = {
        "nll_nats": -log_px.mean().item(),
        "nll_std_err": (log_px.std().item() / math.sqrt(n)) if n > 1 else math.nan,
        "num_examples": n,
        "num_samples": num_samples,
        "log_px": log_px,
    }
    if num_dims is not None:
        out["bits_per_dim"] = bits_per_dim(out["nll_nats"], num_dims)
    return out
