"""Shared recipe pieces of the NVAE experiments (``nvae-mnist``, ``vae-flat-mnist``, ``nvae-colour``).

Not an experiment itself (the leading underscore keeps it out of the registry): the training loop around
:class:`kexue.train.vae.NVAEStep` and :class:`kexue.train.runtime.Runtime`, the likelihood evaluation with
:func:`kexue.eval.likelihood.importance_weighted_nll`, and the report figures (samples at several temperatures with
and without BN re-estimation, reconstructions, per-group KL, training curve).
"""

import copy
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from kexue._progress import progress
from kexue.errors import ConfigError
from kexue.eval.likelihood import importance_weighted_nll
from kexue.eval.plots import image_grid, subplots
from kexue.experiments.config import ExperimentConfig, check_subset_holds_a_batch, param
from kexue.losses.vae import adamax, group_kl, warmup_cosine_schedule
from kexue.models.nvae import NVAE, NVAEConfig
from kexue.train import distributed
from kexue.train.data import epoch_order
from kexue.train.runtime import Runtime
from kexue.train.vae import NVAEStep

# --- config and model ------------------------------------------------------------------------------------------------


@dataclass
class Config(ExperimentConfig):
    """The fields every NVAE recipe shares (defaults: the official MNIST model and schedule); a recipe subclasses it
    and overrides defaults. :func:`model_config` reads the model fields, :func:`train` the training ones and the
    evaluation and figure helpers the rest."""

    # --- model (defaults: the official MNIST model) ---
    channels: int = param(32, "encoder/decoder channels at the stem (doubled at each halving)", min=2)
    padding: int = param(2, "zero pixels added on each side (MNIST: 2, 28 -> 32)", min=0, max=16)
    preprocess_blocks: int = param(2, "pre-/post-processing blocks (each halves / doubles the resolution)", min=0)
    preprocess_cells: int = param(3, "cells per pre-processing block", min=1)
    postprocess_cells: int = param(3, "cells per post-processing block", min=1)
    latent_scales: int = param(2, "resolutions carrying latent groups", min=1, max=5)
    groups_per_scale: int = param(10, "latent groups at the finest latent scale", min=1)
    adaptive_groups: bool = param(True, "halve the group count at each coarser scale")
    latent_channels: int = param(20, "channels per latent group", min=1)
    cells_per_group: int = param(2, "encoder and decoder cells per group", min=0)
    flows: int = param(0, "paired IAF cells per group", min=0)
    checkpointing: bool = param(False, "gradient checkpointing at the BN-Swish layers")
    amp: str = param("none", "mixed precision", choices=("none", "bf16", "fp16"))
    # --- training ---
    epochs: float = param(400.0, "training epochs", min=0.001)
    batch_size: int = param(200, "images per step and process", min=1)
    lr: float = param(1e-2, "Adamax learning rate after warm-up", min=1e-6, max=1.0)
    lr_min: float = param(1e-4, "learning rate at the end of the cosine decay", min=0.0, max=1.0)
    warmup_epochs: float = param(5.0, "linear learning-rate warm-up", min=0.0)
    weight_decay: float = param(3e-4, "Adamax weight decay", min=0.0)
    kl_anneal_portion: float = param(0.3, "fraction of training over which β rises to 1", min=0.001, max=1.0)
    kl_balance: bool = param(True, "balance the groups' KL during the warm-up")
    spectral_coeff: float = param(1e-2, "λ of the spectral and BN regularisers (0: off)", min=0.0)
    spectral_coeff_init: float = param(0.0, "anneal λ from this value with the warm-up (0: constant λ)", min=0.0)
    train_subset: int = param(0, "use only this many training images (0 = all)", min=0)
    checkpoint_every: int = param(0, "steps between checkpoints (0 = a tenth of the run)", min=0)
    log_every: int = param(50, "steps between logged training averages", min=1)
    # --- evaluation ---
    iw_samples: int = param(1000, "importance samples per test image", min=1)
    iw_test_images: int = param(10000, "test images for the IW bound (capped at the test set)", min=1)
    elbo_test_images: int = param(10000, "test images for the ELBO and the per-group KL (capped at the test set)",
                                  min=1)
    iw_batch: int = param(10, "test images per IW batch (each decodes 100 samples at a time; 1 is fastest on CPU)",
                          min=1)
    temperatures: tuple[float, ...] = param((0.6, 0.7, 0.8, 0.9, 1.0), "sampling temperatures", min=0.0, max=2.0)
    num_samples: int = param(36, "samples per temperature in the figure", min=1, max=256)
    bn_batches: int = param(500, "prior batches for BN re-estimation", min=1)
    bn_batch_size: int = param(16, "prior samples per BN re-estimation batch", min=2)

    def check(self) -> None:
        check_subset_holds_a_batch(self, "train_subset", "batch_size")


def model_config(cfg: Config, *, image_channels: int, image_size: int, likelihood: str, num_bits: int = 8,
                 num_mix: int = 10) -> NVAEConfig:
    """The :class:`NVAEConfig` of a recipe's config: its model fields, the data's shape and the likelihood.

    The mapping, field by field: ``channels`` -> both towers' widths; ``preprocess_blocks`` -> the pre- and the
    post-processing blocks; ``preprocess_cells`` / ``postprocess_cells``; ``latent_scales``, ``groups_per_scale``,
    ``adaptive_groups`` (at least one group per scale), ``latent_channels``; ``cells_per_group`` -> encoder and
    decoder cells per group; ``flows``; ``checkpointing``; ``padding``. Squeeze-excitation is always on.
    """
    return NVAEConfig(
        image_channels=image_channels, image_size=image_size, padding=cfg.padding, likelihood=likelihood,
        num_mix=num_mix, num_bits=num_bits, enc_channels=cfg.channels, dec_channels=cfg.channels,
        num_preprocess_blocks=cfg.preprocess_blocks, num_preprocess_cells=cfg.preprocess_cells,
        num_postprocess_blocks=cfg.preprocess_blocks, num_postprocess_cells=cfg.postprocess_cells,
        num_latent_scales=cfg.latent_scales, groups_per_scale=cfg.groups_per_scale,
        adaptive_groups=cfg.adaptive_groups, min_groups_per_scale=1, latent_channels=cfg.latent_channels,
        enc_cells_per_group=cfg.cells_per_group, dec_cells_per_group=cfg.cells_per_group, num_flows=cfg.flows,
        use_se=True, checkpointing=cfg.checkpointing,
    )


# --- training --------------------------------------------------------------------------------------------------------


def train(model: NVAE, cfg: Config, run: Any, images: torch.Tensor, *, binarize: bool, desc: str) -> dict:
    """Train ``model`` on ``images`` ``[N, C, H, W]`` (floats in [0, 1], on ``run.device``) with NVAE's recipe.

    Adamax with linear warm-up and cosine decay, KL warm-up and balancing, spectral + BN regularisation, all through
    the runtime (checkpoints every ``cfg.checkpoint_every`` steps, resume, NaN guard, DDP). Batches are a function
    of the step (epoch permutation from the seed; dynamic binarisation from the checkpointed global RNG), so a
    resumed run sees what the uninterrupted one saw. Returns ``{"runtime", "step", "history", "total_steps",
    "seconds_per_step"}``.
    """
    dist = distributed.current()
    distributed.broadcast_parameters(model, dist)
    n = len(images)
    world_batch = cfg.batch_size * dist.world_size
    if n < world_batch:
        raise ConfigError(f"{n} training images are fewer than one batch of {world_batch} (batch_size="
                          f"{cfg.batch_size} x {dist.world_size} processes); lower batch_size or use more images")
    steps_per_epoch = n // world_batch
    total = max(1, round(cfg.epochs * steps_per_epoch))
    warmup = min(total, round(cfg.warmup_epochs * steps_per_epoch))
    opt = adamax(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine_schedule(opt, total, warmup, cfg.lr_min)

    def batch(step: int) -> torch.Tensor:
        epoch, b = divmod(step, steps_per_epoch)
        order = epoch_order(n, epoch, seed=cfg.seed)
        idx = order[b * world_batch:(b + 1) * world_batch][dist.rank * cfg.batch_size:(dist.rank + 1) *
                                                            cfg.batch_size].to(images.device)
        x = images[idx]
        return torch.bernoulli(x) if binarize else x

    nvae_step = NVAEStep(model, opt, sched, batch=batch, total_steps=total, kl_anneal_portion=cfg.kl_anneal_portion,
                         kl_balance=cfg.kl_balance, norm_coeff=cfg.spectral_coeff,
                         norm_coeff_init=cfg.spectral_coeff_init or None, amp=cfg.amp, dist=dist)
    every = cfg.checkpoint_every or max(1, total // 10)
    rt = Runtime(run, config=asdict(cfg), model=nvae_step.modules(), optimizer=opt, scheduler=sched, every=every,
                 keep_last=2, dist=dist)
    rt.resume()
    seconds = rt.extra.setdefault("train_seconds", 0.0)
    cpu_seconds = rt.extra.setdefault("train_cpu_seconds", 0.0)  # process CPU time: comparable on a busy host
    start, cpu_start = time.perf_counter(), time.process_time()
    for step in rt.steps(total, desc=desc, log_every=max(1, min(cfg.log_every, total)), prefix="train_"):
        logs = nvae_step(rt)
        step.mean(**{key: logs[key] for key in ("loss", "nelbo", "recon", "kl")})
        if step.logging:
            row = {"step": step.number, "epoch": step.number / steps_per_epoch, "beta": logs["beta"],
                   "lr": logs["lr"], **step.means}
            # looked up here: a NaN-guard rollback replaces rt.extra with the checkpoint's
            rt.extra.setdefault("history", []).append(row)  # one row per log interval
            rt.extra["train_seconds"] = seconds + time.perf_counter() - start
            rt.extra["train_cpu_seconds"] = cpu_seconds + time.process_time() - cpu_start
            step.log(train_epoch=row["epoch"], train_beta=row["beta"], train_lr=row["lr"], spectral=logs["spectral"],
                     bn=logs["bn"], skipped=logs["skipped"])
    rt.extra["train_seconds"] = seconds + time.perf_counter() - start
    rt.extra["train_cpu_seconds"] = cpu_seconds + time.process_time() - cpu_start
    model.eval()
    return {"runtime": rt, "step": nvae_step, "history": rt.extra.get("history", []), "total_steps": total,
            "seconds_per_step": rt.extra["train_seconds"] / total,
            "cpu_seconds_per_step": rt.extra["train_cpu_seconds"] / total}


# --- evaluation ------------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate(model: NVAE, test: torch.Tensor, *, iw_samples: int, iw_images: int, elbo_images: int,
             chunk_size: int = 100, iw_batch: int = 5, batch_size: int = 100) -> dict:
    """Test likelihoods: the IW bound with ``iw_samples`` on the first ``iw_images`` images and the ELBO (one
    sample) on the first ``elbo_images``, plus the per-group KL and active latent channels on the ELBO images.
    The IW bound decodes ``iw_batch · chunk_size`` samples at once.

    Returns:
        ``{"iw": importance_weighted_nll(...), "elbo_nats", "elbo_std_err", "kl_per_group" [L], "active" [L]
        (channels whose mean KL exceeds 0.1 nats), "channels" [L]}``.
    """
    model.eval()
    iw = importance_weighted_nll(model.log_weights, test[:iw_images], num_samples=iw_samples,
                                 chunk_size=min(chunk_size, iw_samples), batch_size=iw_batch,
                                 desc=f"IW-NLL K={iw_samples}")
    nelbos, kls, per_channel = [], [], []
    for x in progress(test[:elbo_images].split(batch_size), desc="ELBO", unit="batch"):
        out = model(x)
        recon = -model.likelihood(out.params).log_prob(x).flatten(1).sum(1)
        kl = torch.stack([group_kl(g) for g in out.groups], 1)  # [B, L]
        nelbos.append((recon + kl.sum(1)).cpu())
        kls.append(kl.cpu())
        # per latent channel: KL summed over positions, averaged over the batch (NVAE's "active" count)
        per_channel.append(torch.stack([_channel_kl(g).sum(0) for g in out.groups]).cpu())  # [L, C_z]
    nelbo = torch.cat(nelbos).double()
    channel_kl = torch.stack(per_channel).sum(0) / len(nelbo)
    return {
        "iw": iw, "elbo_nats": nelbo.mean().item(),
        "elbo_std_err": nelbo.std().item() / math.sqrt(len(nelbo)) if len(nelbo) > 1 else math.nan,
        "kl_per_group": torch.cat(kls).mean(0).tolist(), "active": (channel_kl > 0.1).sum(1).tolist(),
        "channels": [channel_kl.shape[1]] * channel_kl.shape[0], "elbo_images": len(nelbo),
    }


def _channel_kl(group) -> torch.Tensor:
    """``[B, C_z]``: a group's KL per latent channel, summed over its spatial positions."""
    if group.flow:
        return (group.log_q_map - group.log_p_map).flatten(2).sum(2)
    from kexue.losses.vae import residual_normal_kl

    q, p = group.q, group.p
    return residual_normal_kl(q.mu - p.mu, q.sigma / p.sigma, p.sigma).flatten(2).sum(2)


# --- figures ---------------------------------------------------------------------------------------------------------


def _image(dist_, binary: bool) -> torch.Tensor:
    return dist_.mean if binary else dist_.mean()


@torch.no_grad()
def sample_figures(model: NVAE, run: Any, cfg: Config, *, binary: bool, name: str) -> None:
    """Samples at each temperature in ``cfg.temperatures``, with the training BN statistics and with statistics
    re-estimated at that temperature (on a copy of the model); the same prior noise for both rows."""
    temps = list(cfg.temperatures)
    n = cfg.num_samples
    fig, axes = subplots(2, len(temps), width=2.2, height=2.4)
    for j, t in enumerate(temps):
        for i, readjust in enumerate((False, True)):
            m = copy.deepcopy(model)
            if readjust:
                m.readjust_bn(t, num_batches=cfg.bn_batches, batch_size=cfg.bn_batch_size,
                              generator=torch.Generator(device=run.device).manual_seed(cfg.seed + 1))
            m.eval()
            gen = torch.Generator(device=run.device).manual_seed(cfg.seed)
            images = _image(m.likelihood(m.sample(n, t, generator=gen)), binary)
            ax = axes[i][j]
            ax.imshow(image_grid(images.clamp(0, 1), math.ceil(n / math.isqrt(n))),
                      cmap="gray" if images.shape[1] == 1 else None, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"t = {t}" if i == 0 else "")
            if j == 0:
                ax.set_ylabel("BN re-estimated" if readjust else "training BN stats")
    run.figure(fig, f"{name}_samples", "Samples from the prior at temperatures " + ", ".join(map(str, temps)) +
               f" (pixel means shown). Top: BatchNorm running statistics from training; bottom: re-estimated from "
               f"{cfg.bn_batches} batches of {cfg.bn_batch_size} prior samples at the same temperature. Same noise "
               "in both rows.", headline=True)


@torch.no_grad()
def reconstruction_figure(model: NVAE, run: Any, test: torch.Tensor, *, binary: bool, name: str) -> None:
    x = test[:16]
    out = model.reconstruct(x)
    rec = _image(model.likelihood(out.params), binary)
    fig, axes = subplots(1, 2, width=3.2, height=3.4)
    for ax, images, title in ((axes[0][0], x, "test images"), (axes[0][1], rec, "reconstructions")):
        ax.imshow(image_grid(images.clamp(0, 1), 4), cmap="gray" if images.shape[1] == 1 else None, vmin=0, vmax=1)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    run.figure(fig, f"{name}_reconstructions", "Test images and their reconstructions (every group at its posterior "
               "mean, pixel means shown).")


def curves_figure(run: Any, history: list[dict], result: dict, name: str, unit: str = "nats") -> None:
    fig, axes = subplots(1, 2, width=4.2, height=3.2)
    ax = axes[0][0]
    steps = [r["step"] for r in history]
    ax.plot(steps, [r.get("nelbo", math.nan) for r in history], label="train −ELBO")
    ax.plot(steps, [r.get("loss", math.nan) for r in history], label="train loss (β, balanced)", alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(unit)
    ax.legend(fontsize=8)
    ax2 = ax.twinx()
    ax2.plot(steps, [r["beta"] for r in history], color="0.6", ls="--")
    ax2.set_ylabel("β (KL warm-up)")
    ax = axes[0][1]
    kl = result["kl_per_group"]
    ax.bar(range(len(kl)), kl, color="tab:blue")
    ax.set_xlabel("group (coarsest first)")
    ax.set_ylabel("test KL (nats)")
    ax.set_title("KL per latent group")
    run.figure(fig, f"{name}_training", "Left: training −ELBO and the optimised loss (β-weighted, balanced KL) with "
               "the warm-up coefficient β. Right: the test KL of each latent group.")
