"""eval-reference: what each offline metric gives for real data and for simple baselines (the floors and ceilings).

Scores on a locally trained feature network have no published scale (``wasserstein-wgan.md`` §9: "MNIST FID with a
home-made classifier gives values ~10⁶; users don't know the scale"). This run measures the scale: real test data
against real train data (the floor a perfect model reaches at this sample count) and simple baselines (noise, a
collapsed model, a PCA-Gaussian, independent pixels), for FID / KID / precision / recall / classifier score; the
StackedMNIST and 2-D mixture mode counts of true samples and of mode-dropping baselines; the importance-weighted NLL
helper on a model with an exact likelihood (probabilistic PCA); and anomaly scores of simple detectors (PCA
reconstruction error on MNIST with a held-out digit, Mahalanobis distance on Shuttle). The values go to the data
cache, merged with those of earlier runs, so that model reports can show them beside their own
(``kexue.eval.reference.reference_rows`` and ``reference_status``).
"""

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from kexue._progress import progress
from kexue.errors import DataMissingError
from kexue.eval.anomaly import anomaly_scores, held_out_digit_split, shuttle_split
from kexue.eval.features import describe, get_feature_net
from kexue.eval.image_metrics import image_metrics
from kexue.eval.likelihood import bits_per_dim, importance_weighted_nll
from kexue.eval.modes import count_modes, mixture_modes, stacked_mnist_modes
from kexue.eval.plots import subplots
from kexue.eval.reference import REAL, reference_status, save_reference
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run, write_json

# MNIST held-out-digit AUPRC from the EnGAN text (energy-gan.md §8): EnGAN and its VAE baseline, for context.
ENGAN_AUPRC = {1: (0.281, 0.063), 4: (0.401, 0.337), 5: (0.402, 0.325), 7: (0.29, 0.148), 9: (0.342, 0.104)}


@dataclass
class Config(ExperimentConfig):
    datasets: tuple[str, ...] = param(("mnist", "fashion-mnist"), "image sets to score", choices=("mnist",
                                                                                                  "fashion-mnist"))
    recipe: str = param("standard", "feature-network recipe (tiny: smoke tests only)", choices=("standard", "tiny"))
    num_samples: int = param(10_000, "images per set for FID / KID / precision-recall", min=200, max=10_000)
    kid_subsets: int = param(100, "KID subsets", min=1)
    kid_subset_size: int = param(1000, "KID subset size", min=10)
    stacked_samples: int = param(26_000, "StackedMNIST samples (the protocol: 26,000 for 3 stacks)", min=100)
    mixture_samples: int = param(10_000, "samples per 2-D mixture", min=100)
    fit_size: int = param(60_000, "training images the PCA-based baselines are fitted on", min=100, max=60_000)
    ppca_dim: int = param(16, "latent size of the probabilistic-PCA likelihood reference", min=1, max=256)
    iw_examples: int = param(1000, "MNIST test images scored by the IW-NLL helper", min=10, max=10_000)
    iw_samples: tuple[int, ...] = param((1, 10, 100, 1000), "importance samples K to show the bound tightening", min=1)
    anomaly_digits: tuple[int, ...] = param((1, 4, 5, 7, 9), "MNIST digits held out as the anomaly class", min=0,
                                            max=9)
    shuttle: bool = param(True, "score the Shuttle anomaly set (needs `kexue data fetch shuttle`)")


# --------------------------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------------------------


def _pca(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Top-k PCA of the rows of x (float64): mean ``[D]``, eigenvalues ``[k]`` (descending), eigenvectors ``[D, k]``
    and the total variance (trace of the covariance).

    A randomised SVD (``torch.svd_lowrank``, 4 power iterations) instead of a full ``eigh``: only the leading
    components are used, and the trace gives the rest of the spectrum's sum, which is all PPCA needs.
    """
    mean = x.mean(0)
    xc = x - mean
    _, sv, v = torch.svd_lowrank(xc, q=min(k + 10, min(xc.shape)), niter=4)
    evals = sv[:k].square() / (len(x) - 1)
    return mean, evals, v[:, :k], (xc.square().sum() / (len(x) - 1)).item()


def _baselines(train: np.ndarray, labels: np.ndarray, n: int, fit_size: int,
               gen: torch.Generator) -> dict[str, np.ndarray]:
    """Fake image sets (float in [0, 1], [n, 1, 28, 28]) from simple models of the training set."""
    x = torch.from_numpy(train).double().div(255).reshape(len(train), -1)  # [N, 784]
    pick = torch.randperm(len(x), generator=gen)[:n]
    real = x[pick]
    noise = torch.randn(real.shape, generator=gen, dtype=torch.float64)
    zeros = torch.from_numpy(np.flatnonzero(labels == 0))
    one_class = x[zeros[torch.randint(len(zeros), (n,), generator=gen)]]
    k = 16
    mean, evals, evecs, _ = _pca(x[:fit_size], k)
    z = torch.randn(n, k, generator=gen, dtype=torch.float64) * evals[:k].sqrt()
    pca_gauss = mean + z @ evecs[:, :k].T
    rows = torch.randint(len(x), (n, x.shape[1]), generator=gen)  # each pixel from its own random training image
    marginals = x.gather(0, rows)
    out = {
        REAL: real,
        "train + noise σ=0.1": real + 0.1 * noise,
        "train + noise σ=0.3": real + 0.3 * noise,
        "one class only": one_class,
        f"PCA-Gaussian (k={k})": pca_gauss,
        "independent pixels": marginals,
    }
    return {name: v.clamp(0, 1).reshape(n, 1, 28, 28).float().numpy() for name, v in out.items()}


# --------------------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------------------


def _image_section(cfg: Config, run: Run, data: str, values: dict) -> dict[str, np.ndarray]:
    from kexue.data.images import load_fashion_mnist, load_mnist

    loader = load_mnist if data == "mnist" else load_fashion_mnist
    (train, train_y), (test, _) = loader("train"), loader("test")
    net = get_feature_net(data, cfg.recipe, cfg.seed, device=run.device)
    gen = torch.Generator().manual_seed(cfg.seed)
    real = test[torch.randperm(len(test), generator=gen)[:cfg.num_samples].numpy()]
    fakes = _baselines(train, train_y, cfg.num_samples, cfg.fit_size, gen)
    rows = []
    for name, fake in progress(fakes.items(), total=len(fakes), desc=f"{data} baselines", unit="set"):
        m = image_metrics(net, fake, real, reference=f"{data}/test", seed=cfg.seed, kid_subsets=cfg.kid_subsets,
                          kid_subset_size=cfg.kid_subset_size)
        run.log(data=data, baseline=name, **{k: v for k, v in m.items() if k != "provenance"},
                provenance=m["provenance"])
        values[f"{data}/images/{name}"] = m
        rows.append([name, m["fid"], m["kid"], m["precision"], m["recall"], m["classifier_score"]])
    prov = values[f"{data}/images/{REAL}"]["provenance"]
    run.table(["fake set", "FID", "KID", "precision", "recall", "classifier score"], rows,
              caption=f"{data}: each set of {prov['num_fake']:,} images against {prov['num_real']:,} test images, "
                      f"features of `{describe(net)}`; KID over {prov['kid_subsets']} subsets of "
                      f"{prov['kid_subset_size']}, precision/recall with k = {prov['pr_k']}.")
    return fakes


def _modes_section(cfg: Config, run: Run, values: dict) -> tuple[dict, dict]:
    from kexue.data.images import load_mnist
    from kexue.data.synthetic import gaussian_mixture_2d, stacked_mnist, toy_std

    rows = []
    test, test_y = load_mnist("test")
    net = get_feature_net("mnist", cfg.recipe, cfg.seed, device=run.device)
    stacks, true_modes = stacked_mnist(cfg.stacked_samples, cfg.seed, test, test_y)
    low = test_y < 5
    half, half_modes = stacked_mnist(cfg.stacked_samples, cfg.seed, test[low], test_y[low])
    stacked_rows = []
    for name, images, truth in (("real stacks (MNIST test digits)", stacks, true_modes),
                                ("stacks of digits 0–4 only", half, half_modes)):
        mc = stacked_mnist_modes(images, net)
        record = {**mc.as_dict(), "seed": cfg.seed}  # provenance: feature net, weights hash, protocol size
        # The labeller's own error: the same statistics for the true digit tuples, and the total variation between
        # the two histograms (a lower bound on the share of stacks the classifier puts in another mode).
        true = count_modes(truth, 1000)
        record.update(modes_true_labels=true.covered, kl_true_labels=true.kl,
                      tv_to_true_histogram=0.5 * float(np.abs(mc.counts - true.counts).sum()) / mc.num_samples)
        values[f"stacked-mnist/{name}"] = record
        run.log(section="stacked-mnist", baseline=name, **record)
        rows.append(["StackedMNIST", name, f"{mc.covered} / 1000", mc.kl, "–"])
        stacked_rows.append([name, mc.covered, true.covered, mc.kl, true.kl, record["tv_to_true_histogram"]])

    mixtures = {}
    for kind in ("8", "25"):
        points, _, centres = gaussian_mixture_2d(cfg.mixture_samples, kind=kind, seed=cfg.seed)
        std = toy_std(f"{kind}gaussians")
        rng = np.random.default_rng(cfg.seed)
        gauss = rng.normal(points.mean(0), points.std(0), size=points.shape)  # one moment-matched Gaussian
        few, _, _ = gaussian_mixture_2d(cfg.mixture_samples, kind=kind, seed=cfg.seed + 1)
        dropped = few[np.linalg.norm(few[:, None] - centres[None, : len(centres) // 2 + 1], axis=-1).min(1)
                      < 3 * std]  # samples from about half the modes only
        sets = {"true samples": points, "one Gaussian (moment-matched)": gauss, "about half the modes": dropped}
        mixtures[kind] = (sets, centres, std)
        for name, pts in sets.items():
            mm = mixture_modes(pts, centres, std)
            values[f"mixture-{kind}/{name}"] = {**mm.as_dict(), "seed": cfg.seed}
            run.log(section=f"mixture-{kind}", baseline=name, **mm.as_dict())
            rows.append([f"{kind} Gaussians", name, f"{mm.covered} / {mm.num_modes}", mm.kl,
                         f"{100 * mm.high_quality:.2f}%"])
    run.table(["set", "samples", "modes covered", "KL(p̂ ‖ uniform)", "high quality (≤ 3σ)"], rows,
              caption=f"StackedMNIST: {cfg.stacked_samples:,} stacks labelled channel-wise by `{describe(net)}`. "
                      f"2-D mixtures: {cfg.mixture_samples:,} samples; a mode is covered by ≥ 1 sample within 3σ. "
                      "For true samples the share within 3σ should be 1 − e^(−9/2) = 98.89%.")
    run.table(["StackedMNIST set", "modes (classifier)", "modes (true digits)", "KL (classifier)", "KL (true digits)",
               "TV between histograms"], stacked_rows,
              caption="The labeller's error: any stack the classifier gets wrong lands in some cell, and the protocol "
                      "counts every non-empty cell as a covered mode. So the mode count of a model that drops modes "
                      "is inflated by up to (classifier error per stack) × (samples) spurious cells; its KL is the "
                      "more robust number.")
    return values, mixtures


def _likelihood_section(cfg: Config, run: Run, values: dict) -> list[dict]:
    """Probabilistic PCA on dequantised MNIST: exact log-likelihood vs the importance-weighted estimate."""
    from kexue.data.images import load_mnist

    train, _ = load_mnist("train")
    test, _ = load_mnist("test")
    gen = torch.Generator().manual_seed(cfg.seed)

    def dequantise(pixels: np.ndarray) -> torch.Tensor:
        # Uniform dequantisation onto [0, 1]: x = (pixel + u) / 256, a continuous density for discrete images.
        p = torch.from_numpy(pixels).double().reshape(len(pixels), -1)
        return (p + torch.rand(p.shape, generator=gen, dtype=torch.float64)) / 256

    x_train, x = dequantise(train[:cfg.fit_size]), dequantise(test[:cfg.iw_examples])
    q, dim = cfg.ppca_dim, x.shape[1]
    # PPCA on per-pixel standardised data: isotropic noise fits far better once the always-black border pixels
    # (variance 1/(12·256²)) and the stroke pixels are on one scale. The scaling's Jacobian is −Σ log sd.
    centre, sd = x_train.mean(0), x_train.std(0)
    log_det = sd.log().sum().item()
    xs_train, xs = (x_train - centre) / sd, (x - centre) / sd
    _, evals, evecs, total = _pca(xs_train, q)
    s2 = (total - evals.sum().item()) / (dim - q)  # Tipping & Bishop's ML noise variance: the rest's mean
    w = evecs * (evals - s2).clamp_min(0).sqrt()  # [D, q]
    cov = w @ w.T + s2 * torch.eye(dim, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(torch.zeros(dim, dtype=torch.float64), cov).log_prob(xs) - log_det
    m = torch.eye(q, dtype=torch.float64) + w.T @ w / s2  # posterior precision
    post_cov = torch.linalg.inv(m)
    chol = torch.linalg.cholesky(post_cov) * 1.5  # q(z|x): the posterior, 1.5x too wide, so the bound is loose
    wtw = w.T @ w

    def log_weights(rb: torch.Tensor, k: int):
        mu = rb @ w @ post_cov / s2  # [B, q]
        eps = torch.randn(k, len(rb), q, generator=gen, dtype=torch.float64)
        z = mu + eps @ chol.T  # [k, B, q]
        # |r − W z|² without forming [k, B, D]: |r|² − 2 rᵀW z + zᵀWᵀW z.
        sq = rb.square().sum(-1) - 2 * ((rb @ w) * z).sum(-1) + ((z @ wtw) * z).sum(-1)  # [k, B]
        log_px = -0.5 * (sq / s2 + dim * math.log(2 * math.pi * s2)) - log_det
        log_pz = -0.5 * (z.square().sum(-1) + q * math.log(2 * math.pi))
        log_q = torch.distributions.MultivariateNormal(mu, scale_tril=chol).log_prob(z)
        return log_px, log_pz, log_q

    offset = dim * math.log(256)  # bits/dim on the 0..255 scale, as image-model papers report
    exact_nll = -exact.mean().item()
    rows, curve = [], []
    for k in cfg.iw_samples:
        out = importance_weighted_nll(log_weights, xs, num_samples=k, chunk_size=min(k, 100), batch_size=250,
                                      desc=f"IW-NLL K={k}")
        gaps = exact - out["log_px"]
        gap = gaps.mean().item()
        curve.append({"K": k, "nll": out["nll_nats"], "gap": gap, "sem": gaps.std().item() / math.sqrt(len(gaps))})
        run.log(section="likelihood", K=k, nll_nats=out["nll_nats"], gap_nats=gap)
        rows.append([k, out["nll_nats"] + offset, bits_per_dim(out["nll_nats"] + offset, dim), gap])
    rows.append(["exact", exact_nll + offset, bits_per_dim(exact_nll + offset, dim), 0.0])
    values["likelihood/ppca"] = {"exact_nll_nats": exact_nll + offset, "bits_per_dim": bits_per_dim(exact_nll + offset,
                                                                                                  dim),
                                 "latent_dim": q, "num_examples": cfg.iw_examples, "curve": curve, "seed": cfg.seed}
    run.table(["K", "NLL (nats, 0..255 scale)", "bits/dim", "gap to exact (nats)"], rows,
              caption=f"Probabilistic PCA (q = {q}, on per-pixel standardised data) on {cfg.iw_examples:,} "
                      "dequantised MNIST test images. The IW "
                      "estimate uses an encoder 1.5x wider than the exact posterior; the gap shrinks towards 0 as K "
                      "grows, as the importance-weighted bound promises.")
    return curve


def _anomaly_section(cfg: Config, run: Run, values: dict) -> list:
    from kexue.data.images import load_mnist

    train, train_y = load_mnist("train")
    test, test_y = load_mnist("test")
    rows = []
    for digit in progress(cfg.anomaly_digits, desc="held-out digits", unit="digit"):
        normal, images, is_anomaly = held_out_digit_split(train, train_y, test, test_y, int(digit))
        x = torch.from_numpy(normal[:cfg.fit_size]).double().reshape(-1, 784) / 255
        mean, _, basis, _ = _pca(x, 32)
        t = torch.from_numpy(images).double().reshape(len(images), -1) / 255 - mean
        score = (t - (t @ basis) @ basis.T).square().sum(1)  # reconstruction error off the normal subspace
        res = anomaly_scores(score, is_anomaly, percentile=100 * (1 - is_anomaly.mean()))
        values[f"anomaly/mnist-holdout-{digit}/pca-32"] = res
        run.log(section="anomaly", digit=int(digit), **res)
        engan, vae = ENGAN_AUPRC.get(int(digit), ("–", "–"))
        rows.append([f"MNIST, digit {digit} held out", "PCA(32) reconstruction error", res["auprc"], res["auroc"],
                     res["f1"], f"{100 * res['anomaly_rate']:.1f}%", engan, vae])
    if cfg.shuttle:
        from kexue.data.tabular import load_shuttle

        try:
            feats, labels = load_shuttle()
        except DataMissingError as err:
            run.text(f"**Shuttle skipped**: {err}")
        else:
            train_x, test_x, test_lab = shuttle_split(feats.astype(np.float64), labels, seed=cfg.seed)
            mu = train_x.mean(0)
            cov = np.cov(train_x, rowvar=False) + 1e-6 * np.eye(train_x.shape[1])
            diff = test_x - mu
            score = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)  # squared Mahalanobis distance
            res = anomaly_scores(score, test_lab, percentile=100 * (1 - test_lab.mean()))
            values["anomaly/shuttle/mahalanobis"] = res
            run.log(section="anomaly", set="shuttle", **res)
            rows.append(["Shuttle (half: train on normals; half: test)", "Mahalanobis distance", res["auprc"],
                         res["auroc"], res["f1"], f"{100 * res['anomaly_rate']:.1f}%", "–", "–"])
    run.table(["set", "score", "AUPRC", "AUROC", "F1", "anomaly rate", "EnGAN AUPRC", "VAE AUPRC"], rows,
              caption="Higher score = more anomalous. F1 flags the points above the percentile that matches the "
                      "anomaly rate. EnGAN / VAE: the EnGAN paper's MNIST AUPRC (energy-gan.md §8), for scale.")
    return rows


# --------------------------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------------------------


def run(cfg: Config, run: Run) -> dict:
    values: dict[str, Any] = {"seed": cfg.seed, "num_samples": cfg.num_samples, "recipe": cfg.recipe}
    metrics: dict[str, float] = {}
    run.section("Claim")
    run.text("A metric computed on a locally trained feature network means something only next to reference "
             "values on the same network and sample count. Below: real data against real data (the floor a perfect "
             "model reaches), and simple baselines that fail in known ways.")
    fakes = {}
    for data in cfg.datasets:
        run.section(f"Image metrics: {data}")
        fakes[data] = _image_section(cfg, run, data, values)
        floor = values[f"{data}/images/{REAL}"]
        key = data.replace("-", "_")
        metrics[f"fid_floor_{key}"] = floor["fid"]
        metrics[f"precision_floor_{key}"] = floor["precision"]
        run.summary(f"fid_floor_{key}", floor["fid"], direction="min",
                    note=f"real train vs real test, {cfg.num_samples:,} each")
    run.section("Mode counting")
    _, mixtures = _modes_section(cfg, run, values)
    real_stacks = values["stacked-mnist/real stacks (MNIST test digits)"]
    metrics["stacked_modes_real"] = real_stacks["modes_covered"]
    metrics["stacked_kl_real"] = real_stacks["kl_to_uniform"]
    metrics["mixture25_high_quality_real"] = values["mixture-25/true samples"]["high_quality"]
    run.summary("stacked_modes_real", real_stacks["modes_covered"], bar=1000 if cfg.stacked_samples >= 26_000 else None,
                note="modes of real StackedMNIST stacks, as labelled by the feature net (of 1000)")
    run.summary("stacked_kl_real", real_stacks["kl_to_uniform"], direction="min",
                note="KL to uniform of real stacks: the floor (finite-sample bias ≈ 999 / (2N))")
    run.summary("mixture25_high_quality_real", values["mixture-25/true samples"]["high_quality"], bar=0.98,
                note="share of true samples within 3σ (closed form 98.89%)")
    run.section("Likelihood")
    curve = _likelihood_section(cfg, run, values)
    metrics["ppca_bits_per_dim"] = values["likelihood/ppca"]["bits_per_dim"]
    metrics["iw_gap_largest_k"] = curve[-1]["gap"]
    run.summary("ppca_bits_per_dim", metrics["ppca_bits_per_dim"], direction="min",
                note=f"exact, probabilistic PCA q={cfg.ppca_dim} on dequantised MNIST (0..255 scale)")
    run.summary("iw_gap_largest_k", curve[-1]["gap"], direction="min",
                note=f"exact log p(x) minus IW estimate at K = {curve[-1]['K']} (nats)")
    run.section("Anomaly detection")
    _anomaly_section(cfg, run, values)
    if "anomaly/shuttle/mahalanobis" in values:
        metrics["shuttle_auprc_mahalanobis"] = values["anomaly/shuttle/mahalanobis"]["auprc"]
        run.summary("shuttle_auprc_mahalanobis", metrics["shuttle_auprc_mahalanobis"],
                    note="Mahalanobis baseline on Shuttle")
    _figures(cfg, run, fakes, mixtures, curve, values)
    write_json(run.path / "reference.json", values)
    path = save_reference(values, recipe=cfg.recipe, seed=cfg.seed)
    run.text(f"Reference values written to `{path}` (and `reference.json` in this run). Model reports append them "
             "under their own scores with `kexue.eval.reference.reference_rows`, which keeps only values computed "
             "with the same feature-network weights and sample count; for example: "
             + reference_status(f"{cfg.datasets[0]}/images", num_samples=cfg.num_samples, recipe=cfg.recipe,
                                seed=cfg.seed))
    return metrics


def _figures(cfg: Config, run: Run, fakes: dict, mixtures: dict, curve: list, values: dict) -> None:
    for data, sets in fakes.items():
        names = list(sets)
        fig, axes = subplots(len(names), 1, width=7.0, height=0.95)
        for ax, name in zip(axes[:, 0], names, strict=True):
            row = np.concatenate(list(sets[name][:10, 0]), axis=1)  # 10 images side by side
            ax.imshow(row, cmap="gray_r", vmin=0, vmax=1)
            m = values[f"{data}/images/{name}"]
            ax.set_title(f"{name}: FID {m['fid']:.3g}, precision {m['precision']:.2f}, recall {m['recall']:.2f}",
                         fontsize=8, loc="left")
            ax.axis("off")
        run.figure(fig, f"baselines_{data.replace('-', '_')}",
                   f"{data}: samples of each reference set with its FID / precision / recall against the test set.",
                   headline=data == cfg.datasets[0])

    from matplotlib.patches import Circle

    fig, axes = subplots(1, 3, width=3.6, height=3.4)
    sets, centres, std = mixtures["25"]
    for ax, name in zip(axes[0, :2], ("true samples", "one Gaussian (moment-matched)"), strict=True):
        pts = sets[name][:3000]
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        for c in centres:
            ax.add_patch(Circle(c, 3 * std, fill=False, color="C3", lw=0.6))
        mm = values[f"mixture-25/{name}"]
        ax.set_title(f"{name}\n{mm['modes_covered']}/25 modes, {100 * mm['high_quality']:.1f}% within 3σ",
                     fontsize=8)
        ax.set_aspect("equal")
        ax.set_xlim(-2, 2)
        ax.set_ylim(-2, 2)
    ax = axes[0, 2]
    ks = [c["K"] for c in curve]
    ax.errorbar(ks, [c["gap"] for c in curve], yerr=[2 * c["sem"] for c in curve], fmt="o-", capsize=3)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("importance samples K")
    ax.set_ylabel("log p(x) − IW estimate (nats)")
    ax.set_title("IW bound tightens with K (PPCA, exact p(x))", fontsize=8)
    run.figure(fig, "modes_and_likelihood", "Left: 25-Gaussian mixture, true samples and a moment-matched Gaussian, "
               "with 3σ circles around the centres. Right: gap between the exact PPCA log-likelihood and the "
               "importance-weighted estimate as K grows (±2 standard errors).")


EXPERIMENT = Experiment(
    name="eval-reference",
    post=2,
    description="reference values of every offline metric: real vs real data and simple baselines",
    config=Config,
    run=run,
    presets={"quick": {"num_samples": 5000, "kid_subsets": 50, "iw_examples": 500}, "full": {}},
    smoke={"recipe": "tiny", "datasets": ("mnist",), "num_samples": 300, "kid_subsets": 3, "kid_subset_size": 100,
           "stacked_samples": 2000, "mixture_samples": 1000, "iw_examples": 50, "iw_samples": (1, 10),
           "anomaly_digits": (1,), "shuttle": False, "fit_size": 2000},
)
