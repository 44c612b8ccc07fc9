"""energy-anomaly: MEG's energy, and its score norm, as anomaly detectors (post 1; MEG §5, arXiv:1901.08508).

Two protocols from the paper (``spec/energy-gan.md`` §3, §8):

- **MNIST, one digit held out** (the paper's split, after Zenati et al. 2018; MEG's ``mnist_anomaly.py``): pool
  the 70,000 train and test images, train MEG on a random 80% of the normal images (every digit but one), test on
  the other 20% of the normals plus every image of the held-out digit
  (:func:`kexue.eval.anomaly.pooled_held_out_digit_split`), so 33-39% of the test set is anomalous. Each image is
  scored by the energy U(x) and by the score norm ‖∇ₓU(x)‖² and judged by AUPRC
  (:func:`kexue.eval.anomaly.auprc`). Paper (EnGAN table, held-out 1/4/5/7/9): 0.281 / 0.401 / 0.402 / 0.29 /
  0.342; a random score gets the anomaly rate (0.388 / 0.351 / 0.331 / 0.368 / 0.356). ``split="mnist-test"``
  keeps the older protocol (train on the MNIST training digits, test on the MNIST test set, 10% anomalies), whose
  numbers are not comparable with the paper's.
- **Tabular, F1 at the contamination percentile.** The paper uses KDD99 (F1 0.9389), which cannot be fetched
  offline; kexue uses the Statlog Shuttle set (7.15% anomalies) with the same recipe: train on the normal points
  of a random half, flag the test points scoring above the (100 − anomaly rate) percentile
  (:func:`kexue.eval.anomaly.f1_at_percentile`). Its numbers are not comparable to KDD99's.

Higher score = more anomalous for both scores: real data sits in low-energy pits with zero slope (the real-data
penalty), so a high energy or a steep slope marks a point the model has not seen.
"""

from dataclasses import asdict, dataclass

import numpy as np
import torch

from kexue.data import load_mnist, load_shuttle
from kexue.eval.anomaly import anomaly_scores, held_out_digit_split, pooled_held_out_digit_split, shuttle_split
from kexue.eval.plots import subplots
from kexue.experiments._energy import build_step, recipe_table, train
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.losses.gan import gradient_norms
from kexue.models.energy import ConvStatistics, MLPStatistics
from kexue.models.gan import ConvCritic, ConvGenerator, MLPCritic, MLPGenerator

PAPER_AUPRC = {1: 0.281, 4: 0.401, 5: 0.402, 7: 0.29, 9: 0.342}
SPLITS = ("pooled", "mnist-test")
SCORES = ("energy", "score")


@dataclass
class Config(ExperimentConfig):
    digits: tuple[int, ...] = param((1, 4, 5, 7, 9), "held-out MNIST digits (one model each)", min=0, max=9)
    split: str = param("pooled", "MNIST split: the paper's (pool 70k, train on 80% of the normals, test on the rest "
                       "+ every held-out image) or the MNIST test set (10% anomalies, not comparable)",
                       choices=SPLITS)
    split_seed: int = param(42, "seed of the pooled split's shuffles (fixed across runs, as the official code's)",
                            min=0)
    mnist_score: str = param("energy", "the anomaly score behind the headline mnist_auprc: the energy U(x) or the "
                             "score norm ‖∇U‖² (both are reported; declared, not picked on the test AUPRC)",
                             choices=SCORES)
    shuttle: bool = param(True, "also run the Shuttle protocol")
    steps: int = param(43_000, "generator iterations per MNIST model (the official 55 epochs of batch 64)", min=1)
    n_critic: int = param(1, "energy updates per generator update (MNIST; the official anomaly script's 1)", min=1)
    batch_size: int = param(64, "images per update", min=2)
    lr: float = param(1e-4, "Adam learning rate of every network", min=1e-7, max=1.0)
    width: int = param(64, "base channels of the conv nets", min=2)
    z_dim: int = param(128, "latent dimension (MNIST)", min=1)
    lam: float = param(100 / 784, "score-penalty weight on MNIST's full per-sample squared norm (the official "
                       "lambda 100 on a per-pixel norm averaged over 784 pixels = 100/784)", min=0.0)
    mi_weight: float = param(1.0, "weight of the MI (entropy) term", min=0.0)
    test_subset: int = param(0, "score only this many MNIST test images (0 = all of the split's test set)", min=0)
    shuttle_steps: int = param(4_900, "generator iterations on Shuttle (55 epochs of batch 256, as KDD99)", min=1)
    shuttle_lam: float = param(100.0, "score-penalty weight on Shuttle (MEG's KDD99 setting)", min=0.0)
    shuttle_z_dim: int = param(32, "latent dimension on Shuttle (MEG's KDD99 setting)", min=1)
    shuttle_width: int = param(128, "hidden units of the Shuttle MLPs", min=4)
    shuttle_n_critic: int = param(1, "energy updates per generator update on Shuttle (MEG's KDD99 setting)", min=1)
    shuttle_rows: int = param(0, "use only this many Shuttle rows (0 = all 49,097)", min=0)
    log_every: int = param(100, "iterations between logged training scalars", min=1)


@torch.no_grad()
def _energies(energy, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    return torch.cat([energy(x[i:i + batch]).float().cpu() for i in range(0, len(x), batch)])


def _score_norms(energy, x: torch.Tensor, batch: int = 1000) -> torch.Tensor:
    """‖∇ₓU(x)‖² per sample (over all of its coordinates)."""
    return torch.cat([gradient_norms(energy, x[i:i + batch], create_graph=False).pow(2).cpu()
                      for i in range(0, len(x), batch)])


def _fit(cfg: Config, run: Run, name: str, data: torch.Tensor, *, conv: bool, steps: int, lam: float,
         n_critic: int, z_dim: int, width: int, batch: int, seed: int):
    device = run.device
    torch.manual_seed(seed)
    if conv:
        G, U = ConvGenerator(z_dim, 1, width).to(device), ConvCritic(1, width).to(device)
        T = ConvStatistics(1, z_dim, width).to(device)
    else:
        d = data.shape[1]
        G, U = MLPGenerator(z_dim, d, width, 3).to(device), MLPCritic(d, width, 3).to(device)
        T = MLPStatistics(d, z_dim, width, 3).to(device)
    data = data.to(device)
    step = build_step("meg", G, U, T, sample_real=lambda: data[torch.randint(len(data), (batch,), device=device)],
                      sample_z=lambda n: torch.randn(n, z_dim, device=device), lam=lam, mi_weight=cfg.mi_weight,
                      estimator="jsd", n_critic=n_critic, lr=cfg.lr, betas=(0.5, 0.9))
    train(step, run, name=name, steps=steps, config=asdict(cfg), log_every=cfg.log_every)
    U.eval()
    return U


def _mnist_splits(cfg: Config, digit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training normals, test images, test is-anomaly) of one held-out digit under ``cfg.split``."""
    train_x, train_y = load_mnist("train")
    test_x, test_y = load_mnist("test")
    if cfg.split == "pooled":
        normal, test, is_anomaly = pooled_held_out_digit_split(np.concatenate([train_x, test_x]),
                                                               np.concatenate([train_y, test_y]), digit,
                                                               seed=cfg.split_seed)
    else:
        normal, test, is_anomaly = held_out_digit_split(train_x, train_y, test_x, test_y, digit)
    if cfg.test_subset:  # the pooled test set is shuffled, so its head is a random subset
        test, is_anomaly = test[:cfg.test_subset], is_anomaly[:cfg.test_subset]
    return normal, test, is_anomaly


def _mnist(cfg: Config, run: Run) -> list[dict]:
    rows = []
    for digit in cfg.digits:
        normal, test, is_anomaly = _mnist_splits(cfg, int(digit))
        x_train = torch.from_numpy(normal).float().div_(127.5).sub_(1).unsqueeze(1)  # [N, 1, 28, 28] in [-1, 1]
        x_test = torch.from_numpy(test).float().div_(127.5).sub_(1).unsqueeze(1).to(run.device)
        U = _fit(cfg, run, f"mnist-heldout-{digit}", x_train, conv=True, steps=cfg.steps, lam=cfg.lam,
                 n_critic=cfg.n_critic, z_dim=cfg.z_dim, width=cfg.width, batch=cfg.batch_size,
                 seed=cfg.seed * 100 + int(digit))
        energy, score = _energies(U, x_test), _score_norms(U, x_test)
        e, s = anomaly_scores(energy, is_anomaly), anomaly_scores(score, is_anomaly)
        row = {"digit": int(digit), "auprc_energy": e["auprc"], "auprc_score": s["auprc"], "auroc_energy": e["auroc"],
               "auroc_score": s["auroc"], "anomaly_rate": e["anomaly_rate"], "paper": PAPER_AUPRC.get(int(digit)),
               "num_train": len(normal), "num_test": len(test)}
        run.log(step=None, **row)
        rows.append(row)
    return rows


def _shuttle(cfg: Config, run: Run) -> dict:
    x, y = load_shuttle()
    if cfg.shuttle_rows:
        keep = np.random.default_rng(cfg.seed).permutation(len(x))[:cfg.shuttle_rows]
        x, y = x[keep], y[keep]
    train_x, test_x, test_y = shuttle_split(x, y, seed=cfg.seed)
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6  # standardise with the normal training points only
    tr = torch.from_numpy((train_x - mean) / std).float()
    te = torch.from_numpy((test_x - mean) / std).float().to(run.device)
    U = _fit(cfg, run, "shuttle", tr, conv=False, steps=cfg.shuttle_steps, lam=cfg.shuttle_lam,
             n_critic=cfg.shuttle_n_critic, z_dim=cfg.shuttle_z_dim, width=cfg.shuttle_width, batch=256,
             seed=cfg.seed * 100 + 99)
    rate = float(test_y.mean())
    pct = 100 * (1 - rate)
    out = {"anomaly_rate": rate, "percentile": pct}
    for name, scores in (("energy", _energies(U, te)), ("score", _score_norms(U, te))):
        r = anomaly_scores(scores, test_y, percentile=pct)
        out.update({f"{name}_{k}": r[k] for k in ("precision", "recall", "f1", "auprc", "auroc")})
        out[f"{name}_values"] = scores.numpy()
    out["labels"] = test_y
    run.log(step=None, shuttle=True, **{k: v for k, v in out.items() if not isinstance(v, np.ndarray)})
    return out


def run(cfg: Config, run: Run) -> dict:
    rows = _mnist(cfg, run) if cfg.digits else []
    shuttle = _shuttle(cfg, run) if cfg.shuttle else None
    metrics: dict[str, float] = {}

    run.section("Claim")
    run.text("MEG's energy is low on the training distribution, with zero slope at the data (the real-data score "
             "penalty). A point from elsewhere should therefore get a high energy or a steep slope: both are anomaly "
             "scores. The paper reports AUPRC on MNIST with one digit held out (EnGAN: 0.28–0.40, better than a VAE "
             "and close to BiGAN-σ) and F1 on KDD99 at the 80th percentile (0.939).")
    if rows:
        run.section("MNIST, one digit held out")
        split = ("the paper's split: the 70,000 train + test images pooled, MEG trained on a random 80% of the normal "
                 "images, tested on the other 20% plus every image of the held-out digit (split seed "
                 f"{cfg.split_seed})" if cfg.split == "pooled" else
                 "the MNIST training digits minus the held-out one; test = the MNIST test set (10% anomalies, not "
                 "the paper's protocol: its AUPRCs are not comparable with the paper's)")
        run.text(f"One MEG per held-out digit: conv nets of base width {cfg.width}, z_dim {cfg.z_dim}, "
                 f"{cfg.steps:,} generator iterations × {cfg.n_critic} energy steps, batch {cfg.batch_size}, Adam lr "
                 f"{cfg.lr:g}, λ = {cfg.lam:.4g}, MI weight {cfg.mi_weight}. Data: {split}"
                 + (f"; only the first {cfg.test_subset:,} test images are scored" if cfg.test_subset else "") + ".")
        recipe_table(run, Config, PRESETS, [
            ("MNIST split", ("pooled", "pooled"), "Zenati et al.: pool 70k, train on 80% of the normals",
             "same (mnist_anomaly.py, shuffle seed 42)", "–"),
            ("energy steps per G step", "n_critic", "–", "1", "quick: 2, measured to train a usable energy in "
             "400 steps"),
            ("λ on the full squared score norm", "lam", "0.1 (Algorithm 1)", "100 per pixel / 784 pixels = 0.128",
             "the official code averages a per-pixel norm; quick keeps the 10 it was measured with"),
            ("generator iterations", "steps", "–", "55 epochs × ~790 batches ≈ 43k", "CPU budget (quick)"),
            ("batch", "batch_size", "–", "64", "–"),
            ("Adam lr, betas", "lr", "–", "1e-4, (0.5, 0.9)", "quick: 5e-4 for 400 steps; betas (0.5, 0.9) "
             "everywhere"),
            ("nets: E / G / T", ("2 stride-2 convs, width 16", "same, width 64"), "–",
             "4 conv 5×5 s2 (64→512) / deconv from 2×2×512 / same trunk + MLP 512", "CPU budget; the same "
             "families at a smaller width"),
            ("z_dim", "z_dim", "–", "128", "quick: 64 (CPU budget)"),
            ("MI weight (energy vs BCE)", "mi_weight", "1 (Algorithm 1)", "BCE over 2m ≈ ½ I_JSD", "the paper's "
             "form"),
            ("headline score", "mnist_score", "energy / score norm", "both logged", "declared before the run"),
        ], caption="Recipe audit: our presets against the paper and the official MEG code.")
        run.table(["held-out digit", "train / test images", "AUPRC energy", "AUPRC ‖∇U‖²", "random AUPRC",
                   "paper AUPRC", "AUROC energy", "AUROC ‖∇U‖²"],
                  [[r["digit"], f"{r['num_train']:,} / {r['num_test']:,}", r["auprc_energy"], r["auprc_score"],
                    r["anomaly_rate"], r["paper"] if r["paper"] is not None else "–", r["auroc_energy"],
                    r["auroc_score"]] for r in rows],
                  caption="AUPRC = average precision (step-wise); a random score scores the anomaly rate of the "
                          "test set ('random AUPRC'); a random AUROC is 0.5.")
        mean_e = float(np.mean([r["auprc_energy"] for r in rows]))
        mean_s = float(np.mean([r["auprc_score"] for r in rows]))
        mean_rate = float(np.mean([r["anomaly_rate"] for r in rows]))
        paper_digits = [r for r in rows if r["paper"] is not None]
        paper_mean = float(np.mean([r["paper"] for r in paper_digits])) if paper_digits else None
        key = f"auprc_{cfg.mnist_score}"
        headline = float(np.mean([r[key] for r in rows]))
        above = sum(r[key] > r["anomaly_rate"] for r in rows)
        metrics.update(mnist_auprc_energy=mean_e, mnist_auprc_score=mean_s, mnist_random_auprc=mean_rate)
        for r in rows:
            metrics[f"mnist_{r['digit']}_auprc_energy"] = r["auprc_energy"]
            metrics[f"mnist_{r['digit']}_auprc_score"] = r["auprc_score"]
            metrics[f"mnist_{r['digit']}_random_auprc"] = r["anomaly_rate"]
        comparable = cfg.split == "pooled" and len(paper_digits) == len(rows)
        score_name = "energy U(x)" if cfg.mnist_score == "energy" else "score norm ‖∇U‖²"
        run.summary("mnist_auprc", headline, bar=paper_mean if comparable else None, paper=paper_mean,
                    note=f"mean over the held-out digits of the {score_name} AUPRC (declared score), paper's split; "
                         f"bar = the paper's mean; random = {mean_rate:.3f}")
        run.summary("mnist_digits_above_random", above, bar=max(1, len(rows) - 1) if comparable else None,
                    note=f"held-out digits whose {score_name} AUPRC beats the random rate, of {len(rows)}")
        run.summary("mnist_auprc_over_random", headline / mean_rate, bar=1.0, note="mean AUPRC / anomaly rate")
        run.text(f"Mean AUPRC: energy {mean_e:.3f}, score norm {mean_s:.3f}, random {mean_rate:.3f}"
                 + (f", paper {paper_mean:.3f}" if paper_mean is not None else "")
                 + f". The headline uses the {score_name} (declared in the config as mnist_score); the other score "
                   "is shown, not chosen after the fact.")
    if shuttle is not None:
        run.section("Shuttle, F1 at the contamination percentile")
        run.text(f"MEG on the standardised normal points of a random half ({cfg.shuttle_steps:,} iterations, batch "
                 f"256, MLPs 3×{cfg.shuttle_width}, z_dim {cfg.shuttle_z_dim}, λ = {cfg.shuttle_lam:g}, "
                 f"{cfg.shuttle_n_critic} energy step per generator step: MEG's KDD99 settings). Test points above the "
                 f"{shuttle['percentile']:.2f}th percentile are flagged (test anomaly rate "
                 f"{shuttle['anomaly_rate']:.2%}).")
        run.table(["score", "precision", "recall", "F1", "AUPRC", "AUROC"],
                  [[name, shuttle[f"{key}_precision"], shuttle[f"{key}_recall"], shuttle[f"{key}_f1"],
                    shuttle[f"{key}_auprc"], shuttle[f"{key}_auroc"]]
                   for name, key in (("energy U(x)", "energy"), ("score norm ‖∇U‖²", "score"))],
                  caption="Paper (KDD99, a different data set): F1 0.9389.")
        f1 = max(shuttle["energy_f1"], shuttle["score_f1"])
        metrics.update(shuttle_f1_energy=shuttle["energy_f1"], shuttle_f1_score=shuttle["score_f1"],
                       shuttle_auprc_energy=shuttle["energy_auprc"], shuttle_auprc_score=shuttle["score_auprc"])
        run.summary("shuttle_f1", f1, note="the better of energy and ‖∇U‖²; the paper's KDD99 F1 (0.939) is on "
                                           "another data set")

    # --- figures ----------------------------------------------------------------------------------------------
    panels = (1 if rows else 0) + (2 if shuttle is not None else 0)
    fig, axes = subplots(1, panels, width=3.8, height=3.2)
    k = 0
    if rows:
        ax = axes[0, k]
        idx = np.arange(len(rows))
        ax.bar(idx - 0.27, [r["auprc_energy"] for r in rows], 0.27, label="energy")
        ax.bar(idx, [r["auprc_score"] for r in rows], 0.27, label="‖∇U‖²")
        ax.bar(idx + 0.27, [r["paper"] or 0 for r in rows], 0.27, label="paper")
        ax.plot(idx, [r["anomaly_rate"] for r in rows], "k_", ms=14, label="random")
        ax.set_xticks(idx)
        ax.set_xticklabels([str(r["digit"]) for r in rows])
        ax.set_xlabel("held-out digit")
        ax.set_ylabel("AUPRC")
        ax.legend(fontsize=7)
        k += 1
    if shuttle is not None:
        for name in ("energy", "score"):
            ax = axes[0, k]
            v, lab = shuttle[f"{name}_values"], shuttle["labels"]
            if name == "score":
                v = np.log10(v + 1e-12)
            bins = np.linspace(np.percentile(v, 0.5), np.percentile(v, 99.5), 60)
            ax.hist(v[lab == 0], bins=bins, alpha=0.6, density=True, label="normal")
            ax.hist(v[lab == 1], bins=bins, alpha=0.6, density=True, label="anomaly")
            ax.set_xlabel("energy U(x)" if name == "energy" else "log10 ‖∇U‖²")
            ax.set_title(f"Shuttle: F1 {shuttle[f'{name}_f1']:.3f}", fontsize=9)
            ax.legend(fontsize=7)
            k += 1
    run.figure(fig, "anomaly", "Left: AUPRC per held-out MNIST digit (energy, score norm, the paper's, and a random "
               "score). Right: Shuttle test scores of normal points and anomalies.", headline=True)
    return metrics


PRESETS = {"quick": {"steps": 400, "width": 16, "z_dim": 64, "lr": 5e-4, "n_critic": 2, "lam": 10.0,
                     "shuttle_steps": 1500, "shuttle_width": 64, "log_every": 50},
           "full": {}}

EXPERIMENT = Experiment(
    name="energy-anomaly",
    post=1,
    description="MEG's energy and score norm as anomaly scores: MNIST held-out digits (AUPRC), Shuttle (F1)",
    config=Config,
    run=run,
    presets=PRESETS,
    smoke={"steps": 2, "width": 4, "z_dim": 8, "digits": (1, 7), "test_subset": 300, "shuttle_steps": 2,
           "shuttle_width": 8, "shuttle_rows": 3000, "log_every": 1},
)
