"""O-GAN objectives: GAN-QP with the critic avg∘E plus the correlation ρ(z, E(G(z))) (post 3; kexue.fm/archives/6409).

With :math:`a(x) = \\text{avg}(E(x))` (real images get the *lower* score) and the official code's weights
(``o_gan_celeba.py``): the per-pixel **mean** squared distance in the quadratic term, weight 0.25 on it, λ₂ = 0.5:

.. math::
    E &= \\arg\\min\\ \\mathbb E\\big[a(x) - a(G(z)) + 0.25\\,\\frac{(a(x) - a(G(z)))^2}
         {\\text{mean}_{pix}(x - G(z))^2} - λ_2\\,ρ(z, E(G(z)))\\big] \\\\
    G &= \\arg\\min\\ \\mathbb E\\big[a(G(z)) - λ_2\\,ρ(z, E(G(z)))\\big]

(x and z paired by index within the batch). Two forms:

- **Two players**: :func:`ogan_critic_loss` for E (fed E(G(z)) of a detached G(z)) and :func:`ogan_generator_loss`
  for G, with two optimisers (e.g. :class:`kexue.train.gan.GANStep`).
- **One loss** (:func:`ogan_single_loss`), Su's stop-gradient trick (kexue.fm/archives/6387) as the official code
  writes it: with t₁ = a(x) − a(sg G(z)) and t₂ = a(G(z)) − a(sg G(z)), the loss
  mean[t₁ + t₂ − λ₂ρ] + mean[0.25 t₁² / mean_pix(x − sg G(z))²] gives E exactly E's gradient (t₂'s two halves
  cancel in E) and G exactly G's (t₁ and the quadratic term see G only through sg), so one optimiser over both
  networks makes the two-player update. A test checks both gradient identities.

With λ₂ = 0 these are GAN-QP (:func:`kexue.losses.gan.gan_qp_critic_loss` with critic T = −a, ``distance="mse"`` and
λ = 1 / (2 · 0.25) = 2), also tested. Two ablations replace −ρ by a plain regression of the code, which Su reports
"almost always" fails:

- ``code="sse"``: ‖z − ẑ‖² = Σ_i (z_i − ẑ_i)², the loss exactly as the post writes it (summed over the n_z
  dimensions);
- ``code="mse"``: ½·mean_i (z_i − ẑ_i)², a rescaled version that equals 1 − ρ when both codes are standardised
  (‖N(z) − N(ẑ)‖² = 2n(1 − ρ)), so one λ₂ weighs it like −ρ. It is 2n_z times weaker than the post's form.
"""

from collections.abc import Callable

import torch

from kexue.ops.correlation import pearson

CODE_LOSSES = ("pearson", "sse", "mse")

# --------------------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------------------


def latent_mse(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """½ · mean_i (z_i − ẑ_i)² per row: ``[B, n]`` x2 -> ``[B]`` (the ablation that replaces −ρ)."""
    if z.shape != z_hat.shape:
        raise ValueError(f"z and z_hat must have the same shape, got {tuple(z.shape)} and {tuple(z_hat.shape)}")
    return 0.5 * (z - z_hat).pow(2).mean(-1)


def latent_sse(z: torch.Tensor, z_hat: torch.Tensor) -> torch.Tensor:
    """‖z − ẑ‖² = Σ_i (z_i − ẑ_i)² per row: ``[B, n]`` x2 -> ``[B]`` (the post's MSE ablation, literally)."""
    if z.shape != z_hat.shape:
        raise ValueError(f"z and z_hat must have the same shape, got {tuple(z.shape)} and {tuple(z_hat.shape)}")
    return (z - z_hat).pow(2).sum(-1)


def code_loss(z: torch.Tensor, z_hat: torch.Tensor, code: str = "pearson") -> torch.Tensor:
    """The per-sample code term that λ₂ multiplies: −ρ(z, ẑ) (``"pearson"``), :func:`latent_sse` (``"sse"``, the
    post's ‖z − ẑ‖²) or :func:`latent_mse` (``"mse"``, ½·mean)."""
    if code == "pearson":
        return -pearson(z, z_hat)
    if code == "sse":
        return latent_sse(z, z_hat)
    if code == "mse":
        return latent_mse(z, z_hat)
    raise ValueError(f"code must be one of {', '.join(map(repr, CODE_LOSSES))}, got {code!r}")


def pixel_mse(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared pixel distance ``[B]`` (no gradient; floored at 1e-12 so identical pairs stay finite)."""
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape, got {tuple(real.shape)} and {tuple(fake.shape)}")
    return (real.detach() - fake.detach()).pow(2).flatten(1).mean(1).clamp_min(1e-12)


def _check(real_codes: torch.Tensor | None, fake_codes: torch.Tensor, z: torch.Tensor, lam2: float,
           qp_weight: float = 1.0) -> None:
    if not lam2 >= 0:
        raise ValueError(f"lam2 (the weight of the code term) must be >= 0, got {lam2}")
    if not qp_weight > 0:
        raise ValueError(f"qp_weight (the weight of the quadratic term) must be > 0, got {qp_weight}")
    if fake_codes.dim() != 2 or z.shape != fake_codes.shape:
        raise ValueError(f"fake_codes and z must both be [B, z_dim], got {tuple(fake_codes.shape)} and "
                         f"{tuple(z.shape)}")
    if real_codes is not None and real_codes.shape != fake_codes.shape:
        raise ValueError(f"real_codes must have the shape of fake_codes {tuple(fake_codes.shape)}, got "
                         f"{tuple(real_codes.shape)}")


# --------------------------------------------------------------------------------------------------------------
# The two-player form
# --------------------------------------------------------------------------------------------------------------


def ogan_critic_loss(real_codes: torch.Tensor, fake_codes: torch.Tensor, real: torch.Tensor, fake: torch.Tensor,
                     z: torch.Tensor, *, lam2: float = 0.5, qp_weight: float = 0.25,
                     code: str = "pearson") -> torch.Tensor:
    """E's objective: mean[a(x) − a(G z) + qp_weight · (a(x) − a(G z))² / mean_pix(x − G z)² + λ₂ · code_loss].

    Args:
        real_codes: E(x) ``[B, z_dim]``.
        fake_codes: E(G(z)) ``[B, z_dim]`` of a **detached** G(z) (E's update must not reach G).
        real, fake: the images ``[B, ...]`` (only their distance is used, without gradient).
        z: the codes G(z) was generated from ``[B, z_dim]``.
        lam2: λ₂, the weight of the code term (0.5 in ``o_gan_celeba.py``, 1.0 at 256 px).
        qp_weight: the quadratic term's weight (0.25 in the code; 1 / (2λ) in GAN-QP's notation).
        code: ``"pearson"`` (−ρ), ``"sse"`` or ``"mse"`` (the ablations), see :func:`code_loss`.

    Returns:
        Scalar loss.
    """
    _check(real_codes, fake_codes, z, lam2, qp_weight)
    t1 = real_codes.mean(-1) - fake_codes.mean(-1)  # [B]
    quad = qp_weight * t1.pow(2) / pixel_mse(real, fake)
    return (t1 + quad + lam2 * code_loss(z, fake_codes, code)).mean()


def ogan_generator_loss(fake_codes: torch.Tensor, z: torch.Tensor, *, real_codes: torch.Tensor | None = None,
                        lam2: float = 0.5, code: str = "pearson") -> torch.Tensor:
    """G's objective: mean[a(G z) − λ₂ ρ(z, E(G z))] (no quadratic term: it is the critic's constraint).

    Args:
        fake_codes: E(G(z)) ``[B, z_dim]`` with G's graph.
        z: ``[B, z_dim]``.
        real_codes: E(x), optional: when given, mean a(x) is subtracted. It carries no gradient to G; it only makes
            the value equal GAN-QP's generator loss E[T(x) − T(G z)] (T = −a) at λ₂ = 0.
        lam2, code: as in :func:`ogan_critic_loss`.

    Returns:
        Scalar loss.
    """
    _check(real_codes, fake_codes, z, lam2)
    loss = (fake_codes.mean(-1) + lam2 * code_loss(z, fake_codes, code)).mean()
    if real_codes is not None:
        loss = loss - real_codes.detach().mean()
    return loss


# --------------------------------------------------------------------------------------------------------------
# The single-loss form (Su's stop-gradient trick, as in the official code)
# --------------------------------------------------------------------------------------------------------------


def ogan_single_loss(encoder: Callable[[torch.Tensor], torch.Tensor],
                     generator: Callable[[torch.Tensor], torch.Tensor], real: torch.Tensor, z: torch.Tensor, *,
                     lam2: float = 0.5, qp_weight: float = 0.25,
                     code: str = "pearson") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One loss whose gradient is E's objective for E and G's objective for G (module docstring, §2.5 of the spec).

    E is called on x, G(z) and sg(G(z)) separately, as in the Keras code, so an encoder with batch norm sees each
    batch's own statistics and the two fake passes are the same computation (their E-gradients cancel exactly).

    Args:
        encoder: images -> codes ``[B, z_dim]`` (e.g. :meth:`kexue.models.ogan.OGAN.codes`).
        generator: codes -> images.
        real: a real batch ``[B, ...]``; z: ``[B, z_dim]`` (paired with ``real`` by index).
        lam2, qp_weight, code: as in :func:`ogan_critic_loss`.

    Returns:
        ``(loss, logs)``: the scalar loss and detached scalars ``t1`` (mean score gap a(x) − a(G z); negative once
        real images score lower), ``rho`` (mean ρ(z, E(G z)), the official code's ``z_corr``), ``qp`` (mean
        quadratic term) and ``code`` (mean code term).
    """
    fake = generator(z)
    fake_ng = fake.detach()
    real_codes, fake_codes, fake_codes_ng = encoder(real), encoder(fake), encoder(fake_ng)
    _check(real_codes, fake_codes, z, lam2, qp_weight)
    a_ng = fake_codes_ng.mean(-1)
    t1 = real_codes.mean(-1) - a_ng  # reaches E only (fake side through sg)
    t2 = fake_codes.mean(-1) - a_ng  # value 0; E-gradients of its halves cancel, so it reaches G only
    quad = qp_weight * t1.pow(2) / pixel_mse(real, fake_ng)
    rec = code_loss(z, fake_codes, code)  # reaches both
    loss = (t1 + t2 + lam2 * rec).mean() + quad.mean()
    with torch.no_grad():
        logs = {"t1": t1.mean(), "rho": pearson(z, fake_codes).mean(), "qp": quad.mean(), "code": rec.mean()}
    return loss, logs
