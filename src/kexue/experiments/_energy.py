"""Shared pieces of the energy-GAN experiments (post 1): toy data and its metrics, grid energies and densities,
and the two trainers compared everywhere (MEG and WGAN-GP with the same networks and budget).

Private module (leading underscore): the registry skips it; ``energy_2d``, ``energy_optimizers``,
``energy_stackedmnist`` and ``energy_anomaly`` import it.
"""

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from kexue.data.synthetic import SWISS_ROLL_SCALE, toy_2d, toy_std
from kexue.eval.modes import kl_to_uniform, mixture_modes
from kexue.losses.gan import gradient_penalty
from kexue.ops.mcmc import mala
from kexue.train.energy import meg_step
from kexue.train.gan import GANStep, wgan_step
from kexue.train.runtime import Runtime

# --------------------------------------------------------------------------------------------------------------
# Toy data and its metrics
# --------------------------------------------------------------------------------------------------------------

TOY_SETS = ("25gaussians", "8gaussians", "swissroll")
TOY_TITLES = {"25gaussians": "25 Gaussians", "8gaussians": "8 Gaussians", "swissroll": "Swiss roll"}
ROLL_SEGMENTS = 20  # the Swiss roll's "modes": equal-length pieces of its parameter t in [1.5 pi, 4.5 pi]


@dataclass
class ToySet:
    """A 2-D training set and what its samples are scored against.

    Attributes:
        name: one of ``TOY_SETS``.
        data: ``[N, 2]`` float32 training points.
        centres: ``[K, 2]`` mode centres (the mixtures), or points on the noise-free roll (the Swiss roll).
        std: the per-coordinate noise of a mode (scaled): a sample within 3 std of a centre / the roll is "high
            quality".
        num_modes: 25, 8, or ``ROLL_SEGMENTS``.
    """

    name: str
    data: torch.Tensor
    centres: torch.Tensor
    std: float
    num_modes: int


def toy_set(name: str, n: int, seed: int) -> ToySet:
    """The toy set ``name`` (:func:`kexue.data.synthetic.toy_2d`, which refuses unknown names) with what its samples
    are scored against."""
    points, centres = toy_2d(name, n, seed=seed)
    if centres is not None:
        return ToySet(name, torch.from_numpy(points), torch.from_numpy(centres), toy_std(name), len(centres))
    t = torch.linspace(1.5 * math.pi, 4.5 * math.pi, 4000, dtype=torch.float64)
    curve = (t[:, None] * torch.stack([t.cos(), t.sin()], 1) / SWISS_ROLL_SCALE).float()
    return ToySet(name, torch.from_numpy(points), curve, toy_std(name), ROLL_SEGMENTS)


def toy_metrics(toy: ToySet, samples: torch.Tensor) -> dict[str, float]:
    """Modes covered, share of high-quality samples (within 3 std of a mode / of the roll) and KL(modes ‖ uniform).

    For the mixtures this is :func:`kexue.eval.modes.mixture_modes`. For the Swiss roll a sample is high quality
    within 3 noise std of the noise-free curve, and its "mode" is the curve segment (of ``ROLL_SEGMENTS`` equal
    pieces of t, which is uniform in the data) nearest to it.
    """
    x = samples.detach().double().cpu()
    if not torch.isfinite(x).all():
        return {"modes": 0, "high_quality": 0.0, "kl": math.inf}
    if toy.name != "swissroll":
        m = mixture_modes(x, toy.centres, toy.std)
        return {"modes": m.covered, "high_quality": m.high_quality, "kl": m.kl}
    dist = torch.cdist(x, toy.centres.double())  # [N, 4000]
    d, nearest = dist.min(1)
    good = d <= 3 * toy.std
    segment = nearest * ROLL_SEGMENTS // len(toy.centres)
    counts = torch.bincount(segment[good], minlength=ROLL_SEGMENTS).numpy()
    return {"modes": int((counts > 0).sum()), "high_quality": good.double().mean().item(),
            "kl": kl_to_uniform(counts)}


# --------------------------------------------------------------------------------------------------------------
# Energies and densities on a grid
# --------------------------------------------------------------------------------------------------------------


@torch.no_grad()
def grid_energy(energy: Callable[[torch.Tensor], torch.Tensor], lim: float = 2.0,
                n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """U on an ``n x n`` grid over ``[-lim, lim]^2`` and the normalised density e^{-U}/Z (Z by the grid sum).

    Returns:
        ``(xs [n], ys [n], U [n, n], density [n, n])``; ``density`` integrates to 1 over the grid (cell area
        included), indexed ``[y, x]`` for ``imshow``/``contourf``.
    """
    xs = torch.linspace(-lim, lim, n)
    gx, gy = torch.meshgrid(xs, xs, indexing="xy")
    pts = torch.stack([gx.flatten(), gy.flatten()], 1)
    device = next(iter(getattr(energy, "parameters", lambda: iter([torch.empty(0)]))())).device
    u = torch.cat([energy(pts[i:i + 8192].to(device)).float().cpu() for i in range(0, len(pts), 8192)])
    cell = (2 * lim / (n - 1)) ** 2
    log_density = -u - torch.logsumexp(-u.double(), 0).float() - math.log(cell)
    return xs.numpy(), xs.numpy(), u.view(n, n).numpy(), log_density.exp().view(n, n).numpy()


def density_mass_near(toy: ToySet, xs: np.ndarray, density: np.ndarray, sigmas: float = 3.0) -> float:
    """Share of a grid density's mass within ``sigmas`` std of a mode centre / of the roll (no spurious modes)."""
    gx, gy = np.meshgrid(xs, xs, indexing="xy")
    pts = torch.from_numpy(np.stack([gx.ravel(), gy.ravel()], 1)).double()
    d = torch.cdist(pts, toy.centres.double()).min(1).values.numpy()
    mass = density.ravel() * (xs[1] - xs[0]) ** 2
    return float(mass[d <= sigmas * toy.std].sum() / mass.sum())


# --------------------------------------------------------------------------------------------------------------
# Trainers: MEG and the WGAN-GP baseline, through the shared GAN step and the runtime
# --------------------------------------------------------------------------------------------------------------


def wgan_gp_step(generator: nn.Module, critic: nn.Module, *, sample_real: Callable[[], torch.Tensor],
                 sample_z: Callable[[int], torch.Tensor], gp_weight: float = 10.0, n_critic: int = 5,
                 lr: float = 1e-4, betas: tuple[float, float] = (0.5, 0.9),
                 g_lr: float | None = None, g_betas: tuple[float, float] | None = None) -> GANStep:
    """WGAN-GP (Gulrajani et al. 2017) with per-sample interpolates and per-sample norms: the baseline, trained
    like MEG (same networks, optimiser, critic steps). Its critic f is high on real data, so U = -f."""

    def penalty(real: torch.Tensor, fake: torch.Tensor):
        gp = gradient_penalty(critic, real, fake)
        return gp_weight * gp, {"gp": gp.detach()}

    g_opt = torch.optim.Adam(generator.parameters(), lr=lr if g_lr is None else g_lr,
                             betas=betas if g_betas is None else g_betas)
    d_opt = torch.optim.Adam(critic.parameters(), lr=lr, betas=betas)
    return wgan_step(generator, critic, g_opt, d_opt, sample_real=sample_real, sample_z=sample_z, penalty=penalty,
                     n_critic=n_critic)


def build_step(method: str, generator: nn.Module, critic: nn.Module, mi_net: nn.Module | None, *,
               sample_real: Callable[[], torch.Tensor], sample_z: Callable[[int], torch.Tensor], lam: float,
               mi_weight: float, estimator: str, n_critic: int, lr: float, betas: tuple[float, float],
               g_lr: float | None = None, g_betas: tuple[float, float] | None = None,
               sigma: float = 1.0, gp_weight: float = 10.0) -> GANStep:
    """``method``: ``"meg"`` (energy + entropy), ``"meg-nomi"`` (the ablation, ``mi_weight`` = 0) or
    ``"wgan-gp"`` (with gradient-penalty weight ``gp_weight``; Gulrajani et al.'s toy script uses 0.1)."""
    common = {"sample_real": sample_real, "sample_z": sample_z, "n_critic": n_critic, "lr": lr, "betas": betas,
              "g_lr": g_lr, "g_betas": g_betas}
    if method == "wgan-gp":
        return wgan_gp_step(generator, critic, gp_weight=gp_weight, **common)
    if method == "meg":
        return meg_step(generator, critic, mi_net, lam=lam, mi_weight=mi_weight, estimator=estimator, sigma=sigma,
                        **common)
    if method == "meg-nomi":
        return meg_step(generator, critic, None, lam=lam, mi_weight=0.0, **common)
    raise ValueError(f"method must be 'meg', 'meg-nomi' or 'wgan-gp', got {method!r}")


def train(gan_step: GANStep, run: Any, *, name: str, steps: int, config: dict, log_every: int = 50,
          checkpoints: int = 4, on_log: Callable[[int], dict] | None = None) -> Runtime:
    """Run ``steps`` generator iterations of ``gan_step`` under a :class:`Runtime` that checkpoints into
    ``run.checkpoints / name`` (so several models of one run resume independently).

    Args:
        name: the model's name (checkpoint folder, progress bar, ``model`` field of the logged lines).
        config: the resolved experiment config (checkpoints of another config are refused).
        log_every: log the iteration's scalars (not means: the trainers' curves are snapshots) every this many
            iterations.
        checkpoints: checkpoints over the run.
        on_log: extra metrics to log at those iterations, ``(step) -> dict``.
    """
    rt = Runtime(run, config={**config, "model": name}, model=gan_step.modules(), optimizer=gan_step.optimizers(),
                 directory=run.checkpoints / name, every=max(1, steps // checkpoints), keep_last=1)
    rt.resume()
    for step in rt.steps(steps, desc=name, log_every=log_every):
        logs = gan_step(rt)
        if step.logging:
            step.log(model=name, **logs, **(on_log(step.number) if on_log is not None else {}))
    rt.save()  # the final weights, so a resumed run evaluates the same models (a no-op if just saved)
    return rt


# --------------------------------------------------------------------------------------------------------------
# The recipe audit table every energy experiment reports
# --------------------------------------------------------------------------------------------------------------


def preset_value(config_cls: type, presets: dict[str, dict[str, Any]], preset: str, key: str) -> Any:
    """The value of config field ``key`` under ``preset`` (the preset's override, else the field's default)."""
    if key in presets.get(preset, {}):
        return presets[preset][key]
    f = {f.name: f for f in dataclasses.fields(config_cls)}[key]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def recipe_table(run: Any, config_cls: type, presets: dict[str, dict[str, Any]],
                 rows: list[tuple[str, str | tuple[str, str], str, str, str]], caption: str = "") -> None:
    """The audit table "setting / ours (quick) / ours (full) / paper / official code / why different".

    Args:
        rows: ``(setting, key, paper, official, why)``; ``key`` names a config field (its quick and full values are
            read from ``presets`` and the field defaults) or is a ``(quick, full)`` pair of fixed strings.
    """

    def show(v: Any) -> str:
        return ", ".join(map(str, v)) if isinstance(v, tuple) else f"{v:g}" if isinstance(v, float) else str(v)

    table = []
    for setting, key, paper, official, why in rows:
        quick, full = key if isinstance(key, tuple) else (show(preset_value(config_cls, presets, p, key))
                                                          for p in ("quick", "full"))
        table.append([setting, quick, full, paper, official, why])
    run.table(["setting", "ours (quick)", "ours (full)", "paper", "official code", "why different"], table,
              caption=caption)


# --------------------------------------------------------------------------------------------------------------
# Latent MALA on a trained pair
# --------------------------------------------------------------------------------------------------------------


def latent_energy(generator: nn.Module, energy: Callable[[torch.Tensor], torch.Tensor]
                  ) -> Callable[[torch.Tensor], torch.Tensor]:
    """z -> U(G(z)) (the generator in eval mode, so chains do not share batch-norm statistics)."""
    generator.eval()
    return lambda z: energy(generator(z))


def refine(generator: nn.Module, energy: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor, *,
           step: float, n_steps: int, temperature: float, prior: bool, target_accept: float | None,
           adapt_rate: float = 0.2, generator_rng: torch.Generator | None = None, batch: int = 4096,
           trace: bool = False) -> tuple[torch.Tensor, dict[str, Any]]:
    """Latent MALA on U(G(z)) in batches; returns the refined codes and the merged acceptance statistics."""
    fn = latent_energy(generator, energy)
    outs, rates, steps, traces = [], [], [], []
    for i in range(0, len(z), batch):
        zi, log = mala(fn, z[i:i + batch], step=step, n_steps=n_steps, temperature=temperature, prior=prior,
                       target_accept=target_accept, adapt_rate=adapt_rate, generator=generator_rng, trace=trace,
                       log=True)
        outs.append(zi)
        rates.append(log["accept_rate"])
        steps.append(log["final_step"])
        if trace:
            traces.append(log["trace"])
    out = {"accept_rate": torch.stack(rates).mean(0), "final_step": float(np.mean(steps))}
    if trace:
        out["trace"] = torch.cat(traces, 1)
    return torch.cat(outs), out
