"""ogan-fashion: O-GAN beyond digits, and weight EMA vs raw generator samples (post 3; kexue.fm/archives/6409).

The same O-GAN as ``ogan-mnist`` (GAN-QP with the avg∘E critic, the official weights, λ₂ = 0.5, the single
stop-gradient loss) on Fashion-MNIST, whose ten classes of clothing are less separable than digits. Like the
official 256-px script (``o_gan_celeba_sm_4x4_ema_256.py``), the weights of E and G are also averaged
(:class:`kexue.train.ema.EMA`, decay 0.999, zero-debiased like Keras' moving averages, batch-norm statistics
averaged too), and the raw and the averaged networks are scored side by side on the same codes and test images:
FID / KID on the features of a locally trained Fashion-MNIST classifier, class agreement and pixel MSE of the
reconstructions G(0.9·N(E(x))), and the mean ρ(z, E(G(z))).
"""

from dataclasses import dataclass

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
    ema_decay: float = param(0.999, "EMA decay of the weights of E and G (the official 256-px script: 0.999)",
                             min=0.5, max=0.99999)


def run(cfg: Config, run: Run) -> dict:
    train_images, _ = load_fashion_mnist("train")
    test_images, _ = load_fashion_mnist("test")
    if cfg.train_subset:
        train_images = train_images[: cfg.train_subset]
    x_train, x_test = base.to_pm1(train_images, run.device), base.to_pm1(test_images, run.device)
    net = get_feature_net("fashion-mnist", cfg.recipe, 0, device=run.device)

    trained = base.train_variant(cfg, run, "o-gan", x_train, desc="ogan-fashion")
    model, ema = trained.model, trained.ema
    results = {"raw": base.evaluate(model, net, x_test, cfg, "fashion-mnist/test")}
    with ema.swap_into(model):
        results["ema"] = base.evaluate(model, net, x_test, cfg, "fashion-mnist/test")
        ema_strips = base.interpolation_strips(model, x_test, pairs=6, steps=10, scale=cfg.recon_scale,
                                               seed=cfg.seed)
    for name, r in results.items():
        run.log(weights=name, evaluation=True,
                **{k: v for k, v in r.items() if k not in ("samples", "reconstructions")})
    floor = image_metrics(net, base.to_unit(x_train[: cfg.eval_samples]), base.to_unit(x_test[: cfg.eval_samples]),
                          reference="fashion-mnist/test", seed=cfg.seed, kid_subsets=cfg.kid_subsets,
                          kid_subset_size=min(1000, cfg.eval_samples))
    raw, avg = results["raw"], results["ema"]
    ratio = avg["fid"] / raw["fid"]
    metrics = {f"{k}_{name}": v for name, r in results.items() for k, v in r.items() if isinstance(v, float)}
    metrics.update(fid_real=floor["fid"], ema_fid_ratio=ratio, bad_steps=trained.bad_steps)

    run.summary("rho", avg["rho"], bar=0.9, note="mean ρ(z, E(G(z))) with the EMA weights, eval mode")
    run.summary("class_agreement", avg["class_agreement"], bar=0.8,
                note="reconstructions' classifier label = the input's, EMA weights, Fashion-MNIST test")
    run.summary("ema_fid_ratio", ratio, bar=1.0, direction="min", note="FID with EMA weights / FID with raw weights")
    run.summary("fid_ema", avg["fid"], direction="min", note="EMA samples vs Fashion-MNIST test, local features")
    run.summary("fid_raw", raw["fid"], direction="min", note="raw samples")

    # --- report ----------------------------------------------------------------------------------------------
    run.section("Claim")
    run.text("O-GAN is not tied to one data set: the same losses and weights give an encoder whose codes G decodes "
             "back into the input's class and look. The official 256-px script also keeps moving averages of the "
             f"weights (decays 0.999 and 0.9999) for sampling; here the raw and the EMA ({cfg.ema_decay}) weights "
             "are compared on the same codes and images. The blog gives pictures only.")
    run.section("Set-up")
    run.text(f"Fashion-MNIST 28x28 in [-1, 1]; n_z = {cfg.z_dim}, widths E {cfg.e_width} / G {cfg.g_width}, batch "
             f"norm {'self-modulated by z' if cfg.norm == 'sm' else 'plain'}; GAN-QP with the official weights, "
             f"λ₂ = {cfg.lam2}; {'single stop-gradient loss, one' if cfg.form == 'single' else 'two-player, two'} "
             f"RMSprop (lr {cfg.lr}); batch {cfg.batch_size}, {cfg.steps:,} steps; EMA decay {cfg.ema_decay} of E "
             f"and G together, zero-debiased. Scores use `{describe(net)}` with {cfg.eval_samples:,} samples and "
             f"{cfg.recon_images:,} reconstructed test images.")
    run.section("Results")
    rows = [[f"{'EMA ' + str(cfg.ema_decay) if name == 'ema' else 'raw'} weights", r["fid"], r["kid"],
             r["precision"], r["recall"], r["rho"], r["class_agreement"], r["pixel_mse"]]
            for name, r in results.items()]
    rows.append(["real training images (floor)", floor["fid"], floor["kid"], floor["precision"], floor["recall"],
                 "–", "–", "–"])
    run.table(["weights", "FID", "KID", "precision", "recall", "mean ρ", "class agreement", "pixel MSE"], rows,
              caption="The same codes and test images for both rows; pixel MSE in [0, 1] units; chance class "
                      "agreement is about 10%.")
    run.text(f"Measured: FID {raw['fid']:.3g} raw vs {avg['fid']:.3g} with EMA (ratio {ratio:.2f}: the average "
             f"{'helps' if ratio < 1 else 'does not help'} here); mean ρ {raw['rho']:.3f} raw, {avg['rho']:.3f} EMA "
             f"({'meets' if avg['rho'] >= 0.9 else 'misses'} 0.9); class agreement "
             f"{100 * raw['class_agreement']:.1f}% raw, {100 * avg['class_agreement']:.1f}% EMA "
             f"({'meets' if avg['class_agreement'] >= 0.8 else 'misses'} 80%). {trained.bad_steps} non-finite steps "
             "were skipped.")

    fig, axes = subplots(1, 2, width=3.4, height=3.6)
    for ax, name in zip(axes[0], ("raw", "ema"), strict=True):
        label = "raw weights" if name == "raw" else f"EMA {cfg.ema_decay}"
        base.show(ax, base.grid(results[name]["samples"], 8), f"{label}\nFID {results[name]['fid']:.3g}")
    run.figure(fig, "samples_raw_vs_ema", "The same 64 codes decoded by the raw generator (left) and by its EMA "
               "(right).", headline=True)

    fig, axes = subplots(1, 1, width=7.5, height=1.9)
    rec_rows = torch.cat([base.to_unit(x_test[:16]), raw["reconstructions"], avg["reconstructions"]])
    base.show(axes[0][0], base.grid(rec_rows, 16), "rows: test images, raw reconstructions, EMA reconstructions")
    run.figure(fig, "reconstructions", f"Test images and G({cfg.recon_scale}·N(E(x))) with raw and EMA weights.")

    fig, axes = subplots(1, 1, width=5.0, height=3.2)
    base.show(axes[0][0], base.grid(ema_strips, 10), "EMA weights: N(E(x₁)) → N(E(x₂))")
    run.figure(fig, "interpolations", "Linear interpolation between the standardised codes of two test images.")

    fig, axes = subplots(1, 1, width=4.6, height=3.4)
    h = trained.history
    axes[0][0].plot([r["step"] for r in h], [r["rho"] for r in h], label="ρ(z, E(G(z)))")
    axes[0][0].plot([r["step"] for r in h], [r["t1"] for r in h], label="score gap avg E(x) − avg E(G(z))")
    axes[0][0].axhline(0.9, color="0.6", ls="--", lw=0.8)
    axes[0][0].set(xlabel="step", title="training (raw weights, train mode)")
    axes[0][0].legend(fontsize=7)
    run.figure(fig, "rho_over_training", f"Means over each {cfg.log_every} steps.")
    return metrics


EXPERIMENT = Experiment(
    name="ogan-fashion",
    post=3,
    description="O-GAN on Fashion-MNIST: EMA (0.999) vs raw weights for samples and reconstructions",
    config=Config,
    run=run,
    presets={"quick": {**base.EXPERIMENT.presets["quick"], "steps": 2000}, "full": {}},
    smoke=dict(base.EXPERIMENT.smoke),
)
