"""energy-optimizers: does heavy momentum or a large learning rate in G cost diversity? (post 1; kexue.fm/archives/6316)

Post 6316's energy picture: the generator moves its samples downhill on the energy; with momentum or a large step
a sample overshoots the nearest pit and piles up in a distant one, so modes get lost. MEG uses Adam β1 = 0.5, O-GAN
RMSprop (no momentum). The claim is qualitative and made for the plain energy GAN (the entropy term is the post's
separate remedy for mode collapse), so the sweep runs with the MI term off and on: the energy GAN trains on 25
Gaussians with the generator's (and its MI network's) Adam β1 in {0, 0.5, 0.9} at two learning rates, the energy's
optimiser fixed, and each run is scored by modes covered, the share of high-quality samples and the KL of the mode
histogram to uniform (no MALA, so the generator alone is judged).
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch

from kexue.eval.plots import subplots
from kexue.experiments._energy import build_step, toy_metrics, toy_set, train
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.models.energy import MLPStatistics
from kexue.models.gan import MLPCritic, MLPGenerator


@dataclass
class Config(ExperimentConfig):
    beta1s: tuple[float, ...] = param((0.0, 0.5, 0.9), "Adam beta1 values of the generator", min=0.0, max=0.999)
    g_lrs: tuple[float, ...] = param((1e-4, 1e-3), "generator learning rates", min=1e-7, max=1.0)
    lr: float = param(1e-4, "the energy's Adam learning rate (fixed across runs)", min=1e-7, max=1.0)
    beta2: float = param(0.9, "Adam beta2 of every network", min=0.0, max=0.9999)
    steps: int = param(100_000, "generator iterations per run", min=1)
    n_critic: int = param(5, "energy updates per generator update", min=1)
    batch_size: int = param(256, "real and generated points per update", min=2)
    width: int = param(512, "hidden units of G, U and T", min=4)
    depth: int = param(3, "hidden layers of G, U and T", min=1)
    z_dim: int = param(2, "latent dimension", min=1)
    lam: float = param(0.1, "score-penalty weight on real data", min=0.0)
    mi_weights: tuple[float, ...] = param((0.0, 1.0), "weights of the MI (entropy) term (0 = plain energy GAN)",
                                          min=0.0)
    pool: int = param(100_000, "real points drawn once (training batches come from here)", min=100)
    eval_samples: int = param(2500, "generated samples scored per run", min=100)
    log_every: int = param(100, "iterations between logged training scalars", min=1)


def run(cfg: Config, run: Run) -> dict:
    toy = toy_set("25gaussians", cfg.pool, seed=cfg.seed)
    device = run.device
    pool = toy.data.to(device)
    results, samples = {}, {}
    settings = [(w, lr, b1) for w in cfg.mi_weights for lr in cfg.g_lrs for b1 in cfg.beta1s]
    for w, lr, b1 in settings:
        torch.manual_seed(cfg.seed)  # same initial networks for every optimiser setting
        G = MLPGenerator(cfg.z_dim, 2, cfg.width, cfg.depth).to(device)
        U = MLPCritic(2, cfg.width, cfg.depth).to(device)
        T = MLPStatistics(2, cfg.z_dim, cfg.width, cfg.depth).to(device) if w > 0 else None
        step = build_step("meg" if w > 0 else "meg-nomi", G, U, T,
                          sample_real=lambda: pool[torch.randint(len(pool), (cfg.batch_size,), device=device)],
                          sample_z=lambda n: torch.randn(n, cfg.z_dim, device=device), lam=cfg.lam, mi_weight=w,
                          estimator="jsd", n_critic=cfg.n_critic, lr=cfg.lr, betas=(0.5, cfg.beta2), g_lr=lr,
                          g_betas=(b1, cfg.beta2))
        train(step, run, name=f"mi{w:g}-lr{lr:g}-b{b1:g}", steps=cfg.steps, config=asdict(cfg),
              log_every=cfg.log_every)
        G.eval()
        gen = torch.Generator(device=device).manual_seed(cfg.seed)
        with torch.no_grad():
            x = G(torch.randn(cfg.eval_samples, cfg.z_dim, generator=gen, device=device))
        results[(w, lr, b1)] = toy_metrics(toy, x)
        samples[(w, lr, b1)] = x.cpu().numpy()
        run.log(step=None, mi_weight=w, g_lr=lr, beta1=b1, **results[(w, lr, b1)])

    run.section("Claim")
    run.text("Post 6316: in the energy picture the generator's update moves samples downhill; momentum and large "
             "steps make them overshoot the nearest pit and gather in far ones, which costs diversity. Expected: "
             "more modes and a lower KL with β1 = 0 or a small learning rate than with β1 = 0.9 or a large one, "
             "at least for the plain energy GAN (MI weight 0).")
    run.text(f"Energy GAN on 25 Gaussians, MLPs {cfg.depth}×{cfg.width}, {cfg.steps:,} iterations × {cfg.n_critic} "
             f"energy steps, batch {cfg.batch_size}, λ = {cfg.lam}, MI weights {', '.join(map(str, cfg.mi_weights))}"
             f". The energy's Adam is fixed (lr {cfg.lr:g}, betas (0.5, {cfg.beta2})); the generator and its "
             "statistics network use the settings below. Every run starts from the same initial weights. Scores on "
             f"{cfg.eval_samples:,} samples, without MALA.")
    run.section("Results")
    run.table(["MI weight", "G learning rate", "G Adam β1", "modes (of 25)", "high quality", "KL to uniform"],
              [[w, f"{lr:g}", b1, r["modes"], r["high_quality"], r["kl"]] for (w, lr, b1), r in results.items()],
              caption=f"One run per setting (seed {cfg.seed}): differences of a few modes are within seed-to-seed "
                      "noise.")
    metrics = {f"mi{w:g}_lr{lr:g}_b{b1:g}_{k}": v for (w, lr, b1), r in results.items() for k, v in r.items()}
    hi, lo = max(cfg.g_lrs), min(cfg.g_lrs)
    b_hi, b_lo = max(cfg.beta1s), min(cfg.beta1s)
    mid = sorted(cfg.beta1s)[len(cfg.beta1s) // 2]
    lines = []
    for w in cfg.mi_weights:
        tag = "plain" if w == 0 else f"mi{w:g}"
        if b_hi != b_lo:
            gap = results[(w, hi, b_hi)]["kl"] - results[(w, hi, b_lo)]["kl"]
            metrics[f"kl_gap_momentum_{tag}"] = gap
            run.summary(f"kl_gap_momentum_{tag}", gap, bar=0.0, note=f"MI weight {w:g}: KL(β1={b_hi:g}) − "
                        f"KL(β1={b_lo:g}) at G lr {hi:g}; claim: > 0")
            lines.append(f"MI weight {w:g}: momentum KL gap {gap:+.3f}")
        if hi != lo:
            gap = results[(w, hi, mid)]["kl"] - results[(w, lo, mid)]["kl"]
            metrics[f"kl_gap_lr_{tag}"] = gap
            run.summary(f"kl_gap_lr_{tag}", gap, bar=0.0, note=f"MI weight {w:g}: KL(lr {hi:g}) − KL(lr {lo:g}) "
                        f"at β1 = {mid:g}; claim: > 0")
            lines.append(f"learning-rate KL gap {gap:+.3f}")
    gaps = [v for k, v in metrics.items() if k.startswith("kl_gap_")]
    run.text("Measured: " + "; ".join(lines) + f" (positive = the claim's direction): {sum(g > 0 for g in gaps)} "
             f"of {len(gaps)} comparisons point the way the post says.")

    # --- figures ----------------------------------------------------------------------------------------------
    rows = [(w, lr) for w in cfg.mi_weights for lr in cfg.g_lrs]
    fig, axes = subplots(len(rows), len(cfg.beta1s), width=2.8, height=2.8)
    for i, (w, lr) in enumerate(rows):
        for j, b1 in enumerate(cfg.beta1s):
            ax = axes[i, j]
            ax.scatter(*toy.centres.numpy().T, s=25, c="r", marker="+", lw=0.8)
            ax.scatter(*samples[(w, lr, b1)].T, s=1.0, alpha=0.4)
            r = results[(w, lr, b1)]
            ax.set_title(f"MI {w:g}, lr {lr:g}, β1 {b1:g}: {r['modes']} modes, KL {r['kl']:.2f}", fontsize=7)
            ax.set_xlim(-2, 2)
            ax.set_ylim(-2, 2)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    run.figure(fig, "optimizer_samples", "Samples on 25 Gaussians (red crosses: the centres) for each MI weight and "
               "generator optimiser setting.", headline=True)
    fig, axes = subplots(1, 2, width=3.6, height=3.0)
    for w, lr in rows:
        style = "o-" if w == 0 else "s--"
        axes[0, 0].plot(cfg.beta1s, [results[(w, lr, b)]["modes"] for b in cfg.beta1s], style,
                        label=f"MI {w:g}, lr {lr:g}")
        axes[0, 1].plot(cfg.beta1s, [results[(w, lr, b)]["kl"] for b in cfg.beta1s], style,
                        label=f"MI {w:g}, lr {lr:g}")
    axes[0, 0].set_ylabel("modes covered")
    axes[0, 1].set_ylabel("KL to uniform")
    for ax in axes[0]:
        ax.set_xlabel("generator Adam β1")
        ax.legend(fontsize=7)
    run.figure(fig, "optimizer_curves", "Modes covered and KL against the generator's momentum.")
    return {k: float(v) if isinstance(v, int | float | np.floating) else v for k, v in metrics.items()}


EXPERIMENT = Experiment(
    name="energy-optimizers",
    post=1,
    description="Energy GAN on 25 Gaussians, MI off/on: generator Adam beta1 {0, 0.5, 0.9} x two lrs; modes, KL",
    config=Config,
    run=run,
    presets={"quick": {"steps": 1500, "width": 64, "lr": 1e-3, "g_lrs": (1e-3, 4e-3), "n_critic": 2,
                       "log_every": 50},
             "full": {}},
    smoke={"steps": 2, "width": 8, "pool": 1000, "eval_samples": 200, "beta1s": (0.0, 0.9), "g_lrs": (1e-3, 2e-3),
           "mi_weights": (0.0, 0.5), "log_every": 1},
)
