"""vae-flat-mnist: a single-latent convolutional VAE of NVAE's size and budget, the baseline NVAE is compared with.

Claim (spec ``nvae.md`` §5.9, after the paper's comparisons): the hierarchy is what buys NVAE its likelihood; a flat
VAE with one latent group and the same number of parameters, trained the same way, is clearly worse in test NLL.

The flat model is an :class:`~kexue.models.nvae.NVAE` with one latent scale and one group, placed at NVAE's coarsest
resolution (so ``preprocess_blocks`` = NVAE's pre-processing blocks + latent scales - 1): the same residual cells,
likelihood, optimiser, schedules and regularisers, and with ``target_parameters`` set, the even channel width
whose parameter count is closest to NVAE's. Each preset copies the training and evaluation settings of the matching
``nvae-mnist`` preset, so the two runs differ only in the latent structure.
"""

from dataclasses import dataclass

from kexue.experiments import _nvae, nvae_mnist
from kexue.experiments.config import param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.models.nvae import NVAE, count_parameters, latent_dims

# Parameter counts of the nvae-mnist models (full / quick preset); tests/experiments/test_vae_flat_mnist.py checks
# them against the models themselves.
NVAE_PARAMETERS = {"full": 33_363_358, "quick": 166_950}


@dataclass
class Config(nvae_mnist.Config):
    channels: int = param(32, "channels at the stem (ignored when target_parameters is set)", min=2)
    preprocess_blocks: int = param(3, "pre-/post-processing blocks: 3 puts the latent at NVAE's coarsest scale",
                                   min=0)
    latent_scales: int = param(1, "one latent scale ...", choices=(1,))
    groups_per_scale: int = param(1, "... with one group: a flat VAE", choices=(1,))
    target_parameters: int = param(NVAE_PARAMETERS["full"], "choose the even channel width whose model has "
                                   "closest to this many parameters (0: use `channels`)", min=0)
    nll_bar: float = param(0.0, "not used: the comparison is with nvae-mnist", min=0.0)


def _build(cfg: Config, channels: int) -> NVAE:
    cfg_c = type(cfg)(**{**cfg.__dict__, "channels": channels})
    return NVAE(_nvae.model_config(cfg_c, image_channels=1, image_size=28, likelihood="bernoulli"))


def matched_channels(cfg: Config) -> int:
    """The even width whose flat model's parameter count is closest to ``cfg.target_parameters``."""
    if not cfg.target_parameters:
        return cfg.channels
    best, best_gap = 2, float("inf")
    c = 2
    while True:
        gap = count_parameters(_build(cfg, c)) - cfg.target_parameters
        if abs(gap) < best_gap:
            best, best_gap = c, abs(gap)
        if gap > 0:
            return best
        c += 2


def run(cfg: Config, run: Run) -> dict:
    train_x = nvae_mnist.mnist("train", cfg.train_subset, run.device)
    test_x = nvae_mnist.mnist("test", 0, run.device, seed=12345)  # the binarisation nvae-mnist scores
    channels = matched_channels(cfg)
    model = _build(cfg, channels).to(run.device)
    params, dims = count_parameters(model), latent_dims(model.config)
    trained = _nvae.train(model, cfg, run, train_x, binarize=True, desc="vae-flat-mnist")
    result = _nvae.evaluate(model, test_x, iw_samples=cfg.iw_samples, iw_images=cfg.iw_test_images,
                            elbo_images=cfg.elbo_test_images, iw_batch=cfg.iw_batch)
    iw = result["iw"]
    metrics = {
        "test_nll_nats": iw["nll_nats"], "test_nll_std_err": iw["nll_std_err"], "test_elbo_nats": result["elbo_nats"],
        "parameters": params, "target_parameters": cfg.target_parameters, "channels": channels, "latent_dims": dims,
        "active_channels": result["active"][0], "steps": trained["total_steps"],
        "seconds_per_step": trained["seconds_per_step"], "bad_steps": trained["runtime"].bad_steps,
    }
    run.log(**metrics)
    run.summary("test_nll_nats", iw["nll_nats"], direction="min",
                note=f"IW bound, K={cfg.iw_samples}, {iw['num_examples']:,} test images (±{iw['nll_std_err']:.2f}); "
                     "compare nvae-mnist of the same preset")
    run.summary("test_elbo_nats", result["elbo_nats"], direction="min",
                note=f"−ELBO, {result['elbo_images']:,} test images")

    run.section("Claim")
    run.text("A deep hierarchy of latent groups is what lets NVAE fit binarised MNIST to 78 nats: a flat VAE of the "
             "same size, trained the same way, should be clearly worse. This run is the flat side of the comparison; "
             "`nvae-mnist` with the same preset is the hierarchical side.")
    run.section("What was run")
    run.text(f"A single latent group of {cfg.latent_channels} channels at {model.top_shape[1]}×{model.top_shape[2]} "
             f"({dims:,} latent dimensions), {channels} channels at the stem: {params:,} parameters (target "
             f"{cfg.target_parameters:,}, nvae-mnist's model). Residual cells, Bernoulli likelihood, Adamax with "
             f"warm-up and cosine decay, KL warm-up, spectral + BN λ = {cfg.spectral_coeff:g}: "
             f"{trained['total_steps']:,} steps of batch {cfg.batch_size}, as nvae-mnist.")
    run.table(["metric", "nats", "± std. err.", "test images"],
              [[f"NLL (IW, K = {cfg.iw_samples})", iw["nll_nats"], iw["nll_std_err"], iw["num_examples"]],
               ["−ELBO (K = 1)", result["elbo_nats"], result["elbo_std_err"], result["elbo_images"]]],
              caption=f"Active latent channels (KL > 0.1 nats): {result['active'][0]} of {result['channels'][0]}.")
    _nvae.sample_figures(model, run, cfg, binary=True, name="vae_flat_mnist")
    _nvae.reconstruction_figure(model, run, test_x, binary=True, name="vae_flat_mnist")
    _nvae.curves_figure(run, trained["history"], result, "vae_flat_mnist")
    return metrics


# Same training and evaluation budget as nvae-mnist's presets; the architecture keys that make it flat are ours.
_SHARED = ("epochs", "batch_size", "warmup_epochs", "log_every", "iw_test_images", "elbo_test_images", "iw_batch",
           "bn_batches", "bn_batch_size", "padding", "preprocess_cells", "postprocess_cells", "cells_per_group")
QUICK = {**{k: v for k, v in nvae_mnist.QUICK.items() if k in _SHARED}, "preprocess_blocks": 2,
         "latent_channels": 8, "target_parameters": NVAE_PARAMETERS["quick"]}

EXPERIMENT = Experiment(
    name="vae-flat-mnist",
    post=7,
    description="Single-latent conv VAE with NVAE's parameter count and budget on binarised MNIST",
    config=Config,
    run=run,
    presets={"quick": QUICK, "full": {}},
    smoke={**nvae_mnist.EXPERIMENT.smoke, "target_parameters": 0, "channels": 4},
)
