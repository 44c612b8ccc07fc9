"""ema-dirac: weight EMA finds the centre that a GAN's raw weights circle (post 4; kexue.fm/archives/6575, 6583).

Claim (post 6583, "the third stage of GANs"): on the Dirac-GAN toy, generator ``G = θ`` (one point) against the
data point 0, with a linear critic ``D(x) = ψ·x``, the WGAN game ``min_θ max_ψ ψθ`` makes gradient descent-ascent
circle the equilibrium ``(0, 0)`` forever: the raw weights never converge. Their exponential moving average does,
because averaging a circular orbit over many periods gives its centre. We train with alternating SGD (which keeps
the orbit bounded), follow the weights with :class:`kexue.train.ema.EMA` at two decays, and measure the final
distance of raw and averaged weights to the centre.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kexue._progress import progress
from kexue.eval.plots import subplots
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.train.ema import EMA


@dataclass
class Config(ExperimentConfig):
    steps: int = param(20_000, "alternating generator/critic updates", min=10)
    lr: float = param(0.05, "SGD learning rate of both players", min=1e-6, max=1.0)
    decays: tuple[float, ...] = param((0.99, 0.999), "EMA decays to compare", min=0.0, max=0.999999)
    theta0: float = param(1.0, "initial generator position", min=-10, max=10)
    psi0: float = param(0.5, "initial critic slope", min=-10, max=10)
    log_every: int = param(10, "record the trajectory every this many steps", min=1)


class DiracGAN(nn.Module):
    """Generator position θ and critic slope ψ of the Dirac-GAN (data at 0)."""

    def __init__(self, theta: float, psi: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta, dtype=torch.float64))
        self.psi = nn.Parameter(torch.tensor(psi, dtype=torch.float64))

    def value(self) -> torch.Tensor:
        """WGAN value ``D(G) - D(data) = ψθ - ψ·0``: the critic maximises it, the generator minimises it."""
        return self.psi * self.theta


def run(cfg: Config, run: Run) -> dict:
    game = DiracGAN(cfg.theta0, cfg.psi0).to(run.device)
    opt_g = torch.optim.SGD([game.theta], lr=cfg.lr)
    opt_d = torch.optim.SGD([game.psi], lr=cfg.lr)
    emas = {d: EMA(game, d, dtype=torch.float64) for d in cfg.decays}
    steps, raw, averaged = [], [], {d: [] for d in cfg.decays}

    def record(step: int) -> None:
        steps.append(step)
        raw.append((game.theta.item(), game.psi.item()))
        for d, ema in emas.items():
            a = ema.averaged()
            averaged[d].append((a["theta"].item(), a["psi"].item()))

    record(0)
    bar = progress(range(1, cfg.steps + 1), desc="ema-dirac", unit="step")
    for step in bar:
        # alternating gradient descent-ascent: critic ascends, then the generator descends against the new critic
        opt_d.zero_grad()
        (-game.value()).backward()
        opt_d.step()
        opt_g.zero_grad()
        game.value().backward()
        opt_g.step()
        for ema in emas.values():
            ema.update(game)
        if step % cfg.log_every == 0 or step == cfg.steps:
            record(step)
            dist = {f"ema_{d}": math.hypot(*averaged[d][-1]) for d in cfg.decays}
            run.log(step, raw_distance=math.hypot(*raw[-1]), **dist)

    raw_np = np.array(raw)
    raw_final = float(np.hypot(*raw_np[-1]))
    radius0 = math.hypot(cfg.theta0, cfg.psi0)
    metrics = {"raw_distance": raw_final, "initial_radius": radius0}
    for d in cfg.decays:
        metrics[f"ema_{d}_distance"] = float(np.hypot(*averaged[d][-1]))

    # --- report --------------------------------------------------------------------------------------------------
    run.section("Claim")
    run.text("On the Dirac-GAN (generator θ, linear critic ψ·x, data at 0), gradient descent-ascent on the WGAN value "
             "ψθ circles the equilibrium (0, 0) instead of converging (post 6583). An exponential moving average of "
             "the weights, Su's weight-EMA trick from post 6575, averages the orbit and converges to its centre; "
             "the EMA does not change the trajectory itself.")
    run.section("Result")
    rows = [["raw weights", raw_final, raw_final / radius0]]
    rows += [[f"EMA, decay {d}", metrics[f"ema_{d}_distance"], metrics[f"ema_{d}_distance"] / radius0]
             for d in cfg.decays]
    run.table(["weights", "distance to centre", "relative to start"], rows,
              caption=f"After {cfg.steps:,} alternating SGD steps, learning rate {cfg.lr}, start "
                      f"(θ, ψ) = ({cfg.theta0}, {cfg.psi0}).")
    best = max(cfg.decays)
    run.summary("ema_distance", metrics[f"ema_{best}_distance"] / radius0, bar=0.05, direction="min",
                note=f"final distance of the EMA ({best}) to the centre, relative to the start radius")
    run.summary("raw_distance", raw_final / radius0, direction="min",
                note="final distance of the raw weights to the centre, relative to the start radius")

    fig, axes = subplots(1, 2, width=4.6, height=4.2)
    ax = axes[0, 0]
    ax.plot(raw_np[:, 0], raw_np[:, 1], lw=0.6, color="0.6", label="raw (θ, ψ)")
    for d, colour in zip(cfg.decays, ("tab:blue", "tab:red", "tab:green", "tab:purple"), strict=False):
        a = np.array(averaged[d])
        ax.plot(a[:, 0], a[:, 1], lw=1.6, color=colour, label=f"EMA {d}")
    ax.plot([0], [0], "k*", ms=12, label="equilibrium")
    ax.set_xlabel("generator θ")
    ax.set_ylabel("critic ψ")
    ax.set_aspect("equal")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("trajectories")
    ax = axes[0, 1]
    ax.semilogy(steps, np.hypot(raw_np[:, 0], raw_np[:, 1]), color="0.5", label="raw")
    for d, colour in zip(cfg.decays, ("tab:blue", "tab:red", "tab:green", "tab:purple"), strict=False):
        a = np.array(averaged[d])
        ax.semilogy(steps, np.hypot(a[:, 0], a[:, 1]), color=colour, label=f"EMA {d}")
    ax.set_xlabel("step")
    ax.set_ylabel("distance to (0, 0)")
    ax.legend(fontsize=8)
    ax.set_title("distance to the equilibrium")
    run.figure(fig, "dirac_trajectories", "Raw weights keep circling the equilibrium; their EMA spirals into it.",
               headline=True)
    run.text(f"The raw weights end at distance {raw_final:.3g} from the centre (they started at {radius0:.3g}); the "
             + ", ".join(f"EMA with decay {d} at {metrics[f'ema_{d}_distance']:.3g}" for d in cfg.decays) + ". "
             "A decay closer to 1 averages over more periods of the orbit and gets closer to the centre, at the cost "
             "of a longer lag at the start.")
    return metrics


EXPERIMENT = Experiment(
    name="ema-dirac",
    post=4,
    description="Dirac-GAN: raw weights circle the equilibrium, their weight EMA converges to it",
    config=Config,
    run=run,
    presets={"quick": {"steps": 8000}, "full": {}},
    smoke={"steps": 400, "decays": (0.9,)},
)
