"""The duality test of ``wgan-2d``: a fresh critic trained against a frozen generator, its gap against the exact W1.

The Kantorovich–Rubinstein duality says the best 1-Lipschitz critic's gap E_p f − E_q f equals W1(p, q); here a
fresh gradient-penalised critic (:func:`fit_critic`) measures the dual side on large fresh samples, and POT's exact
solver the primal side on ``refit_points`` per side, less its finite-sample floor (:func:`w1_floor`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import torch

from kexue.losses.gan import gradient_norms, gradient_penalty, interpolate, wgan_critic_loss
from kexue.models.gan import MLPCritic
from kexue.ops.ot import wasserstein

if TYPE_CHECKING:
    from kexue.experiments.wgan_2d import Config


Sampler = Callable[[int, torch.Generator], torch.Tensor]


def fit_critic(sample_p: Sampler, sample_q: Sampler, x_eval: torch.Tensor, y_eval: torch.Tensor, *, width: int,
               depth: int, steps: int, batch: int, lr: float, gp_weight: float, one_sided: bool = True,
               seed: int = 0, chunk: int = 20_000) -> dict[str, float]:
    """Train a fresh gradient-penalised MLP critic to convergence between two fixed distributions; its gap.

    The critic maximises E_p f − E_q f − λ E[(‖∇f(x̂)‖ − 1)²] (only the excess above 1 if ``one_sided``) on fresh
    batches each step, with Adam (β = (0.5, 0.9)) and a cosine-decayed learning rate, so the last updates average
    out the batch noise. Its gap is then measured on large fresh samples: a population estimate of the dual value,
    which the Kantorovich–Rubinstein duality says equals W1(p, q) for the best 1-Lipschitz f. The soft penalty lets
    the slope exceed 1 a little: for p and q = p shifted by v the best critic is linear with slope 1 + ‖v‖/(2λ) and
    gap ‖v‖ + ‖v‖²/(4λ) (one-sided).

    Args:
        sample_p, sample_q: ``(n, generator) -> [n, d]`` fresh points of each distribution.
        x_eval, y_eval: ``[N, d]`` fresh points of p and q for the final gap (not used in training).
        width, depth: the MLP critic's size (:class:`kexue.models.gan.MLPCritic`).
        steps, batch, lr: updates, points per side per update, peak learning rate.
        gp_weight: λ; one_sided: penalise only slopes above 1.
        seed: initial weights, batches and interpolation weights (the global RNG is left as it was).

    Returns:
        ``estimate`` (E_p f − E_q f on the eval points) and the 99th percentile and maximum of ‖∇f‖ on interpolates
        of the eval points (how far the soft constraint lets the slope exceed 1).
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        D = MLPCritic(in_dim=x_eval.shape[1], width=width, depth=depth).to(x_eval.device)
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.9))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        x, y = sample_p(batch, gen), sample_q(batch, gen)
        loss = wgan_critic_loss(D(x), D(y)) + gp_weight * gradient_penalty(D, x, y, one_sided=one_sided,
                                                                           generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        schedule.step()
    with torch.no_grad():
        fx = torch.cat([D(x_eval[i:i + chunk]) for i in range(0, len(x_eval), chunk)])
        fy = torch.cat([D(y_eval[i:i + chunk]) for i in range(0, len(y_eval), chunk)])
    n = min(len(x_eval), len(y_eval), chunk)
    norms = gradient_norms(D, interpolate(x_eval[:n], y_eval[:n], generator=gen), create_graph=False)
    return {"estimate": (fx.double().mean() - fy.double().mean()).item(),
            "grad_q99": torch.quantile(norms, 0.99).item(), "grad_max": norms.max().item()}


def w1_floor(draw: Callable[[int], torch.Tensor], n: int, draws: int) -> float:
    """The finite-sample floor of the exact W1 at ``n`` points: the mean over ``draws`` pairs of independent
    samples of the *same* distribution (``draw(i) -> [2n, d]``, a fresh sample per i), whose true W1 is 0."""
    values = []
    for i in range(draws):
        pts = draw(i).double()
        values.append(wasserstein(pts[:n], pts[n:2 * n]).item())
    return float(np.mean(values))


def duality_point(cfg: Config, draw_data: Callable[[int, int], torch.Tensor], G: torch.nn.Module, pool: torch.Tensor,
                  floor: float, step: int, device: torch.device) -> dict:
    """The duality test at one frozen generator: exact W1 on ``refit_points`` fresh points per side, minus the floor
    (the W1 estimate a critic can see), and fresh one-sided / two-sided GP critics' gaps on large fresh samples.
    ``draw_data(n, seed) -> [n, 2]`` draws fresh data points; ``pool`` ``[P, 2]`` is the data the critics train on."""
    seed = cfg.seed * 10**6 + 500_000 + step
    gen = torch.Generator().manual_seed(seed)

    @torch.no_grad()
    def fake(n: int, g: torch.Generator) -> torch.Tensor:
        return G(torch.randn(n, G.z_dim, generator=g).to(device))

    def real(n: int, g: torch.Generator) -> torch.Tensor:
        return pool[torch.randint(len(pool), (n,), generator=g)]

    n = cfg.refit_points
    x_w1 = draw_data(n, seed + 1).to(device)
    y_w1 = fake(n, gen)
    w1 = wasserstein(x_w1.double(), y_w1.double()).item()
    # A second, model-free reference: the sample W1's bias falls like n^(-1/2) in 2-D, so W1 at n and the mean over
    # the four disjoint quarters at n/4 extrapolate to n = inf as 2 W1(n) - W1(n/4).
    quarter = float(np.mean([wasserstein(x_w1[i::4].double(), y_w1[i::4].double()).item() for i in range(4)]))
    x_eval = draw_data(cfg.refit_eval_points, seed + 2).to(device)
    y_eval = fake(cfg.refit_eval_points, gen)
    row = {"step": step, "w1": w1, "floor": floor, "w1_minus_floor": w1 - floor, "w1_extrapolated": 2 * w1 - quarter}
    for name, one_sided in (("one_sided", True), ("two_sided", False)):
        fit = fit_critic(real, fake, x_eval, y_eval, width=cfg.refit_width, depth=cfg.refit_depth,
                         steps=cfg.refit_critic_steps, batch=cfg.refit_batch, lr=cfg.refit_lr,
                         gp_weight=cfg.refit_gp_weight, one_sided=one_sided, seed=seed + 3)
        row.update({f"{name}_{k}": v for k, v in fit.items()})
        target = w1 - floor
        row[f"{name}_rel_err"] = abs(fit["estimate"] - target) / target if target > 0 else math.inf
        ext = row["w1_extrapolated"]
        row[f"{name}_rel_err_extrapolated"] = abs(fit["estimate"] - ext) / ext if ext > 0 else math.inf
    return row
