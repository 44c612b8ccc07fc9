"""ogan-fashion: O-GAN beyond digits, and weight EMA vs raw generator samples (post 3; kexue.fm/archives/6409).

The same O-GAN as ``ogan-mnist`` (GAN-QP with the avg∘E critic, the official weights, the single stop-gradient loss)
on Fashion-MNIST, whose ten classes of clothing are less separable than digits. Like the official 256-px script
(``o_gan_celeba_sm_4x4_ema_256.py``), the weights of E and G are also averaged (:class:`kexue.train.ema.EMA`, batch
norm statistics averaged too), and the raw and the averaged networks are scored side by side on the same codes and
test images: FID / KID on the features of a locally trained Fashion-MNIST classifier, class agreement and pixel MSE
of the reconstructions G(0.9·N(E(x))), and the mean ρ(z, E(G(z))).

The EMA's horizon is set relative to the run: a half-life of ``ema_half_life`` (a fraction) times the steps, with a
running-mean warm-up (decay min(α, t/(t+1)) at update t). The official decay 0.999 has a half-life of 693 steps,
a thousandth of the official run but a third of a 2,000-step quick run, where it would average in the weights of the
first few hundred steps, long before the generator is any good.
"""

from dataclasses import dataclass, replace

import numpy as np
import torch

from kexue.data import load_fashion_mnist
from kexue.eval.features import describe, get_feature_net
from kexue.eval.image_metrics import image_metrics
from kexue.eval.plots import subplots
from kexue.experiments import ogan_mnist as base
from kexue.experiments.config import param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run


@dataclass
class Config(base.Config):
    ablations: tuple[str, ...] = param((), "models trained beside O-GAN: 'gan-qp' (λ₂ = 0), 'mse' (MSE instead of "
                                       "−ρ)", choices=base.ABLATIONS, allow_empty=True)
    ema_decay: float = param(0.999, "EMA decay of the weights of E and G if ema_half_life is 0 (the official 256-px "
                             "script: 0.999)", min=0.5, max=0.99999)
    ema_half_life: float = param(0.05, "EMA half-life as a fraction of the run's steps, with a running-mean warm-up "
                                 "(0: use ema_decay)", min=0.0, max=1.0)


def _ema_label(cfg: Config) -> str:
    if cfg.ema_half_life > 0:
        return f"EMA, half-life {cfg.ema_half_life:g} of the run"
    return f"EMA {cfg.ema_decay}"


def run(cfg: Config, run: Run) -> dict:
    train_images, _ = load_fashion_mnist("train")
    test_images, _ = load_fashion_mnist("test")
    if cfg.train_subset:
        train_images = train_images[: cfg.train_subset]
    x_train, x_test = base.to_pm1(train_images, run.device), base.to_pm1(test_images, run.device)
    net = get_feature_net("fashion-mnist", cfg.recipe, 0, device=run.device)

    seeds = base.run_seeds(cfg)
    multi = len(seeds) > 1
    results: dict[tuple[str, int], dict] = {}
    trained = {}
    ema_strips = None
    for seed in seeds:
        scfg = replace(cfg, seed=seed)
        t = trained[seed] = base.train_variant(scfg, run, "o-gan", x_train, desc="ogan-fashion",
                                               folder=f"o-gan-s{seed}" if multi else "o-gan")
        results["raw", seed] = base.evaluate(t.model, net, x_test, scfg, "fashion-mnist/test")
        with t.ema.swap_into(t.model):
            results["ema", seed] = base.evaluate(t.model, net, x_test, scfg, "fashion-mnist/test")
            if ema_strips is None:
                ema_strips = base.interpolation_strips(t.model, x_test, pairs=6, steps=10, scale=cfg.recon_scale,
                                                       seed=seed)
        for name in ("raw", "ema"):
            run.log(weights=name, seed=seed, evaluation=True,
                    **{k: v for k, v in results[name, seed].items() if k not in ("samples", "reconstructions")})
    floor = image_metrics(net, base.to_unit(x_train[: cfg.eval_samples]), base.to_unit(x_test[: cfg.eval_samples]),
                          reference="fashion-mnist/test", seed=cfg.seed, kid_subsets=cfg.kid_subsets,
                          kid_subset_size=min(1000, cfg.eval_samples))

    def per_seed(name: str, key: str) -> list[float]:
        return [results[name, s][key] for s in seeds]

    ratios = [results["ema", s]["fid"] / results["raw", s]["fid"] for s in seeds]
    metrics: dict[str, float] = {}
    for (name, seed), r in results.items():
        for k, v in r.items():
            if isinstance(v, float):
                metrics[f"{k}_{name}_s{seed}"] = v
                metrics[f"{k}_{name}"] = float(np.mean(per_seed(name, k)))
    metrics.update(fid_real=floor["fid"], ema_fid_ratio=float(np.mean(ratios)),
                   bad_steps=sum(t.bad_steps for t in trained.values()))

    n = f"mean of {len(seeds)} seeds" if multi else f"seed {seeds[0]}"
    run.summary("rho", metrics["rho_ema"], bar=0.9, note=f"mean ρ(z, E(G(z))) with the EMA weights, eval mode; {n}")
    run.summary("class_agreement", metrics["class_agreement_ema"], bar=0.8,
                note=f"reconstructions' classifier label = the input's, EMA weights, Fashion-MNIST test (chance 0.1); "
                     f"{n}")
    run.summary("ema_fid_ratio", metrics["ema_fid_ratio"], bar=1.0, direction="min",
                note=f"FID with EMA weights / FID with raw weights, same seed; {n} (per seed "
                     f"{', '.join(f'{v:.2f}' for v in ratios)})")
    run.summary("fid_ema", metrics["fid_ema"], direction="min", note=f"EMA samples vs Fashion-MNIST test; {n}")
    run.summary("fid_raw", metrics["fid_raw"], direction="min", note=f"raw samples (real training images: "
                f"{floor['fid']:.3g}); {n}")

    # --- report ----------------------------------------------------------------------------------------------
    ema_label = _ema_label(cfg)
    run.section("Claim")
    run.text("O-GAN is not tied to one data set: the same losses and weights give an encoder whose codes G decodes "
             "back into the input's class and look. The official 256-px script also keeps moving averages of the "
             "weights (decays 0.999 and 0.9999) for sampling; here the raw and the averaged weights are compared on "
             "the same codes and images. The blog gives pictures only.")
    run.section("Set-up")
    run.text(f"Fashion-MNIST 28x28 in [-1, 1]; n_z = {cfg.z_dim}, widths E {cfg.e_width} / G {cfg.g_width}, batch "
             f"norm {'self-modulated by z' if cfg.norm == 'sm' else 'plain'}; GAN-QP with the official weights, "
             f"λ₂ = {cfg.lam2}; {'single stop-gradient loss, one' if cfg.form == 'single' else 'two-player, two'} "
             f"RMSprop (lr {cfg.lr}); batch {cfg.batch_size}, {cfg.steps:,} steps; seeds "
             f"{', '.join(map(str, seeds))}. Scores use `{describe(net)}` with {cfg.eval_samples:,} samples and "
             f"{cfg.recon_images:,} reconstructed test images.")
    horizon = (f"half-life {cfg.ema_half_life:g} × {cfg.steps:,} = {cfg.ema_half_life * cfg.steps:,.0f} steps, "
               "warm-up: decay min(α, t/(t+1)) at update t, i.e. the plain mean of all weights so far until the "
               "exponential decay takes over" if cfg.ema_half_life > 0 else
               f"decay {cfg.ema_decay}, zero-debiased like Keras")
    quick, full = base.preset_configs(Config, EXPERIMENT)
    run.table(["setting", "ours (quick)", "ours (full)", "paper / blog", "official code", "why different"], [
        ["EMA horizon", f"half-life {quick.ema_half_life:g} × {quick.steps:,} steps",
         f"half-life {full.ema_half_life:g} × {full.steps:,} steps", "–",
         "decays 0.999 and 0.9999 (half-lives 693 and 6,931 steps) over 1,000 epochs",
         "a fixed decay is a horizon in steps; relative to a short run it averages in the untrained start"],
        ["EMA warm-up", "running mean (timm power 1)", "the same", "–", "Keras zero-debias",
         "the debiased average still weighs the first steps by the decay's horizon"],
        *[row for row in base.settings_rows(quick, full) if row[0] not in ("images", "MSE ablation")],
    ], caption="Recipe against the post and bojone/o-gan (c7b3d089); the O-GAN rows are ogan-mnist's.")
    run.text(f"EMA here: {horizon}.")
    run.section("Results")
    rows = []
    for name in ("raw", "ema"):
        label = ema_label if name == "ema" else "raw weights"
        rows.append([label, *(base.mean_sd(per_seed(name, k)) for k in
                              ("fid", "kid", "precision", "recall", "rho", "class_agreement", "pixel_mse"))])
    rows.append(["real training images (floor)", f"{floor['fid']:.3g}", f"{floor['kid']:.3g}",
                 f"{floor['precision']:.3g}", f"{floor['recall']:.3g}", "–", "–", "–"])
    run.table(["weights", "FID", "KID", "precision", "recall", "mean ρ", "class agreement", "pixel MSE"], rows,
              caption="Mean ± sd over seeds (per-seed values in brackets); the same codes and test images for both "
                      "rows; pixel MSE in [0, 1] units; chance class agreement is 10%.")
    better = sum(r < 1 for r in ratios)
    raw_rho, ema_rho = metrics["rho_raw"], metrics["rho_ema"]
    raw_ag, ema_ag = metrics["class_agreement_raw"], metrics["class_agreement_ema"]
    run.text(f"Measured: FID {metrics['fid_raw']:.3g} raw vs {metrics['fid_ema']:.3g} with the EMA; per-seed ratio "
             f"EMA / raw {', '.join(f'{v:.2f}' for v in ratios)} (the average is better on {better} of "
             f"{len(ratios)} seeds); mean ρ {raw_rho:.3f} raw, {ema_rho:.3f} EMA "
             f"({'meets' if ema_rho >= 0.9 else 'misses'} 0.9); class agreement {100 * raw_ag:.1f}% raw, "
             f"{100 * ema_ag:.1f}% EMA ({'meets' if ema_ag >= 0.8 else 'misses'} 80%). {metrics['bad_steps']:.0f} "
             "non-finite steps were skipped.")

    first = seeds[0]
    fig, axes = subplots(1, 2, width=3.4, height=3.6)
    for ax, name in zip(axes[0], ("raw", "ema"), strict=True):
        label = "raw weights" if name == "raw" else ema_label
        base.show(ax, base.grid(results[name, first]["samples"], 8),
                  f"{label}\nFID {results[name, first]['fid']:.3g}")
    run.figure(fig, "samples_raw_vs_ema", f"The same 64 codes decoded by the raw generator (left) and by its EMA "
               f"(right), seed {first}.", headline=True)

    fig, axes = subplots(1, 1, width=7.5, height=1.9)
    rec_rows = torch.cat([base.to_unit(x_test[:16]), results["raw", first]["reconstructions"],
                          results["ema", first]["reconstructions"]])
    base.show(axes[0][0], base.grid(rec_rows, 16), "rows: test images, raw reconstructions, EMA reconstructions")
    run.figure(fig, "reconstructions", f"Test images and G({cfg.recon_scale}·N(E(x))) with raw and EMA weights.")

    fig, axes = subplots(1, 1, width=5.0, height=3.2)
    base.show(axes[0][0], base.grid(ema_strips, 10), "EMA weights: N(E(x₁)) → N(E(x₂))")
    run.figure(fig, "interpolations", "Linear interpolation between the standardised codes of two test images.")

    fig, axes = subplots(1, 1, width=4.6, height=3.4)
    for seed in seeds:
        h = trained[seed].history
        axes[0][0].plot([r["step"] for r in h], [r["rho"] for r in h], color="C0", lw=0.9,
                        label="ρ(z, E(G(z)))" if seed == first else None)
        axes[0][0].plot([r["step"] for r in h], [r["t1"] for r in h], color="C1", lw=0.9,
                        label="score gap avg E(x) − avg E(G(z))" if seed == first else None)
    axes[0][0].axhline(0.9, color="0.6", ls="--", lw=0.8)
    axes[0][0].set(xlabel="step", title="training (raw weights, train mode)")
    axes[0][0].legend(fontsize=7)
    run.figure(fig, "rho_over_training", f"Means over each {cfg.log_every} steps, one line per seed.")
    return metrics


EXPERIMENT = Experiment(
    name="ogan-fashion",
    post=3,
    description="O-GAN on Fashion-MNIST: EMA (half-life relative to the run) vs raw weights, over seeds",
    config=Config,
    run=run,
    presets={"quick": {**base.EXPERIMENT.presets["quick"], "steps": 2000},
             "full": {**base.EXPERIMENT.presets["full"]}},
    smoke={**base.EXPERIMENT.smoke, "seeds": ()},
)
