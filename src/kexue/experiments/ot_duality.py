"""ot-duality: the transport LP, its dual, and when a single potential suffices (post 2; kexue.fm/archives/6280).

Claims checked on random discrete problems:
1. strong duality: the primal min <Gamma, C> and the dual max a.f + b.g, solved independently, have the same value;
   the dual is feasible (f_i + g_j <= C_ij) and complementary slackness holds (Gamma_ij > 0 => f_i + g_j = C_ij);
2. for a metric cost one may take g = -f (Kantorovich-Rubinstein): the single-potential LP reaches the primal value;
   for the squared cost it need not (the post's caveat);
3. POT's network simplex (the library's engine) agrees with HiGHS on every problem.
"""

from dataclasses import dataclass

import numpy as np
import torch

from kexue._progress import progress
from kexue.eval.plots import subplots
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.ops.ot import cost_matrix, kantorovich_rubinstein_lp, lp_duality, lp_primal, transport_plan


@dataclass
class Config(ExperimentConfig):
    problems: int = param(100, "random problems", min=1)
    n: int = param(12, "source points per problem", min=2, max=200)
    m: int = param(10, "target points per problem", min=2, max=200)
    dim: int = param(2, "dimension of the points", min=1)


def _random_problem(cfg: Config, gen: torch.Generator):
    x = torch.randn(cfg.n, cfg.dim, generator=gen, dtype=torch.float64)
    y = torch.randn(cfg.m, cfg.dim, generator=gen, dtype=torch.float64) + 1.0
    a = torch.rand(cfg.n, generator=gen, dtype=torch.float64) + 0.05
    b = torch.rand(cfg.m, generator=gen, dtype=torch.float64) + 0.05
    return x, y, a / a.sum(), b / b.sum()


def run(cfg: Config, run: Run) -> dict:
    gen = torch.Generator().manual_seed(cfg.seed)
    rows = []
    bar = progress(range(cfg.problems), desc="ot-duality", unit="problem")
    for k in bar:
        x, y, a, b = _random_problem(cfg, gen)
        M = cost_matrix(x, y)
        d = lp_duality(a, b, M)
        _, pot = transport_plan(a, b, M, log=True)
        # Single potential on the common support x ∪ y: a lives on the x's, b on the y's.
        z = torch.cat([x, y])
        az, bz = torch.cat([a, torch.zeros_like(b)]), torch.cat([torch.zeros_like(a), b])
        metric_primal = lp_primal(az, bz, cost_matrix(z, z, 1)).value
        metric_kr = kantorovich_rubinstein_lp(az, bz, cost_matrix(z, z, 1)).value
        sq_primal = lp_primal(az, bz, cost_matrix(z, z, 2)).value
        sq_kr = kantorovich_rubinstein_lp(az, bz, cost_matrix(z, z, 2)).value
        row = {"problem": k, "primal": d.primal.value, "dual": d.dual.value, "gap": d.gap,
               "dual_violation": d.max_violation, "slackness": d.max_slackness,
               "pot_vs_highs": abs(pot["cost"] - d.primal.value),
               "metric_gap_kr": metric_primal - metric_kr, "squared_gap_kr": sq_primal - sq_kr,
               "squared_gap_rel": (sq_primal - sq_kr) / sq_primal}
        run.log(step=k, **row)
        rows.append(row)
        bar.set_postfix(gap=f"{d.gap:.1e}")
        if k == 0:
            first = (x, y, a, b, d)

    def worst(key: str) -> float:
        return max(abs(r[key]) for r in rows)

    metrics = {"max_duality_gap": worst("gap"), "max_dual_violation": worst("dual_violation"),
               "max_slackness_residual": worst("slackness"), "max_pot_vs_highs": worst("pot_vs_highs"),
               "max_metric_kr_gap": worst("metric_gap_kr"),
               "mean_squared_kr_gap_rel": float(np.mean([r["squared_gap_rel"] for r in rows])),
               "squared_kr_strictly_lower": sum(r["squared_gap_kr"] > 1e-8 for r in rows) / len(rows)}
    run.summary("max_duality_gap", metrics["max_duality_gap"], bar=1e-8, direction="min",
                note=f"|primal − dual| over {cfg.problems} problems")
    run.summary("max_slackness_residual", metrics["max_slackness_residual"], bar=1e-8, direction="min",
                note="|f_i + g_j − C_ij| where the plan moves mass")
    run.summary("max_metric_kr_gap", metrics["max_metric_kr_gap"], bar=1e-8, direction="min",
                note="primal − single-potential dual, metric cost |x − y|")
    run.summary("squared_kr_strictly_lower", metrics["squared_kr_strictly_lower"], direction="max",
                note="fraction of problems where g = −f loses value under the cost |x − y|²")
    run.summary("max_pot_vs_highs", metrics["max_pot_vs_highs"], bar=1e-9, direction="min",
                note="POT network simplex vs HiGHS LP")

    run.section("Claim")
    run.text("Optimal transport is a linear programme; its dual max a·f + b·g subject to f_i + g_j ≤ C_ij has the "
             "same value (strong duality, via Farkas' lemma). When the cost is a metric one may take g = −f, which "
             "gives the Kantorovich–Rubinstein form behind WGAN's 1-Lipschitz critic; for a non-metric cost that "
             "step is not allowed (post 6280).")
    run.section("Results")
    run.table(["check", "worst over problems", "expected"], [
        ["primal − dual (HiGHS, solved separately)", metrics["max_duality_gap"], "0 (strong duality)"],
        ["dual constraint violation max(f_i + g_j − C_ij, 0)", metrics["max_dual_violation"], "0"],
        ["complementary slackness residual", metrics["max_slackness_residual"], "0"],
        ["POT network simplex vs HiGHS", metrics["max_pot_vs_highs"], "0"],
        ["metric cost: primal − single-potential dual", metrics["max_metric_kr_gap"], "0 (g = −f allowed)"],
        ["squared cost: mean relative loss of g = −f", metrics["mean_squared_kr_gap_rel"], "> 0 (not allowed)"],
    ], caption=f"{cfg.problems} random problems, {cfg.n}×{cfg.m} points in {cfg.dim}-D, random weights.")
    _figures(run, rows, first)
    return metrics


def _figures(run: Run, rows: list[dict], first) -> None:
    x, y, a, b, d = first
    fig, axes = subplots(1, 3, width=4.0, height=3.6)
    ax = axes[0, 0]
    plan = d.primal.plan.numpy()
    xs, ys = x[:, :2].numpy() if x.shape[1] > 1 else np.c_[x.numpy(), np.zeros(len(x))], \
        y[:, :2].numpy() if y.shape[1] > 1 else np.c_[y.numpy(), np.zeros(len(y))]
    for i, j in zip(*np.nonzero(plan > 1e-9), strict=True):
        ax.plot([xs[i, 0], ys[j, 0]], [xs[i, 1], ys[j, 1]], "-", color="gray", lw=0.3 + 25 * plan[i, j], alpha=0.7)
    f, g = d.dual.f.numpy(), d.dual.g.numpy()
    s1 = ax.scatter(xs[:, 0], xs[:, 1], s=600 * a.numpy(), c=f, cmap="coolwarm", edgecolor="k", label="source (f)")
    ax.scatter(ys[:, 0], ys[:, 1], s=600 * b.numpy(), c=g, cmap="coolwarm", marker="s", edgecolor="k",
               label="target (g)")
    fig.colorbar(s1, ax=ax, shrink=0.8, label="potential")
    ax.set_title("optimal plan and dual potentials")
    ax.legend(fontsize=7, loc="lower right")

    ax = axes[0, 1]
    ax.scatter([r["primal"] for r in rows], [r["dual"] for r in rows], s=12)
    lim = [min(r["primal"] for r in rows), max(r["primal"] for r in rows)]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xlabel("primal value")
    ax.set_ylabel("dual value")
    ax.set_title(f"strong duality (max gap {max(abs(r['gap']) for r in rows):.1e})")

    ax = axes[0, 2]
    eps = 1e-16
    ax.hist([max(r["metric_gap_kr"], eps) for r in rows], bins=np.logspace(-16, 2, 37), alpha=0.7,
            label="metric |x−y|")
    ax.hist([max(r["squared_gap_kr"], eps) for r in rows], bins=np.logspace(-16, 2, 37), alpha=0.7,
            label="squared |x−y|²")
    ax.set_xscale("log")
    ax.set_xlabel("primal − single-potential dual")
    ax.set_ylabel("problems")
    ax.set_title("when may g = −f?")
    ax.legend(fontsize=8)
    run.figure(fig, "duality", "Left: an optimal plan (line width ∝ mass) with its dual potentials. Middle: primal vs "
               "dual value on every problem. Right: the single-potential (g = −f) dual loses nothing for a metric "
               "cost (values at 1e-16 are exact zeros) but falls short for the squared cost.", headline=True)


EXPERIMENT = Experiment(
    name="ot-duality",
    post=2,
    description="transport LP vs its dual on random problems; when g = −f is allowed (metric vs squared cost)",
    config=Config,
    run=run,
    presets={"quick": {}, "full": {"problems": 1000}},
    smoke={"problems": 3, "n": 5, "m": 4},
    headline=True,
)
