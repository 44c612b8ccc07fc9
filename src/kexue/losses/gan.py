"""Critic and generator objectives of the WGAN family, and the Lipschitz constraints (posts 6280, 6051, 6139, 6163).

Sign convention: a *critic* f is high on real data (WGAN). The energy view of post 1 uses U = -f.

- ``wgan_critic_loss`` / ``wgan_generator_loss``: E_q f - E_p f, and -E_q f.
- Lipschitz constraints: ``clip_weights_`` (original WGAN), ``gradient_penalty`` (WGAN-GP, two- or one-sided),
  ``gradient_power_penalty`` (zero-centred / WGAN-div: k E||grad f||^p), and ``spectral_normalize`` (wraps
  ``torch.nn.utils.parametrizations.spectral_norm`` over a whole network).
- ``gan_qp_critic_loss`` / ``gan_qp_generator_loss``: GAN-QP's quadratic potential (post 6163).

Gradient norms are **per sample, over all of a sample's coordinates** (C, H and W together for images); 4 of 5
peer libraries took the norm over one axis only or over the whole batch, which changes what is penalised.
"""

from collections.abc import Callable

import torch
from torch import nn

Critic = Callable[[torch.Tensor], torch.Tensor]


def _scores(critic: Critic, x: torch.Tensor) -> torch.Tensor:
    out = critic(x)
    if out.shape != (x.shape[0],) and out.shape != (x.shape[0], 1):
        raise ValueError(f"the critic must return one score per sample, [B] or [B, 1]; got {tuple(out.shape)} for "
                         f"a batch of {x.shape[0]}")
    return out.reshape(-1)


def wgan_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """E_q[f] - E_p[f]: minimising it makes f high on real (p) and low on generated (q) samples."""
    return fake_scores.mean() - real_scores.mean()


def wgan_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    """-E_q[f]: the generator raises the critic's score of its samples."""
    return -fake_scores.mean()


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float) -> None:
    """Clamp every parameter of ``module`` to [-c, c] in place (call after each critic step)."""
    if not c > 0:
        raise ValueError(f"the clipping bound c must be > 0, got {c}")
    for p in module.parameters():
        p.clamp_(-c, c)


def interpolate(real: torch.Tensor, fake: torch.Tensor, *, generator: torch.Generator | None = None
                ) -> torch.Tensor:
    """x_hat = eps x_r + (1 - eps) x_f with one eps ~ U[0, 1] **per sample** (broadcast over its coordinates).

    Args:
        real, fake: ``[B, ...]`` of the same shape.
    """
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator, dtype=real.dtype,
                     device=real.device)
    return eps * real + (1 - eps) * fake


def gradient_norms(critic: Critic, x: torch.Tensor, *, create_graph: bool = True) -> torch.Tensor:
    """||grad_x f(x_b)||_2 for each sample b, over all non-batch dimensions.

    Args:
        x: ``[B, ...]``; need not require grad (a leaf copy is made).
        create_graph: keep the graph so that a penalty on the norms can be back-propagated (double backprop).

    Returns:
        ``[B]`` norms.
    """
    x = x.detach().requires_grad_(True)
    scores = _scores(critic, x)
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=create_graph)
    # Samples are independent through the critic (no batch norm in a critic), so d(sum f)/dx_b = df(x_b)/dx_b.
    return grad.flatten(1).norm(dim=1)


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, *, one_sided: bool = False,
                     generator: torch.Generator | None = None) -> torch.Tensor:
    """WGAN-GP's E[(||grad f(x_hat)|| - 1)^2] on per-sample interpolates (multiply by lambda, e.g. 10, yourself).

    Args:
        real, fake: ``[B, ...]`` batches (``fake`` is detached here).
        one_sided: penalise only norms above 1: E[max(||grad f|| - 1, 0)^2].
    """
    norms = gradient_norms(critic, interpolate(real.detach(), fake.detach(), generator=generator))
    excess = norms - 1
    if one_sided:
        excess = excess.clamp_min(0)
    return excess.pow(2).mean()


def gradient_power_penalty(critic: Critic, x: torch.Tensor, *, k: float = 2.0, p: float = 6.0) -> torch.Tensor:
    """Zero-centred penalty k E_x ||grad f(x)||^p (WGAN-div: k = 2, p = 6; energy GAN on real data: p = 2)."""
    if not (k >= 0 and p > 0):
        raise ValueError(f"need k >= 0 and p > 0, got k={k}, p={p}")
    return k * gradient_norms(critic, x).pow(p).mean()


def spectral_normalize(module: nn.Module, n_power_iterations: int = 1) -> nn.Module:
    """Apply spectral normalisation to every Linear and Conv layer of ``module`` (in place; returns it).

    Each weight W is replaced by W / sigma(W) with sigma estimated by persistent power iteration, so with
    activations of slope <= 1 the network is 1-Lipschitz (up to the estimate).
    """
    layers = [m for m in module.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d |
                                                        nn.ConvTranspose2d)]
    if not layers:
        raise ValueError("spectral_normalize found no Linear or Conv layer in the module")
    for layer in layers:
        nn.utils.parametrizations.spectral_norm(layer, n_power_iterations=n_power_iterations)
    return module


def _distance(real: torch.Tensor, fake: torch.Tensor, distance: str) -> torch.Tensor:
    diff = (real - fake).flatten(1)
    if distance == "l1":
        return diff.abs().sum(1)
    if distance == "l2":
        return diff.norm(dim=1)
    if distance == "mse":  # per-coordinate mean squared distance (the O-GAN code's choice)
        return diff.pow(2).mean(1)
    raise ValueError(f"distance must be 'l1', 'l2' or 'mse', got {distance!r}")


def gan_qp_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor, real: torch.Tensor,
                       fake: torch.Tensor, *, lam: float = 10.0, distance: str = "l1") -> torch.Tensor:
    """GAN-QP critic loss: -E[dT - dT^2 / (2 lam d(x_r, x_f))], dT = T(x_r) - T(x_f), pairs matched by index.

    The quadratic term replaces the hard Lipschitz constraint; it belongs to the critic only.

    Args:
        real_scores, fake_scores: ``[B]``; real, fake: ``[B, ...]`` (the distance is taken without gradient to x).
        lam: the quadratic weight lambda; distance: ``"l1"``, ``"l2"`` or ``"mse"``.
    """
    if not lam > 0:
        raise ValueError(f"lam must be > 0, got {lam}")
    diff = real_scores.reshape(-1) - fake_scores.reshape(-1)
    dist = _distance(real.detach(), fake.detach(), distance).clamp_min(1e-12)
    return (-diff + diff.pow(2) / (2 * lam * dist)).mean()


def gan_qp_generator_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    """GAN-QP generator loss E[T(x_r) - T(x_f)] (no quadratic term)."""
    return (real_scores.reshape(-1) - fake_scores.reshape(-1)).mean()
