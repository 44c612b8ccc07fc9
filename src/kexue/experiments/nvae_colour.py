"""nvae-colour: NVAE with the discretised mixture of logistics on 8-bit images, scored in bits per dimension (post 7).

Claim (Vahdat & Kautz, arXiv:2007.03898, Table 1): on natural images NVAE uses a discretised mixture of 10 logistics
per pixel (channels coupled autoregressively, 5-bit pixels for the 256-px sets) and reports test NLL in bits/dim
(2.91 on CIFAR-10 with flows). Here at reduced scale: Fashion-MNIST (28×28 grey, 8-bit; in the quick preset's data
cache) or the Twitter emoji set (32×32 RGB, ``kexue data fetch emoji``; 3,786 images, the last 10% held out). The
yardstick is an independent-pixel model fitted to the training set (each pixel's 256-bin histogram, add-one
smoothed): bits/dim that ignore every correlation between pixels.
"""

from dataclasses import dataclass

import numpy as np
import torch

from kexue.data import load_emoji, load_fashion_mnist
from kexue.eval.likelihood import bits_per_dim
from kexue.experiments import _nvae
from kexue.experiments.config import param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.models.nvae import NVAE, count_parameters, latent_dims, quantize

PAPER_CIFAR_BPD = 2.91  # NVAE with flows on CIFAR-10 (a different data set: context only)


@dataclass
class Config(_nvae.Config):
    dataset: str = param("emoji", "fashion-mnist (28x28 grey) or emoji (32x32 RGB)", choices=("fashion-mnist",
                                                                                            "emoji"))
    num_bits: int = param(8, "pixel depth (NVAE: 5 for the 256-px sets)", min=1, max=8)
    num_mix: int = param(10, "logistic mixture components", min=1)
    # --- model (defaults: NVAE's CIFAR-10 command, narrowed: 1 scale, fewer groups and channels) ---
    channels: int = param(64, "encoder/decoder channels at the stem", min=2)
    padding: int = param(0, "zero pixels added on each side", min=0, max=16)
    preprocess_blocks: int = param(1, "pre-/post-processing blocks", min=0)
    preprocess_cells: int = param(2, "cells per pre-processing block", min=1)
    postprocess_cells: int = param(2, "cells per post-processing block", min=1)
    latent_scales: int = param(1, "resolutions carrying latent groups", min=1, max=5)
    groups_per_scale: int = param(15, "latent groups at the finest latent scale", min=1)
    adaptive_groups: bool = param(False, "halve the group count at each coarser scale")
    flows: int = param(1, "paired IAF cells per group (the paper uses flows on colour sets)", min=0)
    # --- training ---
    batch_size: int = param(32, "images per step and process", min=1)


def load(cfg: Config, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and test images ``[N, C, H, W]`` on the ``num_bits`` grid in [0, 1]."""
    if cfg.dataset == "fashion-mnist":
        train = torch.from_numpy(load_fashion_mnist("train")[0]).unsqueeze(1)
        test = torch.from_numpy(load_fashion_mnist("test")[0]).unsqueeze(1)
    else:
        images = torch.from_numpy(load_emoji(size=32)[0]).permute(0, 3, 1, 2)  # [N, 3, 32, 32] uint8
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))  # fixed split
        cut = len(images) - len(images) // 10
        train, test = images[order[:cut]], images[order[cut:]]
    if cfg.train_subset:
        train = train[:cfg.train_subset]
    train, test = (quantize(t.float() / 255, cfg.num_bits).to(device) for t in (train, test))
    return train, test


def independent_pixels_bpd(train: torch.Tensor, test: torch.Tensor, num_bits: int) -> float:
    """Bits/dim of the best model with independent pixels: per-position, per-channel histograms of the training
    images over the 2^bits values, add-one smoothed, scored on the test images."""
    levels = 2**num_bits
    k_train = torch.round(train * (levels - 1)).long().flatten(1).cpu()  # [N, D]
    k_test = torch.round(test * (levels - 1)).long().flatten(1).cpu()
    counts = torch.ones(k_train.shape[1], levels)
    counts.scatter_add_(1, k_train.t(), torch.ones_like(k_train.t(), dtype=torch.float32))
    log_p = torch.log(counts / counts.sum(1, keepdim=True))  # [D, levels]
    nll = -log_p.gather(1, k_test.t()).sum(0)  # [N_test] nats
    return float(nll.mean() / (k_test.shape[1] * np.log(2)))


def run(cfg: Config, run: Run) -> dict:
    train_x, test_x = load(cfg, run.device)
    channels, size = train_x.shape[1], train_x.shape[2]
    model = NVAE(_nvae.model_config(cfg, image_channels=channels, image_size=size, likelihood="logistic_mixture",
                                    num_bits=cfg.num_bits, num_mix=cfg.num_mix)).to(run.device)
    params, dims = count_parameters(model), latent_dims(model.config)
    trained = _nvae.train(model, cfg, run, train_x, binarize=False, desc="nvae-colour")
    n_iw, n_elbo = min(cfg.iw_test_images, len(test_x)), min(cfg.elbo_test_images, len(test_x))
    result = _nvae.evaluate(model, test_x, iw_samples=cfg.iw_samples, iw_images=n_iw, elbo_images=n_elbo,
                            iw_batch=cfg.iw_batch)
    num_dims = channels * size * size
    iw = result["iw"]
    bpd = bits_per_dim(iw["nll_nats"], num_dims)
    bpd_elbo = bits_per_dim(result["elbo_nats"], num_dims)
    baseline = independent_pixels_bpd(train_x, test_x, cfg.num_bits)
    metrics = {
        "test_bits_per_dim": bpd, "test_bits_per_dim_elbo": bpd_elbo, "test_nll_nats": iw["nll_nats"],
        "independent_pixels_bits_per_dim": baseline, "parameters": params, "latent_dims": dims,
        "active_groups": sum(k > 0.1 for k in result["kl_per_group"]), "groups": model.num_groups,
        "steps": trained["total_steps"], "seconds_per_step": trained["seconds_per_step"],
        "bad_steps": trained["runtime"].bad_steps,
    }
    run.log(**metrics)
    run.summary("test_bits_per_dim", bpd, bar=baseline, direction="min", paper=None,
                note=f"IW bound, K={cfg.iw_samples}, {iw['num_examples']:,} {cfg.dataset} test images; bar = "
                     "independent pixels")
    run.summary("test_bits_per_dim_elbo", bpd_elbo, direction="min", note=f"−ELBO, {n_elbo:,} test images")

    run.section("Claim")
    run.text("NVAE models colour images with a discretised mixture of logistics per pixel whose channel means depend "
             f"linearly on the channels before them, and reports bits/dim (CIFAR-10: {PAPER_CIFAR_BPD} with flows). "
             "Reduced-scale check: the same likelihood and architecture on a small offline set.")
    run.section("What was run")
    run.text(f"{cfg.dataset}: {len(train_x):,} training and {len(test_x):,} test images of {channels}×{size}×{size}, "
             f"{cfg.num_bits}-bit. Model: {params:,} parameters, {model.num_groups} latent groups of "
             f"{cfg.latent_channels} channels ({dims:,} dimensions), {cfg.flows} flow(s) per group, a "
             f"{cfg.num_mix}-component logistic mixture; {trained['total_steps']:,} steps of batch "
             f"{cfg.batch_size}.")
    run.table(["model", "bits/dim", "nats per image"],
              [[f"NVAE, IW K = {cfg.iw_samples} ({iw['num_examples']:,} images)", bpd, iw["nll_nats"]],
               [f"NVAE, −ELBO ({n_elbo:,} images)", bpd_elbo, result["elbo_nats"]],
               ["independent pixels (training histograms)", baseline, baseline * num_dims * np.log(2)]],
              caption="bits/dim = NLL / (D ln 2), D = channels × height × width; the likelihood is discrete, so no "
                      "offset applies.")
    _nvae.sample_figures(model, run, cfg, binary=False, name="nvae_colour")
    _nvae.reconstruction_figure(model, run, test_x, binary=False, name="nvae_colour")
    _nvae.curves_figure(run, trained["history"], result, "nvae_colour")
    return metrics


QUICK = {
    "dataset": "fashion-mnist", "num_mix": 5, "channels": 8, "preprocess_cells": 1, "postprocess_cells": 1,
    "latent_scales": 2, "groups_per_scale": 4, "adaptive_groups": True, "latent_channels": 8, "cells_per_group": 1,
    "flows": 0, "epochs": 1.0, "batch_size": 64, "warmup_epochs": 0.1, "iw_samples": 100, "iw_test_images": 200,
    "elbo_test_images": 2000, "iw_batch": 1, "bn_batches": 20, "bn_batch_size": 64,
}

EXPERIMENT = Experiment(
    name="nvae-colour",
    post=7,
    description="NVAE with a discretised logistic mixture on 8-bit images (Fashion-MNIST or emoji), bits/dim",
    config=Config,
    run=run,
    presets={"quick": QUICK, "full": {}},
    smoke={"epochs": 0.1, "train_subset": 640, "batch_size": 32, "iw_samples": 4, "iw_test_images": 4,
           "elbo_test_images": 20, "num_samples": 4, "bn_batches": 2, "bn_batch_size": 4, "temperatures": (0.6, 1.0),
           "log_every": 5, "flows": 1},
)
