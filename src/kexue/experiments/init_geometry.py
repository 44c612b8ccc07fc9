"""init-geometry: two random vectors in high dimension are almost orthogonal (post 5; kexue.fm/archives/7076, 7180).

Claim: the angle theta between two independent random vectors in R^n has density proportional to sin^(n-2)(theta),
mean pi/2 and variance close to 1/(n-2); Su's post tabulates Var(theta) for n = 3 ... 1000. We draw Monte-Carlo
pairs for each n, compare the sample variance with the post's table, with the exact variance by quadrature and with
Laplace's 1/(n-2), and plot the empirical angle densities over the exact ones.
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from kexue._progress import progress
from kexue.eval.plots import subplots
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.ops.angles import angle_log_density, angle_variance, laplace_variance, random_angles

# Var(theta) from post 7076 (exact values, as printed there).
POST_TABLE = {3: 0.467401, 10: 0.110661, 20: 0.0525832, 50: 0.0204053, 100: 0.0101007, 200: 0.00502508,
              1000: 0.001001}


@dataclass
class Config(ExperimentConfig):
    dims: tuple[int, ...] = param((3, 10, 20, 50, 100, 200, 1000), "dimensions n to sample in", min=2)
    pairs: int = param(1_000_000, "Monte-Carlo pairs per dimension", min=100)
    bins: int = param(60, "histogram bins per panel", min=5, max=1000)


def run(cfg: Config, run: Run) -> dict:
    gen = torch.Generator(device=run.device).manual_seed(cfg.seed)
    rows, samples = [], {}
    bar = progress(cfg.dims, desc="init-geometry", unit="dim")
    for n in bar:
        theta = random_angles(n, cfg.pairs, generator=gen, device=run.device)
        mc = theta.var().item()
        exact = angle_variance(n)
        table = POST_TABLE.get(n)
        rel = abs(mc - table) / table if table else None
        row = {"n": n, "var_mc": mc, "var_exact": exact, "var_post": table, "var_laplace": laplace_variance(n)
               if n > 2 else None, "mean_mc": theta.mean().item(), "rel_err_mc_vs_post": rel}
        run.log(step=n, **row)
        rows.append(row)
        samples[n] = theta.float().cpu().numpy()
        bar.set_postfix(n=n, var=f"{mc:.4g}")

    in_table = [r for r in rows if r["var_post"] is not None]
    metrics = {}
    if in_table:
        worst = max(in_table, key=lambda r: r["rel_err_mc_vs_post"])
        metrics["max_rel_err_mc_vs_post"] = worst["rel_err_mc_vs_post"]
        metrics["max_rel_err_exact_vs_post"] = max(abs(r["var_exact"] - r["var_post"]) / r["var_post"]
                                                   for r in in_table)
        run.summary("max_rel_err_mc_vs_post", metrics["max_rel_err_mc_vs_post"], bar=0.02, direction="min",
                    note=f"Monte-Carlo Var(θ) vs the post's table, worst n = {worst['n']}")
        run.summary("max_rel_err_exact_vs_post", metrics["max_rel_err_exact_vs_post"], bar=1e-3, direction="min",
                    note="quadrature vs the post's table (the table is rounded to 4–6 digits)")
        for r in in_table:
            if r["n"] in (10, 100, 1000):
                run.summary(f"var_theta_n{r['n']}", r["var_mc"], paper=r["var_post"], direction="min",
                            note="Monte-Carlo Var(θ)")
    metrics["max_abs_mean_offset"] = max(abs(r["mean_mc"] - math.pi / 2) for r in rows)

    run.section("Claim")
    run.text("Two independent random vectors in high dimension are almost orthogonal: the angle between them has "
             "density ∝ sin^(n−2)θ, mean π/2 and variance ≈ 1/(n−2) (post 7076). That is why a matrix with i.i.d. "
             "entries of variance 1/n is close to orthogonal, the geometric reading of LeCun/Xavier-type "
             "initialisation (post 7180).")
    run.section("Variance of the angle")
    run.table(["n", "Monte-Carlo", "exact (quadrature)", "post's table", "Laplace 1/(n−2)", "MC vs post"],
              [[r["n"], r["var_mc"], r["var_exact"], "–" if r["var_post"] is None else r["var_post"],
                "–" if r["var_laplace"] is None else r["var_laplace"],
                "–" if r["rel_err_mc_vs_post"] is None else f"{100 * r['rel_err_mc_vs_post']:.2f}%"] for r in rows],
              caption=f"{cfg.pairs:,} Gaussian pairs per n, seed {cfg.seed}.")
    run.text("The Monte-Carlo variance matches the post's table to within sampling error (relative standard error "
             f"≈ √(2/pairs) = {math.sqrt(2 / cfg.pairs):.2%}); Laplace's 1/(n−2) is close for large n and off for "
             "small n, where the density is far from Gaussian.")
    _figures(cfg, run, rows, samples)
    return metrics


def _figures(cfg: Config, run: Run, rows: list[dict], samples: dict[int, np.ndarray]) -> None:
    dims = [r["n"] for r in rows]
    ncols = min(4, len(dims))
    nrows = math.ceil(len(dims) / ncols)
    fig, axes = subplots(nrows, ncols, width=3.2, height=2.6)
    for ax, n in zip(axes.flat, dims, strict=False):
        theta = samples[n]
        sd = math.sqrt(angle_variance(n))
        lo, hi = max(0.0, math.pi / 2 - 5 * sd), min(math.pi, math.pi / 2 + 5 * sd)
        ax.hist(theta, bins=cfg.bins, range=(lo, hi), density=True, color="#9ecae1", label="samples")
        grid = torch.linspace(lo, hi, 400, dtype=torch.float64).clamp(1e-12, math.pi - 1e-12)
        ax.plot(grid.numpy(), angle_log_density(grid, n).exp().numpy(), "k-", lw=1.2, label="exact p_n(θ)")
        grid = grid.numpy()
        if n > 2:
            lap = math.sqrt(laplace_variance(n))
            ax.plot(grid, np.exp(-0.5 * ((grid - math.pi / 2) / lap) ** 2) / (lap * math.sqrt(2 * math.pi)), "r--",
                    lw=1, label="N(π/2, 1/(n−2))")
        ax.set_title(f"n = {n}")
        ax.set_xlim(0, math.pi)  # one x-range for all panels, so the concentration at π/2 is visible
        ax.set_xticks([0, math.pi / 2, math.pi], ["0", "π/2", "π"])
        ax.set_xlabel("θ")
        ax.set_yticks([])
    for ax in list(axes.flat)[len(dims):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="upper left")
    run.figure(fig, "angle_densities", "Angle between random Gaussian vectors in R^n: histogram of samples, "
               "exact density ∝ sin^(n−2)θ, and Laplace's Gaussian, on [0, π]. The spread shrinks like 1/√n: random "
               "vectors are almost orthogonal.", headline=True)

    fig, axes = subplots(1, 1, width=4.6, height=3.4)
    ax = axes[0, 0]
    ns = np.array(dims, dtype=float)
    ax.loglog(ns, [r["var_mc"] for r in rows], "o", label="Monte-Carlo")
    ax.loglog(ns, [r["var_exact"] for r in rows], "k-", lw=1, label="exact (quadrature)")
    table_n = [n for n in dims if n in POST_TABLE]
    ax.loglog(table_n, [POST_TABLE[n] for n in table_n], "x", ms=9, color="C3", label="post's table")
    big = ns[ns > 2]
    ax.loglog(big, 1 / (big - 2), ":", color="gray", label="1/(n−2)")
    ax.set_xlabel("n")
    ax.set_ylabel("Var(θ)")
    ax.legend(fontsize=8)
    run.figure(fig, "angle_variance", "Var(θ) against n: samples, quadrature, the post's table and Laplace's 1/(n−2).")


EXPERIMENT = Experiment(
    name="init-geometry",
    post=5,
    description="angle between random vectors in R^n: Monte-Carlo Var(θ) vs the post's table",
    config=Config,
    run=run,
    presets={"quick": {"pairs": 100_000}, "full": {}},
    smoke={"pairs": 2000, "dims": (3, 50)},
    headline=True,
)
