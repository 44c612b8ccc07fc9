"""MEG's training step (post 1): an energy critic with the real-data score penalty, a generator regularised by its
entropy, estimated through the mutual information I(G(Z); Z).

Kumar et al., "Maximum Entropy Generators for Energy-Based Models" (arXiv:1901.08508), Algorithm 1; Su Jianlin,
kexue.fm/archives/6316 and 6331. :func:`meg_step` builds a :class:`~kexue.train.gan.GANStep`, so checkpoints,
resume, the NaN guard and the generator EMA come from the shared GAN step and :class:`~kexue.train.runtime.Runtime`::

    step = meg_step(G, E, T, sample_real=..., sample_z=lambda n: torch.randn(n, 2), lam=0.1, mi_weight=1.0)
    rt = Runtime(run, config=asdict(cfg), model=step.modules(), optimizer=step.optimizers())
    rt.resume()
    for it in rt.steps(cfg.steps, desc="meg", log_every=50):
        it.mean(**step(rt))

Per call: ``n_critic`` energy updates on :math:`\\mathbb E_p U - \\mathbb E_q U + \\lambda\\mathbb E_p\\|\\nabla_x
U\\|^2` (:func:`kexue.losses.energy.meg_energy_loss`), then one joint update of the generator and the MI network on
:math:`\\mathbb E_z U(G(z)) - w\\,\\hat I(G(Z); Z)`. The MI network (statistics network for ``"jsd"``, encoder for
``"infogan"``) shares the generator's optimiser, as in the official code where G and T minimise the same loss; the
energy's parameters also receive gradients from the generator loss, which are discarded (the step zeroes them).

Order: the official loop does the generator step first in each outer iteration; GANStep does the energy steps
first. Over a run the two differ only in the first and last half-iteration.
"""

from collections.abc import Callable

import torch
from torch import nn

from kexue.losses.energy import ESTIMATORS, meg_energy_loss, meg_generator_loss, mutual_information
from kexue.train.ema import EMA
from kexue.train.gan import GANStep


def meg_step(generator: nn.Module, energy: nn.Module, mi_net: nn.Module | None, *,
             sample_real: Callable[[], torch.Tensor], sample_z: Callable[[int], torch.Tensor],
             estimator: str = "jsd", mi_weight: float = 1.0, sigma: float = 1.0, lam: float = 0.1,
             n_critic: int = 5, lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.9),
             g_lr: float | None = None, g_betas: tuple[float, float] | None = None,
             ema: EMA | None = None) -> GANStep:
    """Build MEG's alternating step.

    Args:
        generator: G, ``[B, z_dim] -> [B, ...]``.
        energy: U, ``[B, ...] -> [B]`` (low = real; no batch norm, the penalty is per sample).
        mi_net: the statistics network T(x, z) (``"jsd"``) or the encoder E(x) (``"infogan"``); None with
            ``mi_weight=0`` for the no-entropy ablation (a plain energy GAN).
        sample_real: ``() -> [B, ...]``; sample_z: ``(B) -> [B, z_dim]``.
        estimator: ``"jsd"`` (MEG) or ``"infogan"`` (Su's post 6331).
        mi_weight: w in ``E U(G(z)) - w I`` (1 = the paper's formula; the official code's BCE amounts to 0.5).
        sigma: the encoder's noise scale for ``"infogan"``.
        lam: the score-penalty weight λ (0.1 for the toy sets and the paper's Algorithm 1).
        n_critic: energy updates per generator update (5).
        lr, betas: Adam settings of the energy (and of G and the MI network unless ``g_lr`` / ``g_betas`` are given).
        g_lr, g_betas: Adam settings of G and the MI network, to vary them alone (post 6316's optimiser claim).
        ema: an EMA of the generator.

    Returns:
        The :class:`GANStep`; its ``modules()`` holds ``generator``, ``critic`` (the energy) and ``mi_net``.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if mi_weight < 0:
        raise ValueError(f"mi_weight must be >= 0, got {mi_weight}")
    if mi_weight > 0 and mi_net is None:
        raise ValueError("mi_weight > 0 needs an MI network (a statistics network for 'jsd', an encoder for "
                         "'infogan'); pass mi_weight=0 for the no-entropy ablation")

    def critic_loss(real: torch.Tensor, fake: torch.Tensor, z: torch.Tensor):
        return meg_energy_loss(energy, real, fake, lam=lam)

    def generator_loss(fake: torch.Tensor, z: torch.Tensor):
        u = energy(fake)
        mi = mutual_information(estimator, mi_net, fake, z, sigma=sigma) if mi_weight > 0 else u.new_zeros(())
        return meg_generator_loss(u, mi, mi_weight=mi_weight), {"mi": mi.detach(), "energy_gen": u.mean().detach()}

    g_params = list(generator.parameters()) + (list(mi_net.parameters()) if mi_net is not None else [])
    g_opt = torch.optim.Adam(g_params, lr=lr if g_lr is None else g_lr, betas=betas if g_betas is None else g_betas)
    d_opt = torch.optim.Adam(energy.parameters(), lr=lr, betas=betas)
    return GANStep(generator=generator, critic=energy, g_optimizer=g_opt, d_optimizer=d_opt,
                   critic_loss=critic_loss, generator_loss=generator_loss, sample_real=sample_real,
                   sample_z=sample_z, n_critic=n_critic, ema=ema,
                   extra_modules={"mi_net": mi_net} if mi_net is not None else None)
