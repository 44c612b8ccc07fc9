"""energy-2d: MEG on 2-D toy data — an energy with pits at the data, samples that cover every mode, latent MALA
(post 1; kexue.fm/archives/6316, 6331; MEG, arXiv:1901.08508).

Claims checked on 25 Gaussians, 8 Gaussians and the Swiss roll (``spec/energy-gan.md`` §5):

1. the energy GAN with the zero-centred real-data penalty and the entropy term (MEG) covers every mode with mostly
   high-quality samples and a mode histogram closer to uniform than WGAN-GP trained with the same networks and
   budget (VEEGAN/PacGAN protocol, :func:`kexue.eval.modes.mixture_modes`; the paper gives no 25-Gaussian numbers);
2. the learned density e^{-U}/Z, normalised on a grid, puts its mass on the data (no spurious modes);
3. latent MALA on U(G(z)) (:func:`kexue.ops.mcmc.mala`) moves samples into the pits: modes, quality and KL are
   reported before and after it; the chains are drawn over the density;
4. ablation: without the entropy term (MI weight 0) the generator loses modes.

Claims 1 and 4 are differences between models, so on the ``compare_on`` data sets every model trains once per seed
in ``seeds`` and the summaries are means over seeds, shown with their spread. The MALA temperature is declared in
the config (``mala_temperature``); the temperature sweep is shown for reading, never used to pick it.

All models train through :func:`kexue.train.energy.meg_step` / the shared GAN step with checkpoints, so a killed
run resumes model by model.
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch

from kexue._resources import torch_threads
from kexue.eval.plots import subplots
from kexue.experiments._energy import (
    TOY_SETS,
    TOY_TITLES,
    ToySet,
    build_step,
    density_mass_near,
    grid_energy,
    recipe_table,
    refine,
    toy_metrics,
    toy_set,
    train,
)
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.losses.energy import ESTIMATORS
from kexue.models.energy import MLPEncoder, MLPStatistics
from kexue.models.gan import MLPCritic, MLPGenerator

METHODS = ("meg", "meg-nomi", "wgan-gp")
LABELS = {"meg": "MEG", "meg-nomi": "MEG, MI off", "wgan-gp": "WGAN-GP"}


@dataclass
class Config(ExperimentConfig):
    datasets: tuple[str, ...] = param(TOY_SETS, "toy data sets", choices=TOY_SETS)
    methods: tuple[str, ...] = param(METHODS, "models to train: MEG, the MI-off ablation, the WGAN-GP baseline",
                                     choices=METHODS)
    compare_on: tuple[str, ...] = param(TOY_SETS, "data sets on which the methods other than MEG train too",
                                        choices=TOY_SETS, allow_empty=True)
    steps: int = param(100_000, "generator iterations per model (the official toy runs)", min=1)
    n_critic: int = param(5, "energy (critic) updates per generator update", min=1)
    batch_size: int = param(256, "real and generated points per update", min=2)
    lr: float = param(1e-4, "Adam learning rate of every network", min=1e-7, max=1.0)
    beta1: float = param(0.5, "Adam beta1 of every network", min=0.0, max=0.999)
    beta2: float = param(0.9, "Adam beta2 of every network", min=0.0, max=0.9999)
    width: int = param(512, "hidden units of G, U and the MI network", min=4)
    depth: int = param(3, "hidden layers of G, U and the MI network", min=1)
    z_dim: int = param(2, "latent dimension", min=1)
    lam: float = param(0.1, "score-penalty weight lambda on real data", min=0.0)
    mi_weight: float = param(0.5, "weight w of the MI (entropy) term: 0.5 = the official code's BCE form, 1 = "
                             "the paper's formula", min=0.0)
    seeds: tuple[int, ...] = param((0, 1, 2), "training seeds on the compare_on data sets (summaries = their mean); "
                                   "other data sets use the first", min=0)
    wgan_lambda: float = param(0.1, "WGAN-GP's gradient-penalty weight (Gulrajani et al.'s toy script: 0.1)",
                               min=0.0)
    estimator: str = param("jsd", "MI estimator: Deep-InfoMax JSD (MEG) or the InfoGAN bound (post 6331)",
                           choices=ESTIMATORS)
    pool: int = param(100_000, "real points drawn once per data set (training batches come from here)", min=100)
    eval_samples: int = param(2500, "generated samples scored per model", min=100)
    mala_steps: int = param(100, "latent MALA steps at evaluation", min=0)
    mala_step: float = param(0.01, "initial MALA step size alpha", min=1e-8)
    mala_temperature: float = param(0.01, "temperature T of the MALA target e^{-U/T} (T < 1 sharpens)", min=1e-6)
    mala_prior: bool = param(True, "add the N(0, I) latent prior to the MALA target")
    target_accept: float = param(0.574, "MALA acceptance rate the step adapts to over the first half (0 = fixed)",
                                 min=0.0, max=0.99)
    temperatures: tuple[float, ...] = param((1.0, 0.3, 0.1, 0.03, 0.01, 0.003),
                                            "MALA temperatures swept for MEG on the first data set", min=1e-6)
    chains_shown: int = param(12, "MALA chains drawn in the figure", min=0)
    grid: int = param(200, "grid points per axis for the energy and density", min=10)
    log_every: int = param(100, "iterations between logged training scalars", min=1)


# --------------------------------------------------------------------------------------------------------------
# Training one model
# --------------------------------------------------------------------------------------------------------------


def _train_model(cfg: Config, run: Run, toy: ToySet, method: str, seed: int, tag: str = ""):
    torch.manual_seed(seed)
    device = run.device
    G = MLPGenerator(cfg.z_dim, 2, cfg.width, cfg.depth).to(device)
    U = MLPCritic(2, cfg.width, cfg.depth).to(device)
    mi_net = None
    if method == "meg":
        mi_net = (MLPStatistics(2, cfg.z_dim, cfg.width, cfg.depth) if cfg.estimator == "jsd"
                  else MLPEncoder(2, cfg.z_dim, cfg.width, cfg.depth)).to(device)
    pool = toy.data.to(device)
    step = build_step(method, G, U, mi_net,
                      sample_real=lambda: pool[torch.randint(len(pool), (cfg.batch_size,), device=device)],
                      sample_z=lambda n: torch.randn(n, cfg.z_dim, device=device), lam=cfg.lam,
                      mi_weight=cfg.mi_weight, estimator=cfg.estimator, n_critic=cfg.n_critic, lr=cfg.lr,
                      betas=(cfg.beta1, cfg.beta2), gp_weight=cfg.wgan_lambda)
    rt = train(step, run, name=f"{toy.name}-{method}{tag}", steps=cfg.steps, config=asdict(cfg),
               log_every=cfg.log_every)
    G.eval()
    # The energy view: WGAN-GP's critic f is high on data, so its energy is -f.
    energy = U if method != "wgan-gp" else (lambda x: -U(x))
    return G, U, energy, rt


def _evaluate(cfg: Config, toy: ToySet, G, energy, gen_seed: int, *, temperature: float, trace: int = 0):
    device = next(G.parameters()).device
    gen = torch.Generator(device=device).manual_seed(gen_seed)
    z0 = torch.randn(cfg.eval_samples, cfg.z_dim, generator=gen, device=device)
    with torch.no_grad():
        before = toy_metrics(toy, G(z0))
    z, log = refine(G, energy, z0, step=cfg.mala_step, n_steps=cfg.mala_steps, temperature=temperature,
                    prior=cfg.mala_prior, target_accept=cfg.target_accept or None, generator_rng=gen,
                    trace=trace > 0)
    with torch.no_grad():
        x_after = G(z)
        after = toy_metrics(toy, x_after)
        chains = None
        if trace:
            tr = log["trace"][:, :trace].to(device)  # [steps + 1, chains, z_dim]
            chains = G(tr.reshape(-1, cfg.z_dim)).reshape(tr.shape[0], trace, 2).cpu().numpy()
    half = max(1, cfg.mala_steps // 2)
    accept = log["accept_rate"][-half:].mean().item() if cfg.mala_steps else float("nan")
    with torch.no_grad():
        x_before = G(z0).cpu().numpy()
    return {"before": before, "after": after, "accept": accept, "final_step": log["final_step"],
            "x_before": x_before, "x_after": x_after.cpu().numpy(), "chains": chains}


# --------------------------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------------------------


def _seeds(cfg: Config, name: str) -> tuple[int, ...]:
    """Training seeds of a data set: every seed where the methods are compared, the first one elsewhere."""
    return cfg.seeds if name in cfg.compare_on else cfg.seeds[:1]


def _train_and_score(cfg: Config, run: Run, lim: float) -> tuple[dict, dict, list[dict]]:
    """Every (data set, seed, method) model trained, scored before and after MALA, and logged; the first MEG's grid
    energy and temperature sweep."""
    results: dict[str, dict[str, list[dict]]] = {}  # data set -> method -> one result per seed
    grids: dict[str, tuple] = {}
    sweep_rows = []
    for d_index, name in enumerate(cfg.datasets):
        toy = toy_set(name, cfg.pool, seed=cfg.seed)
        methods = [m for m in cfg.methods if m == "meg" or name in cfg.compare_on]
        results[name] = {m: [] for m in methods}
        for s_index, train_seed in enumerate(_seeds(cfg, name)):
            for m_index, method in enumerate(methods):
                seed = cfg.seed * 1000 + 100 * train_seed + 10 * d_index + m_index
                G, U, energy, rt = _train_model(cfg, run, toy, method, seed,
                                                 tag="" if s_index == 0 else f"-s{train_seed}")
                first_meg = method == "meg" and s_index == 0
                res = _evaluate(cfg, toy, G, energy, seed, temperature=cfg.mala_temperature,
                                trace=cfg.chains_shown if first_meg else 0)
                res["bad_steps"], res["seed"] = rt.bad_steps, train_seed
                if method != "wgan-gp":
                    xs, _, u_grid, density = grid_energy(U, lim, cfg.grid)
                    res["mass_near"] = density_mass_near(toy, xs, density)
                    res["u_span"] = float(u_grid.max() - u_grid.min())
                    if first_meg:
                        grids[name] = (xs, u_grid, density)
                if first_meg and d_index == 0:
                    for t in cfg.temperatures:
                        r = _evaluate(cfg, toy, G, energy, seed, temperature=t)
                        sweep_rows.append({"temperature": t, **r["after"], "accept": r["accept"]})
                run.log(step=None, dataset=name, method=method, seed=train_seed,
                        **{f"before_{k}": v for k, v in res["before"].items()},
                        **{f"after_{k}": v for k, v in res["after"].items()}, mala_accept=res["accept"],
                        density_mass_near_modes=res.get("mass_near"))
                results[name][method].append(res)
    return results, grids, sweep_rows


def run(cfg: Config, run: Run) -> dict:
    lim = 2.0
    with torch_threads(1):  # 2-D MLPs: one thread is faster, and robust to a busy machine
        results, grids, sweep_rows = _train_and_score(cfg, run, lim)
    metrics = _report(cfg, run, results, sweep_rows)
    _figures(cfg, run, results, grids, lim)
    return metrics


def _stat(runs: list[dict], when: str, key: str) -> tuple[float, float, list[float]]:
    """Mean, standard deviation (ddof 1; 0 for one seed) and per-seed values of one metric."""
    values = [float(r[when][key]) for r in runs]
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, values


def _show(runs: list[dict], when: str, key: str, fmt: str) -> str:
    """``mean ± sd (v1, v2, v3)`` over seeds, or the value for one seed."""
    mean, sd, values = _stat(runs, when, key)
    if len(values) == 1:
        return format(mean, fmt)
    return f"{mean:{fmt}} ± {sd:{fmt}} ({', '.join(format(v, fmt) for v in values)})"


RECIPE = [
    ("energy steps per G step", "n_critic", "5", "5 (ebm_toy.py)", "–"),
    ("λ (score penalty on real data)", "lam", "0.1", "0.1", "–"),
    ("MI weight vs the energy term", "mi_weight", "1 (−I_JSD + E U)", "BCE over 2m = ½ I_JSD",
     "the official code's form"),
    ("width × depth of G, U, T", "width", "–", "512 × 3", "quick: CPU budget"),
    ("generator iterations", "steps", "–", "100k", "quick: CPU budget"),
    ("Adam lr", "lr", "–", "1e-4", "quick: a larger step for the short run"),
    ("Adam betas", ("0.5, 0.9", "0.5, 0.9"), "–", "0.5, 0.9", "–"),
    ("batch", "batch_size", "–", "256", "–"),
    ("training seeds (25 Gaussians)", "seeds", "–", "one run", "claims about differences need ≥ 3"),
    ("MALA steps at evaluation", "mala_steps", "100 (CelebA, qualitative)", "5 (sampler.py)", "enough steps to "
     "reach the pits from G's samples"),
    ("MALA temperature T of e^{−U/T}", "mala_temperature", "–", "'temp' 0.01–0.2 multiplies U (T = 5–100)",
     "declared, sharpens the target (see the sweep)"),
    ("MALA step", "mala_step", "α (not given)", "0.01", "adapted to acceptance 0.574 over the first half"),
    ("WGAN-GP baseline λ_GP", "wgan_lambda", "–", "0.1, 5 critic steps, width 512 (gan_toy.py)", "quick: the "
     "same width as MEG"),
]


def _report(cfg: Config, run: Run, results: dict, sweep_rows: list[dict]) -> dict:
    metrics: dict[str, float] = {}
    for name, by_method in results.items():
        for method, runs in by_method.items():
            for when in ("before", "after"):
                for k in runs[0][when]:
                    metrics[f"{name}_{method}_{when}_{k}"] = _stat(runs, when, k)[0]  # mean over seeds
                    if len(runs) > 1:
                        for r in runs:
                            metrics[f"{name}_{method}_s{r['seed']}_{when}_{k}"] = float(r[when][k])
            if "mass_near" in runs[0]:
                metrics[f"{name}_{method}_density_mass_near"] = float(np.mean([r["mass_near"] for r in runs]))

    run.section("Claim")
    run.text("Post 6316 reads a GAN as an energy model: the critic U digs pits under the real samples (a "
             "zero-centred gradient penalty on real data makes them pit bottoms), the generator jumps into them, and "
             "an entropy term keeps it from piling into a few pits. MEG estimates that entropy as the mutual "
             "information I(G(Z); Z) with a Deep-InfoMax statistics network, and refines samples by MALA on "
             "U(G(z)) in latent space (post 6331). Expected on toy data: every mode covered, mostly high-quality "
             "samples, a mode histogram closer to uniform than WGAN-GP's, a density e^{-U}/Z concentrated on the "
             "data, and fewer modes without the entropy term.")
    run.text(f"Setting: MLPs with {cfg.depth} hidden layers of {cfg.width} units for G, U and T; z_dim {cfg.z_dim}; "
             f"{cfg.steps:,} generator iterations × {cfg.n_critic} energy steps, batch {cfg.batch_size}, Adam lr "
             f"{cfg.lr:g}, betas ({cfg.beta1}, {cfg.beta2}) for every network and method; λ = {cfg.lam} on real "
             f"data; MI weight {cfg.mi_weight} ({cfg.estimator}). WGAN-GP uses the same networks, optimiser and "
             f"budget with λ_GP = {cfg.wgan_lambda} (Gulrajani et al.'s toy setting). Seeds "
             f"{', '.join(map(str, cfg.seeds))} on {', '.join(TOY_TITLES[n] for n in cfg.compare_on)} (mean ± sd "
             f"and per-seed values below), the first seed elsewhere. Scores on {cfg.eval_samples:,} samples: a sample "
             f"is high quality within 3σ of its nearest centre (σ = the data generator's mode std, 0.05/2.828 for "
             f"25 Gaussians; Swiss roll: 3 noise std of the noise-free roll, its 'modes' are 20 equal pieces); KL is "
             f"that of the high-quality samples' mode histogram to uniform. MALA: {cfg.mala_steps} steps on "
             f"U(G(z))/T{' + ‖z‖²/2' if cfg.mala_prior else ''}, T = {cfg.mala_temperature} (declared in the "
             f"config), step adapted to acceptance {cfg.target_accept} over the first half.")
    recipe_table(run, Config, PRESETS, RECIPE,
                 caption="Recipe audit: our presets against the paper (EnGAN/MEG) and the official code "
                         "(ebm_toy.py, sampler.py; WGAN-GP: gan_toy.py).")

    run.section("Results")
    rows = []
    for name, by_method in results.items():
        k = {"25gaussians": 25, "8gaussians": 8}.get(name, 20)
        for method, runs in by_method.items():
            rows.append([TOY_TITLES[name], LABELS[method], len(runs), f"{_show(runs, 'before', 'modes', '.3g')} / {k}",
                         _show(runs, "before", "high_quality", ".3f"), _show(runs, "before", "kl", ".3f"),
                         f"{_show(runs, 'after', 'modes', '.3g')} / {k}", _show(runs, "after", "high_quality", ".3f"),
                         _show(runs, "after", "kl", ".3f"), float(np.mean([r["accept"] for r in runs])),
                         float(np.mean([r["mass_near"] for r in runs])) if "mass_near" in runs[0] else "–"])
    run.table(["data", "model", "seeds", "modes", "high quality", "KL", "modes (MALA)", "high quality (MALA)",
               "KL (MALA)", "MALA acceptance", "density mass near data"], rows,
              caption="Before and after latent MALA; mean ± sd over the seeds with the per-seed values in brackets. "
                      "Chance: a sample uniform on [−2, 2]² is high quality with probability 25·π(3σ)²/16 = 0.014 "
                      "(25 Gaussians). 'Density mass near data': share of e^{-U}/Z (on a "
                      f"{cfg.grid}² grid over [-2, 2]²) within 3σ of a centre / of the roll; for WGAN-GP the "
                      "critic is not an energy model and no density is shown. WGAN-GP's MALA uses U = −f.")
    if sweep_rows:
        first = cfg.datasets[0]
        run.table(["temperature T", "modes", "high quality", "KL", "acceptance"],
                  [[r["temperature"], r["modes"], r["high_quality"], r["kl"], r["accept"]] for r in sweep_rows],
                  caption=f"MEG on {TOY_TITLES[first]} (first seed): latent MALA at several temperatures (target "
                          f"e^{{-U/T}}{' N(z)' if cfg.mala_prior else ''}); T < 1 sharpens the target. Shown, not "
                          f"used to pick T: the headline uses the declared T = {cfg.mala_temperature:g}. MEG's code "
                          "calls 1/T its 'temp' and evaluates at temp 0.01–0.2 (T = 5–100, a flatter target) for 5 "
                          "steps of 0.01, which barely moves the samples.")

    if "25gaussians" in results and "meg" in results["25gaussians"]:
        r25 = results["25gaussians"]
        meg = r25["meg"]
        n = len(meg)  # every method trains on the same seeds here
        of = f"mean of {n} seed{'s' * (n > 1)}"
        wgan_kl = _stat(r25["wgan-gp"], "before", "kl")[0] if "wgan-gp" in r25 else None
        run.summary("modes_25g", _stat(meg, "after", "modes")[0], bar=25,
                    note=f"MEG after latent MALA, of 25 ({of})")
        run.summary("high_quality_25g", _stat(meg, "after", "high_quality")[0], bar=0.9,
                    note=f"MEG after latent MALA: share within 3σ of a centre ({of}; chance 0.014)")
        run.summary("kl_25g", _stat(meg, "after", "kl")[0], bar=wgan_kl, direction="min",
                    note="MEG after MALA; bar = WGAN-GP's KL (same networks and budget)")
        run.summary("high_quality_25g_no_mala", _stat(meg, "before", "high_quality")[0],
                    note=f"MEG samples G(z) ({of})")
        run.summary("kl_25g_no_mala", _stat(meg, "before", "kl")[0], bar=wgan_kl, direction="min",
                    note="MEG samples G(z); bar = WGAN-GP's KL")
        if "meg-nomi" in r25:
            off = r25["meg-nomi"]
            run.summary("modes_25g_mi_off", _stat(off, "before", "modes")[0], bar=None,
                        note=f"ablation: MI weight 0 (before MALA; {of})")
            run.summary("high_quality_25g_mi_off", _stat(off, "after", "high_quality")[0], bar=None,
                        note=f"ablation after MALA: {_show(off, 'after', 'high_quality', '.2f')} vs MEG "
                             f"{_show(meg, 'after', 'high_quality', '.2f')}")
        if "wgan-gp" in r25:
            run.summary("modes_25g_wgan_gp", _stat(r25["wgan-gp"], "before", "modes")[0], bar=20,
                        note=f"baseline, λ_GP {cfg.wgan_lambda:g} ({of})")

    lines = []
    for name, by_method in results.items():
        meg = by_method.get("meg")
        if meg is None:
            continue
        parts = [f"{TOY_TITLES[name]}: MEG {_stat(meg, 'before', 'modes')[0]:.3g} modes / hq "
                 f"{_stat(meg, 'before', 'high_quality')[0]:.1%} / KL {_stat(meg, 'before', 'kl')[0]:.3f}, after "
                 f"MALA {_stat(meg, 'after', 'modes')[0]:.3g} / {_stat(meg, 'after', 'high_quality')[0]:.1%} / "
                 f"{_stat(meg, 'after', 'kl')[0]:.3f}"]
        for other in ("meg-nomi", "wgan-gp"):
            if other in by_method:
                o = by_method[other]
                parts.append(f"{LABELS[other]} {_stat(o, 'before', 'modes')[0]:.3g} / "
                             f"{_stat(o, 'before', 'high_quality')[0]:.1%} / {_stat(o, 'before', 'kl')[0]:.3f}")
        lines.append("; ".join(parts) + ".")
    run.text("Measured (means over seeds; modes / high quality / KL): " + " ".join(lines))
    spans = {name: float(np.mean([r["u_span"] for r in by["meg"]])) for name, by in results.items() if "meg" in by}
    run.text("How to read the quality numbers: MEG's generator is trained towards e^{-U}, so its samples are as "
             "sharp as the learned energy. Over the plotted square U spans "
             + ", ".join(f"{s:.2g} nats ({TOY_TITLES[n]})" for n, s in spans.items())
             + ", while the data's log-density varies by hundreds of nats between a mode and the gaps, so e^{-U} is "
             "much broader than the data wherever the energy is still shallow; latent MALA at T < 1 samples "
             "e^{-U/T} and sharpens it.")
    worse = [n for n, by in results.items() if "wgan-gp" in by
             and _stat(by["wgan-gp"], "after", "high_quality")[0] < _stat(by["wgan-gp"], "before", "high_quality")[0]]
    if worse:
        run.text("On " + ", ".join(TOY_TITLES[n] for n in worse) + " MALA on WGAN-GP's −f lowered the sample "
                 "quality: a WGAN critic is trained to be 1-Lipschitz, not to have pits at the data, so a sharpened "
                 "e^{f/T} pulls samples along its slope rather than into modes.")
    bad = sum(r["bad_steps"] for by in results.values() for runs in by.values() for r in runs)
    if bad:
        run.text(f"The NaN guard skipped {bad} non-finite steps in total.")
    return metrics


def _figures(cfg: Config, run: Run, results: dict, grids: dict, lim: float) -> None:
    names = [n for n in results if "meg" in results[n]]
    if not names:
        return
    ncols = 5
    fig, axes = subplots(len(names), ncols, width=3.0, height=3.0)
    extent = (-lim, lim, -lim, lim)
    for row, name in enumerate(names):
        meg = results[name]["meg"][0]  # the first seed
        xs, u_grid, density = grids[name]
        ax = axes[row, 0]
        ax.contourf(xs, xs, u_grid, levels=30, cmap="viridis")
        ax.scatter(*meg["x_before"][:1000].T, s=1.5, c="w", alpha=0.6)
        ax.set_title(f"{TOY_TITLES[name]}: MEG samples on U", fontsize=9)
        ax = axes[row, 1]
        ax.imshow(density, origin="lower", extent=extent, cmap="magma")
        ax.set_title(f"e^{{-U}}/Z (U spans {u_grid.max() - u_grid.min():.2g} nats)", fontsize=9)
        ax = axes[row, 2]
        # the chains' target at temperature T (prior term left out of the picture: it lives in z-space)
        log_target = -(u_grid - u_grid.min()) / cfg.mala_temperature
        ax.imshow(log_target, origin="lower", extent=extent, cmap="Greys", vmin=-20, vmax=0)  # top 20 nats
        if meg["chains"] is not None:
            for c in range(meg["chains"].shape[1]):
                path = meg["chains"][:, c]
                ax.plot(path[:, 0], path[:, 1], "-", lw=0.8)
                ax.plot(*path[0], "o", ms=2.5, color="k")
                ax.plot(*path[-1], "*", ms=5, color="r")
        ax.set_title(f"latent MALA chains on e^{{-U/T}}, T = {cfg.mala_temperature:g}", fontsize=9)
        ax = axes[row, 3]
        ax.scatter(*meg["x_after"][:2500].T, s=1.5, alpha=0.5, c="tab:red")
        ax.set_title("MEG after MALA", fontsize=9)
        ax = axes[row, 4]
        if "wgan-gp" in results[name]:
            ax.scatter(*results[name]["wgan-gp"][0]["x_before"][:2500].T, s=1.5, alpha=0.5, c="tab:blue")
            ax.set_title("WGAN-GP samples", fontsize=9)
        elif "meg-nomi" in results[name]:
            ax.scatter(*results[name]["meg-nomi"][0]["x_before"][:2500].T, s=1.5, alpha=0.5, c="tab:green")
            ax.set_title("MEG, MI off", fontsize=9)
        else:
            ax.text(0, 0, "no baseline on this set\n(see compare_on)", ha="center", va="center", fontsize=8)
        for ax in axes[row]:
            ax.set_xlim(-lim, lim)
            ax.set_ylim(-lim, lim)
            ax.set_aspect("equal")
            ax.set_xticks([])
            ax.set_yticks([])
    run.figure(fig, "energy_2d", "Per data set (first seed): MEG's samples over its energy U; the normalised "
               "density e^{-U}/Z on the grid (linear scale); latent MALA chains mapped through G (dot = start, "
               "star = end) over their target e^{-U/T} (log scale, 20 nats); the samples after MALA; the "
               "baseline's samples.",
               headline=True)

    if any(len(by) > 1 for by in results.values()):
        methods = [m for m in METHODS if any(m in by for by in results.values())]
        panels = [(w, key) for w in ("before", "after") for key in ("modes", "high_quality", "kl")]
        fig, axes = subplots(2, 3, width=3.6, height=3.0)
        titles = {"modes": "modes covered", "high_quality": "high quality", "kl": "KL to uniform"}
        for ax, (when, key) in zip(axes.flat, panels, strict=True):
            width = 0.8 / len(methods)
            for i, m in enumerate(methods):
                names = [n for n in results if m in results[n]]
                at = np.array([list(results).index(n) for n in names]) + i * width
                stats = [_stat(results[n][m], when, key) for n in names]
                ax.bar(at, [st[0] for st in stats], width, yerr=[st[1] for st in stats], capsize=2, alpha=0.7,
                       label=LABELS[m], color=f"C{i}")
                for x, st in zip(at, stats, strict=True):  # every seed as a dot
                    ax.plot([x] * len(st[2]), st[2], "k.", ms=3)
            ax.set_xticks(np.arange(len(results)) + 0.4 - width / 2)
            ax.set_xticklabels([TOY_TITLES[n] for n in results], fontsize=8)
            ax.set_title(f"{titles[key]} ({'no MALA' if when == 'before' else 'after MALA'})", fontsize=9)
        axes[0, 0].legend(fontsize=7)
        run.figure(fig, "energy_2d_methods", "Modes covered, share of high-quality samples and KL of the mode "
                   "histogram for each model, before (top) and after (bottom) latent MALA: bars = mean over seeds, "
                   "whiskers = sd, dots = single seeds.")


PRESETS = {"quick": {"steps": 1500, "width": 64, "lr": 1e-3, "n_critic": 5, "datasets": ("25gaussians",),
                     "compare_on": ("25gaussians",), "log_every": 50},
           "full": {}}

EXPERIMENT = Experiment(
    name="energy-2d",
    post=1,
    description="MEG on 25/8 Gaussians and the Swiss roll vs WGAN-GP and MI off; energy, density, latent MALA",
    config=Config,
    run=run,
    presets=PRESETS,
    smoke={"steps": 3, "width": 8, "pool": 1000, "eval_samples": 200, "mala_steps": 4, "grid": 24, "seeds": (0, 1),
           "temperatures": (0.1,), "chains_shown": 3, "log_every": 1, "datasets": ("25gaussians", "swissroll")},
    headline=True,
)
