r"""Objectives of the energy view of GANs: energy losses, the real-data score penalty, entropy via mutual information.

Su Jianlin, "能量视角下的GAN模型" parts 1–3 (kexue.fm/archives/6316, 6331, 6612); Kumar, Ozair, Goyal, Courville,
Bengio, "Maximum Entropy Generators for Energy-Based Models" (MEG, arXiv:1901.08508; EnGAN at ICLR 2019).

Convention: **low energy = real**; a WGAN critic :math:`f` is :math:`-U`.

- Energy (the critic): :func:`energy_loss` :math:`\mathbb E_p U - \mathbb E_q U`, with :func:`score_penalty`
  :math:`\lambda\,\mathbb E_p\|\nabla_x U\|^2` taken **on real samples only** and zero-centred (a pit bottom has zero
  slope); :func:`meg_energy_loss` puts the two together. Post 6316's penalty-free variants: :func:`hinge_energy_loss`
  and, for non-negative energies (an EBGAN autoencoder's error), :func:`margin_energy_loss`.
- Generator: :math:`\min_G \mathbb E_z U(G(z)) - w\,H(G(Z))` (:func:`meg_generator_loss`). For a deterministic
  :math:`G`, :math:`H(X) = I(X;Z) + \text{const}`, so the entropy is estimated through the mutual information
  (:func:`mutual_information`):

  * ``"jsd"``: the Deep-InfoMax Jensen–Shannon estimator with a statistics network :math:`T(x,z)` and shuffled-z
    negatives (MEG): :math:`\mathbb E_{p(x,z)}[-s_+(-T)] - \mathbb E_{p(x)p(z)}[s_+(T)]`, :math:`s_+` = softplus
    (:func:`jsd_mutual_information`). The official code minimises ``BCEWithLogits`` over the 2m joint and
    shuffled pairs, which equals :math:`-\tfrac12 I^{JSD}`, so its effective weight is :math:`w=\tfrac12`
    (:func:`jsd_bce_loss` is that form).
  * ``"infogan"``: Su's InfoGAN bound (post 6331) :math:`I \ge \mathbb E\log p(z\mid G(z)) + H(Z)` with an encoder,
    :math:`p(z\mid x)=\mathcal N(E(x),\sigma^2 I)`; the generator/encoder term is then
    :math:`\|z-E(G(z))\|^2/(2\sigma^2)` up to a constant (:func:`infogan_mutual_information`).
- IGEBM (post 6612): :func:`igebm_loss`, with both readings of the sign of the :math:`U^2` regulariser.

**Score-penalty quirk of the official code.** MEG's ``score_penalty`` computes ``grad.norm(2, dim=1)**2 .mean()``:
on images ``[B, C, H, W]`` that is a norm over *channels only*, averaged over ``B·H·W``, i.e.
:math:`\tfrac1{HW}\mathbb E\|\nabla_x U\|^2`, so the scripts' λ = 10 on 32×32 CIFAR is ≈ 0.0098 on the real
per-sample squared norm. :func:`score_penalty` takes the per-sample norm over all non-batch dimensions;
:func:`score_penalty_channelwise` reproduces the quirk only so that λ values can be translated
(``channelwise = full / (H·W)``), and :func:`per_position_weight` converts the official λ into the weight of
:func:`score_penalty` that gives the official loss.
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from kexue.losses.gan import gradient_norms

Energy = Callable[[torch.Tensor], torch.Tensor]  # [B, ...] -> [B]
Statistics = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x [B, ...], z [B, d]) -> [B]
Encoder = Callable[[torch.Tensor], torch.Tensor]  # x [B, ...] -> z_hat [B, d]

ESTIMATORS = ("jsd", "infogan")


def _per_sample(name: str, t: torch.Tensor) -> torch.Tensor:
    if t.dim() == 2 and t.shape[1] == 1:
        t = t.squeeze(1)
    if t.dim() != 1 or t.numel() == 0:
        raise ValueError(f"{name} must hold one value per sample, [B] or [B, 1], got {tuple(t.shape)}")
    return t


# --------------------------------------------------------------------------------------------------------------
# The energy (critic) side
# --------------------------------------------------------------------------------------------------------------


def energy_loss(real_energy: torch.Tensor, fake_energy: torch.Tensor) -> torch.Tensor:
    """:math:`\\mathbb E_p[U] - \\mathbb E_q[U]`: minimising it digs pits under real samples (``[B]`` each)."""
    return _per_sample("real_energy", real_energy).mean() - _per_sample("fake_energy", fake_energy).mean()


def score_penalty(energy: Energy, real: torch.Tensor) -> torch.Tensor:
    r"""Zero-centred penalty :math:`\mathbb E_{x\sim p}\|\nabla_x U(x)\|^2` on real samples (multiply by λ).

    The norm is per sample over all non-batch dimensions (C, H and W together for images); the graph is kept so
    the penalty trains the energy (double backprop).

    Args:
        energy: ``[B, ...] -> [B]`` with samples independent (no batch norm).
        real: ``[B, ...]`` real samples.
    """
    return gradient_norms(energy, real).pow(2).mean()


def score_penalty_channelwise(energy: Energy, real: torch.Tensor) -> torch.Tensor:
    """The official MEG code's penalty, ``grad.norm(2, dim=1)**2 .mean()`` (norm over dim 1 only): a quirk kept
    for translating λ values, not for training. For ``[B, C, H, W]`` it equals :func:`score_penalty` / (H·W); for
    ``[B, D]`` the two agree."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(_per_sample("energy(real)", energy(x)).sum(), x, create_graph=True)
    return grad.norm(2, dim=1).pow(2).mean()


def per_position_weight(lam: float, shape: tuple[int, ...] | torch.Size) -> float:
    r"""The weight of :func:`score_penalty` that equals the official code's ``lam * score_penalty_channelwise``.

    The official penalty is the squared gradient norm per position (over channels), averaged over the positions,
    i.e. the per-sample squared norm divided by the number of positions: λ = 10 on ``[B, 3, 28, 28]`` is
    10 / 784 ≈ 0.0128 on the per-sample norm. Vectors ``[B, D]`` have one position, so λ is unchanged.

    Args:
        lam: λ on the official (per-position) scale, ≥ 0.
        shape: the data's shape ``[B, C, *spatial]`` or ``[B, D]``.
    """
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    if len(shape) < 2:
        raise ValueError(f"shape must be [B, D] or [B, C, *spatial], got {tuple(shape)}")
    return lam / math.prod(shape[2:])


def meg_energy_loss(energy: Energy, real: torch.Tensor, fake: torch.Tensor, *,
                    lam: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""MEG Algorithm 1's energy loss :math:`\mathbb E_p U - \mathbb E_q U + \lambda\,\mathbb E_p\|\nabla_x U\|^2`.

    Args:
        energy: the energy network ``[B, ...] -> [B]``.
        real: ``[B, ...]`` data; fake: ``[B', ...]`` generated samples (detached here).
        lam: λ ≥ 0 (0.1 in the paper's Algorithm 1 and the toy scripts).

    Returns:
        ``(loss, {"energy_real", "energy_fake", "score_penalty"})`` (the parts detached, for logging).
    """
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    u_real = _per_sample("energy(real)", energy(real))
    u_fake = _per_sample("energy(fake)", energy(fake.detach()))
    penalty = score_penalty(energy, real) if lam > 0 else u_real.new_zeros(())
    loss = u_real.mean() - u_fake.mean() + lam * penalty
    return loss, {"energy_real": u_real.mean().detach(), "energy_fake": u_fake.mean().detach(),
                  "score_penalty": penalty.detach()}


def hinge_energy_loss(real_energy: torch.Tensor, fake_energy: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    r"""Post 6316's hinge form :math:`\mathbb E_p\max(0, m+U) + \mathbb E_q\max(0, m-U)` (m = 1 as in
    SNGAN/SAGAN/BigGAN): the energy stops being pushed once real samples sit below :math:`-m` and fake ones above
    :math:`m`, which bounds it without a penalty."""
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")
    real = _per_sample("real_energy", real_energy)
    fake = _per_sample("fake_energy", fake_energy)
    return F.relu(margin + real).mean() + F.relu(margin - fake).mean()


def margin_energy_loss(real_energy: torch.Tensor, fake_energy: torch.Tensor, margin: float) -> torch.Tensor:
    r"""Post 6316's form for a **non-negative** energy (EBGAN's autoencoder error):
    :math:`\mathbb E_p U + \mathbb E_q\max(0, m-U)`.

    Raises:
        ValueError: if any energy is negative (the loss would then be unbounded below).
    """
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a finite number > 0, got {margin!r}")
    real = _per_sample("real_energy", real_energy)
    fake = _per_sample("fake_energy", fake_energy)
    if (real.detach() < 0).any() or (fake.detach() < 0).any():
        raise ValueError("margin_energy_loss needs non-negative energies (e.g. a reconstruction error); got "
                         f"min real {real.min().item():.4g}, min fake {fake.min().item():.4g}; use "
                         "hinge_energy_loss for a signed energy")
    return real.mean() + F.relu(margin - fake).mean()


def igebm_loss(real_energy: torch.Tensor, fake_energy: torch.Tensor, *, alpha: float,
               sign: str = "paper") -> torch.Tensor:
    r"""IGEBM's energy loss :math:`\mathbb E[U(x_r) - U(x_f)] + \alpha\,\mathbb E[U(x_r)^2 \pm U(x_f)^2]`.

    ``sign="paper"`` is the ``+`` of Du & Mordatch (both energies kept near 0); ``sign="su"`` is the ``-`` Su
    writes in post 6612. With the minus, the loss falls without bound as :math:`|U(x_f)|` grows (the regulariser
    *rewards* large fake energies instead of bounding them), so it cannot be what stabilises training; the spec
    records the paper's sign as recalled, not verified, and both are offered.

    Args:
        real_energy, fake_energy: ``[B]``; fake samples come from :func:`kexue.ops.mcmc.replay_langevin`.
        alpha: regulariser weight ≥ 0 (IGEBM: 1).
    """
    if not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if sign not in ("paper", "su"):
        raise ValueError(f"sign must be 'paper' (+alpha U_f^2) or 'su' (-alpha U_f^2), got {sign!r}")
    real = _per_sample("real_energy", real_energy)
    fake = _per_sample("fake_energy", fake_energy)
    s = 1.0 if sign == "paper" else -1.0
    return (real.mean() - fake.mean()) + alpha * (real.pow(2).mean() + s * fake.pow(2).mean())


# --------------------------------------------------------------------------------------------------------------
# Mutual information (the generator's entropy)
# --------------------------------------------------------------------------------------------------------------


def jsd_mutual_information(t_joint: torch.Tensor, t_marginal: torch.Tensor) -> torch.Tensor:
    r"""Deep-InfoMax JSD estimate :math:`\mathbb E_{joint}[-s_+(-T)] - \mathbb E_{marginal}[s_+(T)]`.

    Args:
        t_joint: ``[B]`` statistics of pairs from the joint, :math:`T(G(z_i), z_i)`.
        t_marginal: ``[B']`` statistics of pairs from the product of marginals, :math:`T(G(z_i), z_{\sigma(i)})`.

    Returns:
        A scalar ≤ 0. Its supremum over :math:`T` is :math:`2\,\mathrm{JSD}(p(x,z)\,\|\,p(x)p(z)) - 2\log 2`
        (reached at :math:`T = \log[p(x,z)/(p(x)p(z))]`), so it is :math:`-2\log 2` for independent (x, z) and
        rises towards 0 with the dependence.
    """
    tj = _per_sample("t_joint", t_joint)
    tm = _per_sample("t_marginal", t_marginal)
    return -F.softplus(-tj).mean() - F.softplus(tm).mean()


def jsd_mutual_information_reference(t_joint: torch.Tensor, t_marginal: torch.Tensor) -> torch.Tensor:
    """Slow twin of :func:`jsd_mutual_information`:
    :math:`\\mathbb E\\log\\sigma(T_j) + \\mathbb E\\log(1-\\sigma(T_m))`, summed in float64 with a Python loop."""
    tj, tm = _per_sample("t_joint", t_joint).double(), _per_sample("t_marginal", t_marginal).double()
    joint = sum(torch.log(torch.sigmoid(t)) for t in tj) / len(tj)
    marginal = sum(torch.log1p(-torch.sigmoid(t)) for t in tm) / len(tm)
    return joint + marginal


def jsd_bce_loss(t_joint: torch.Tensor, t_marginal: torch.Tensor) -> torch.Tensor:
    """The official code's form: ``BCEWithLogits([T_j; T_m], [1; 0])`` averaged over both halves. For equal halves
    it is :math:`-\\tfrac12 I^{JSD}` (:func:`jsd_mutual_information`)."""
    tj = _per_sample("t_joint", t_joint)
    tm = _per_sample("t_marginal", t_marginal)
    logits = torch.cat([tj, tm])
    targets = torch.cat([torch.ones_like(tj), torch.zeros_like(tm)])
    return F.binary_cross_entropy_with_logits(logits, targets)


def shuffled(z: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """``z`` with its rows permuted (``randperm``, as MEG): paired with the unshuffled x, samples of p(x)p(z)."""
    if z.dim() < 1 or z.shape[0] < 2:
        raise ValueError(f"shuffled needs a batch of at least 2 codes, got shape {tuple(z.shape)}")
    return z[torch.randperm(z.shape[0], generator=generator, device=z.device)]


def _pair(x: torch.Tensor, z: torch.Tensor) -> None:
    if x.shape[0] != z.shape[0] or z.dim() != 2:
        raise ValueError(f"x [B, ...] and z [B, d] must pair up, got {tuple(x.shape)} and {tuple(z.shape)}")


def statistics_mutual_information(statistics: Statistics, x: torch.Tensor, z: torch.Tensor, *,
                                  generator: torch.Generator | None = None) -> torch.Tensor:
    """:func:`jsd_mutual_information` of :math:`T(x_i, z_i)` against :math:`T(x_i, z_{\\sigma(i)})` (shuffled z).

    Args:
        statistics: :math:`T`, ``(x [B, ...], z [B, d]) -> [B]``.
        x: ``[B, ...]`` generated samples :math:`G(z)` (with their graph, so the generator gets gradients).
        z: ``[B, d]`` the codes that produced them.
    """
    _pair(x, z)
    z_perm = shuffled(z, generator=generator)
    t = statistics(torch.cat([x, x]), torch.cat([z, z_perm]))  # one pass over joint and marginal pairs
    t = _per_sample("statistics(x, z)", t)
    return jsd_mutual_information(t[: len(z)], t[len(z):])


def gaussian_log_likelihood(z: torch.Tensor, mean: torch.Tensor, sigma: float) -> torch.Tensor:
    r""":math:`\log\mathcal N(z; \mu, \sigma^2 I) = -\|z-\mu\|^2/(2\sigma^2) - \tfrac d2\log(2\pi\sigma^2)`, ``[B]``."""
    if z.shape != mean.shape or z.dim() != 2:
        raise ValueError(f"z and mean must both be [B, d], got {tuple(z.shape)} and {tuple(mean.shape)}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")
    d = z.shape[1]
    return -(z - mean).pow(2).sum(1) / (2 * sigma**2) - 0.5 * d * math.log(2 * math.pi * sigma**2)


def standard_normal_entropy(dim: int) -> float:
    r""":math:`H(\mathcal N(0, I_d)) = \tfrac d2\log(2\pi e)` in nats."""
    return 0.5 * dim * math.log(2 * math.pi * math.e)


def infogan_mutual_information(encoder: Encoder, x: torch.Tensor, z: torch.Tensor, *,
                               sigma: float = 1.0) -> torch.Tensor:
    r"""InfoGAN lower bound :math:`\mathbb E\log\mathcal N(z; E(x), \sigma^2 I) + H(Z)`, :math:`Z\sim\mathcal N(0,I)`.

    Maximising it over :math:`G` and :math:`E` is minimising :math:`\|z - E(G(z))\|^2/(2\sigma^2)`: Su's
    :math:`\lambda_2\|z-E(G(z))\|^2` with :math:`\lambda_2 = w/(2\sigma^2)` for MI weight :math:`w`.

    Args:
        encoder: :math:`E`, ``x [B, ...] -> [B, d]``.
        x: ``[B, ...]`` generated samples :math:`G(z)`; z: ``[B, d]`` their codes.
        sigma: the encoder's assumed noise scale.
    """
    _pair(x, z)
    z_hat = encoder(x)
    if z_hat.shape != z.shape:
        raise ValueError(f"the encoder must map x to codes of z's shape {tuple(z.shape)}, got {tuple(z_hat.shape)}")
    return gaussian_log_likelihood(z, z_hat, sigma).mean() + standard_normal_entropy(z.shape[1])


def mutual_information(estimator: str, net: Statistics | Encoder, x: torch.Tensor, z: torch.Tensor, *,
                       sigma: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """:math:`I(X;Z)` estimate by ``estimator``: ``"jsd"`` (``net`` = statistics network :math:`T(x, z)`) or
    ``"infogan"`` (``net`` = encoder :math:`E(x)`; ``sigma`` its noise scale)."""
    if estimator == "jsd":
        return statistics_mutual_information(net, x, z, generator=generator)
    if estimator == "infogan":
        return infogan_mutual_information(net, x, z, sigma=sigma)
    raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")


def meg_generator_loss(fake_energy: torch.Tensor, mi: torch.Tensor | float, *, mi_weight: float) -> torch.Tensor:
    r"""Energy minus entropy: :math:`\mathbb E_z U(G(z)) - w\,\hat I(G(Z); Z)` (:math:`w` = ``mi_weight``; 1 in the
    paper's formula, effectively ½ in the official code, 0 for the "no entropy" ablation)."""
    if not (math.isfinite(mi_weight) and mi_weight >= 0):
        raise ValueError(f"mi_weight must be a finite number >= 0, got {mi_weight!r}")
    return _per_sample("fake_energy", fake_energy).mean() - mi_weight * mi
