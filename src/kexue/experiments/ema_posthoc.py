"""ema-posthoc: choose the EMA length after training, from snapshots of two tracked profiles (EDM2's post-hoc EMA).

Claim (Karras et al., EDM2, arXiv 2312.02696, section 3): tracking two power-function EMAs (relative widths 0.05
and 0.10) and saving them every few steps is enough to rebuild, after training, the EMA of any other width by
least squares over averaging profiles; the rebuilt weights behave like an EMA of that width tracked during
training. Here: a small CNN on MNIST with Adam at a constant learning rate (where the EMA length matters; post 4),
:class:`kexue.train.posthoc_ema.PostHocEMA` tracking 0.05 and 0.10, and four more widths tracked directly as ground
truth. We compare test accuracy and weights of reconstructed and tracked EMAs, sweep the width, and pick it on a
held-out part of the training set (never on the test set whose accuracy is reported).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kexue._progress import progress
from kexue.errors import ConfigError
from kexue.eval.plots import subplots
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.ema_mnist import _tensors, accuracy
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.train.data import epoch_order
from kexue.train.ema import assign_weights
from kexue.train.posthoc_ema import PostHocEMA, PowerEMA, profile_inner, sigma_rel_to_gamma, solve_coefficients


@dataclass
class Config(ExperimentConfig):
    epochs: int = param(4, "training epochs per seed", min=1)
    seeds: int = param(3, "independent runs (seeds seed, seed+1, ...)", min=1, max=20)
    batch_size: int = param(128, "batch size", min=1)
    lr: float = param(1e-3, "Adam learning rate, constant", min=1e-6, max=1.0)
    width: int = param(32, "channels of the CNN's first conv layer", min=4, max=512)
    tracked: tuple[float, ...] = param((0.05, 0.10), "sigma_rel of the profiles tracked for snapshots", min=0.001,
                                       max=0.3)
    direct: tuple[float, ...] = param((0.03, 0.07, 0.15, 0.25), "sigma_rel also tracked directly (ground truth)",
                                      min=0.001, max=0.3)
    snapshots: int = param(16, "snapshots per run (of each tracked profile)", min=2, max=1000)
    grid: int = param(12, "sigma_rel values swept by reconstruction (geometric, 0.02 to 0.28)", min=2, max=100)
    val_size: int = param(5000, "training images held out to choose sigma_rel", min=10)
    train_subset: int = param(0, "use only this many training images (0 = all 60,000)", min=0)
    test_subset: int = param(0, "use only this many test images (0 = all 10,000)", min=0)


def make_cnn(width: int) -> nn.Sequential:
    """A small CNN without BatchNorm (running variances must not be combined with negative weights): 28x28 -> 10."""
    w = width
    return nn.Sequential(
        nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14x14
        nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7x7
        nn.Flatten(), nn.Linear(2 * w * 49, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def _flat(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.double().flatten() for v in weights.values()])


def profile_error(snap_t: list[int], snap_gamma: list[float], t: int, sigma_rel: float) -> tuple[float, np.ndarray]:
    """Relative L2 distance between the target profile and its least-squares reconstruction, and the weights."""
    gamma = sigma_rel_to_gamma(sigma_rel)
    x = solve_coefficients(snap_t, snap_gamma, t, gamma)
    ts, gs = np.array(snap_t, dtype=float), np.array(snap_gamma)
    gram = profile_inner(ts[:, None], gs[:, None], ts[None, :], gs[None, :])
    b, c = profile_inner(ts, gs, t, gamma), float(profile_inner(t, gamma, t, gamma))
    return math.sqrt(max(x @ gram @ x - 2 * x @ b + c, 0.0) / c), x


def train_one(cfg: Config, seed: int, data: dict, device: torch.device, grid: list[float]) -> dict:
    """Train one seed; return accuracies (val, test) of raw, tracked and reconstructed weights, and weight errors."""
    x_train, y_train = data["train"]
    n = len(x_train)
    steps_per_epoch = n // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    torch.manual_seed(seed)
    model = make_cnn(cfg.width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    posthoc = PostHocEMA(model, cfg.tracked, snapshot_every=max(1, total // cfg.snapshots))
    truth = {s: PowerEMA(model, s) for s in cfg.direct}
    loss_fn = nn.CrossEntropyLoss()
    bar = progress(total=total, desc=f"ema-posthoc seed {seed}", unit="step")
    for step in range(total):
        epoch, b = divmod(step, steps_per_epoch)
        idx = epoch_order(n, epoch, seed=seed)[b * cfg.batch_size:(b + 1) * cfg.batch_size].to(device)
        loss = loss_fn(model(x_train[idx]), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        posthoc.update(model)
        for ema in truth.values():
            ema.update(model)
        bar.update(1)
    bar.close()
    posthoc.snapshot()  # the last step, if the schedule did not land on it

    scratch = make_cnn(cfg.width).to(device)

    def evaluate(weights: dict[str, torch.Tensor], splits: tuple[str, ...] = ("test",)) -> dict[str, float]:
        assign_weights(scratch, weights)
        # batches of 250: activations stay under glibc's mmap threshold, so no page faults on every call
        return {split: accuracy(scratch, *data[split], batch=250) for split in splits}

    raw = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out: dict = {"raw": evaluate(raw), "grid": [evaluate(posthoc.reconstruct(s), ("val", "test")) for s in grid],
                 "tracked": {}, "recon": {}, "weight_error": {}}
    for s, ema in truth.items():
        tracked, recon = ema.averaged(), posthoc.reconstruct(s)
        out["tracked"][s], out["recon"][s] = evaluate(tracked), evaluate(recon)
        # reconstruction error against how far averaging moved the weights at all
        out["weight_error"][s] = float((_flat(recon) - _flat(tracked)).norm() / (_flat(tracked) - _flat(raw)).norm())
    for s, profile in zip(cfg.tracked, posthoc.profiles, strict=True):
        out["tracked"][s] = evaluate(profile.averaged())
    snaps = posthoc.snapshots()
    out["snap_t"], out["snap_gamma"], out["steps"] = [s.step for s in snaps], [s.gamma for s in snaps], total
    return out


def run(cfg: Config, run: Run) -> dict:
    images, labels = _tensors("train", cfg.train_subset, run.device)
    if cfg.val_size >= len(images):
        raise ConfigError(f"val_size {cfg.val_size} leaves no training images (have {len(images)})")
    data = {"train": (images[:-cfg.val_size], labels[:-cfg.val_size]),
            "val": (images[-cfg.val_size:], labels[-cfg.val_size:]),
            "test": _tensors("test", cfg.test_subset, run.device)}
    grid = [float(v) for v in np.geomspace(0.02, 0.28, cfg.grid)]
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    results = []
    for seed in seeds:  # logged as each seed finishes
        r = train_one(cfg, seed, data, run.device, grid)
        results.append(r)
        run.log(seed=seed, raw_test=r["raw"]["test"], **{f"recon_{s}_test": r["recon"][s]["test"] for s in cfg.direct},
                **{f"tracked_{s}_test": r["tracked"][s]["test"] for s in cfg.direct})

    # --- numbers -----------------------------------------------------------------------------------------------------
    gaps = [abs(r["recon"][s]["test"] - r["tracked"][s]["test"]) for r in results for s in cfg.direct]
    errors = [r["weight_error"][s] for r in results for s in cfg.direct]
    chosen = [int(np.argmax([g["val"] for g in r["grid"]])) for r in results]  # chosen on validation, not test
    chosen_test = [r["grid"][c]["test"] for r, c in zip(results, chosen, strict=True)]
    raw_test = [r["raw"]["test"] for r in results]
    gain = [c - r for c, r in zip(chosen_test, raw_test, strict=True)]
    profile_err = {s: profile_error(results[0]["snap_t"], results[0]["snap_gamma"], results[0]["steps"], s)[0]
                   for s in cfg.direct}
    metrics = {"max_gap_recon_vs_tracked": max(gaps), "median_weight_error": float(np.median(errors)),
               "max_weight_error": max(errors), "acc_chosen_mean": float(np.mean(chosen_test)),
               "acc_raw_mean": float(np.mean(raw_test)), "gain_min": min(gain), "gain_mean": float(np.mean(gain))}

    def spread(values: list[float]) -> str:
        return f"{np.mean(values):.4f} [{min(values):.4f}, {max(values):.4f}]"

    # --- report -------------------------------------------------------------------------------------------------------
    run.section("Claim")
    run.text("EDM2 (arXiv 2312.02696, section 3): track two power-function EMAs (sigma_rel 0.05 and 0.10), save "
             "snapshots, and after training rebuild the EMA of any width as the least-squares combination of the "
             "snapshots' averaging profiles; the rebuilt EMA behaves like one tracked during training. Setting: a "
             f"small CNN (width {cfg.width}, no BatchNorm) on MNIST, Adam lr {cfg.lr} constant, batch "
             f"{cfg.batch_size}, {cfg.epochs} epochs, {cfg.snapshots} snapshots of each tracked profile, "
             f"{cfg.seeds} seeds. Widths {', '.join(map(str, cfg.direct))} are also tracked directly as ground truth.")
    run.section("Reconstructed against tracked")
    rows = []
    for s in cfg.direct:
        rows.append([s, spread([r["tracked"][s]["test"] for r in results]),
                     spread([r["recon"][s]["test"] for r in results]),
                     max(abs(r["recon"][s]["test"] - r["tracked"][s]["test"]) for r in results),
                     float(np.median([r["weight_error"][s] for r in results])), profile_err[s]])
    run.table(["sigma_rel", "test acc, tracked", "test acc, reconstructed", "max |gap|",
               "weight error (median)", "profile error"], rows,
              caption=f"Mean [min, max] over {cfg.seeds} seeds; {len(data['test'][0]):,} test images. Weight error: "
                      "||reconstructed - tracked|| / ||tracked - raw||. Profile error: relative L2 distance of the "
                      "rebuilt averaging profile from the target (seed 0's snapshot steps).")
    run.summary("max_gap_recon_vs_tracked", metrics["max_gap_recon_vs_tracked"], bar=0.003, direction="min",
                note="largest |test accuracy gap| between reconstructed and tracked EMAs (all seeds, widths)")
    run.summary("median_weight_error", metrics["median_weight_error"], bar=0.1, direction="min",
                note="||reconstructed - tracked|| / ||tracked - raw||")
    run.section("Choosing the width after training")
    run.text(f"Chosen on the {cfg.val_size:,} held-out training images: sigma_rel "
             f"{', '.join(f'{grid[c]:.3f}' for c in chosen)} (per seed). Test accuracy at the chosen width "
             f"{spread(chosen_test)} against the raw weights {spread(raw_test)}: gain {spread(gain)} "
             f"(mean [min, max] over {cfg.seeds} seeds).")
    run.summary("acc_chosen", metrics["acc_chosen_mean"], note="test accuracy, post-hoc EMA of the width chosen on "
                "validation (mean over seeds)")
    run.summary("gain_min", metrics["gain_min"], bar=0.0, note="smallest gain over the raw weights across seeds")

    fig, axes = subplots(1, 2, width=4.8, height=3.6)
    ax = axes[0][0]
    curves = 100 * np.array([[g["test"] for g in r["grid"]] for r in results])  # [seeds, grid]
    ax.plot(grid, curves.mean(0), color="tab:blue", marker=".", label="reconstructed (post hoc)")
    ax.fill_between(grid, curves.min(0), curves.max(0), color="tab:blue", alpha=0.2, lw=0)
    widths = sorted(set(cfg.direct) | set(cfg.tracked))
    tracked = 100 * np.array([[r["tracked"][s]["test"] for s in widths] for r in results])
    ax.errorbar(widths, tracked.mean(0), yerr=[tracked.mean(0) - tracked.min(0), tracked.max(0) - tracked.mean(0)],
                fmt="o", color="tab:red", ms=4, capsize=2, label="tracked during training")
    ax.axhline(100 * np.mean(raw_test), color="0.5", ls="--", label="raw weights")
    for s in cfg.tracked:
        ax.axvline(s, color="0.8", lw=0.8, zorder=0)
    ax.set_xscale("log")
    ax.set_xlabel("sigma_rel (EMA width / training length)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"mean and range over {cfg.seeds} seeds")
    ax.legend(fontsize=8)
    ax = axes[0][1]
    r0 = results[0]
    u = np.linspace(1e-3, 1, 400)
    for s, colour in zip(cfg.direct, ("tab:green", "tab:orange", "tab:purple", "tab:brown", "tab:pink"), strict=False):
        gamma = sigma_rel_to_gamma(s)
        x = profile_error(r0["snap_t"], r0["snap_gamma"], r0["steps"], s)[1]
        t = r0["steps"]
        rebuilt = sum(xi * np.where(u * t <= ti, (gi + 1) * (u * t) ** gi / ti ** (gi + 1), 0.0)
                      for xi, ti, gi in zip(x, r0["snap_t"], r0["snap_gamma"], strict=True)) * t
        ax.plot(u, (gamma + 1) * u**gamma, color=colour, ls="--", lw=1)
        ax.plot(u, rebuilt, color=colour, lw=1, label=f"sigma_rel {s}")
    ax.set_xlabel("step / training length")
    ax.set_ylabel("weight density")
    ax.set_title("target (dashed) and rebuilt profiles")
    ax.legend(fontsize=8)
    run.figure(fig, "posthoc_ema_accuracy", "Left: test accuracy against the EMA width, reconstructed from "
               f"snapshots of sigma_rel {', '.join(map(str, cfg.tracked))} (grey lines) and tracked directly. Right: "
               "the averaging profiles the reconstruction assembles from the snapshots.", headline=True)
    return metrics


EXPERIMENT = Experiment(
    name="ema-posthoc",
    post=4,
    description="Post-hoc EMA (EDM2) on MNIST: test accuracy against EMA width, reconstructed vs tracked",
    config=Config,
    run=run,
    presets={"quick": {"epochs": 2, "width": 16, "grid": 8}, "full": {}},
    smoke={"epochs": 1, "seeds": 2, "train_subset": 1000, "test_subset": 200, "val_size": 200, "batch_size": 50,
           "snapshots": 4, "grid": 3},
)
