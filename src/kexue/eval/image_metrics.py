"""FID, KID, improved precision/recall and a classifier score, on a local feature network's features.

References:
    - Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium" (FID),
      arXiv:1706.08500.
    - Bińkowski et al., "Demystifying MMD GANs" (KID: unbiased MMD² with a cubic polynomial kernel),
      arXiv:1801.01401.
    - Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing Generative Models", arXiv:1904.06991.
    - Salimans et al., "Improved Techniques for Training GANs" (the Inception score; here on a local classifier).

Notes (``wasserstein-wgan.md`` §9 lists how FIDs go wrong: float32 accumulation, a net not in eval mode, other
weights):

- Means, covariances and the matrix square root are float64 throughout. The fast Fréchet distance uses the
  symmetric form tr√(Σ₁Σ₂) = tr√(Σ₁^½ Σ₂ Σ₁^½), two ``eigh`` calls on symmetric PSD matrices, instead of a general
  ``sqrtm`` of the non-symmetric product (which can return complex parts from round-off); its slow twin is exactly
  the classic scipy ``sqrtm`` formula.
- KID's per-subset estimate is torchmetrics' ``poly_mmd`` (the unbiased MMD² of Bińkowski et al.), on float64
  features and subsets drawn from an explicit seeded generator, so it is reproducible.
- torchmetrics' ``FrechetInceptionDistance`` accepts a custom feature module (no torch-fidelity needed on that path)
  and the tests check it agrees with :func:`fid`; kexue computes from features directly so the same features serve
  FID, KID and precision/recall, and so the result stays float64.
- :func:`image_metrics` returns every score with its provenance: feature network and weights hash, sample counts,
  reference split, seed.
"""

import math
from typing import Any

import numpy as np
import torch

from kexue.eval.features import FeatureNet, as_images

# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------


def _as_features(x: Any, name: str, min_rows: int = 1) -> torch.Tensor:
    """float64 ``[N, D]`` on the CPU, or a ValueError naming ``name``."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a tensor or numpy array of shape [N, D], got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape [N, D] (one feature vector per row), got {tuple(x.shape)}")
    if not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must be real-valued, got dtype {x.dtype}")
    x = x.detach().cpu().double()
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if len(x) < min_rows:
        raise ValueError(f"{name} has {len(x)} rows; at least {min_rows} are needed")
    return x


def _same_dim(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"{names} have different feature dimensions: {a.shape[1]} vs {b.shape[1]}")


# --------------------------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------------------------


def gaussian_stats(features: Any, name: str = "features") -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased covariance of features, in float64.

    Args:
        features: ``[N, D]``, with N > D so that the covariance can have full rank.
        name: used in error messages.

    Returns:
        ``mu`` ``[D]`` and ``sigma`` ``[D, D]``, float64.

    Raises:
        ValueError: fewer than D + 1 samples (too few for a D x D covariance), non-finite values, wrong shape.
    """
    x = _as_features(features, name)
    n, d = x.shape
    if n < d + 1:
        raise ValueError(f"{name} has {n} samples of dimension {d}: too few for a covariance; need at least {d + 1} "
                         f"(FID needs N > D, and many more for a stable estimate)")
    mu = x.mean(0)
    xc = x - mu
    return mu, xc.T @ xc / (n - 1)


def _psd_sqrt(a: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a symmetric PSD matrix (negative round-off eigenvalues clamped to 0)."""
    evals, evecs = torch.linalg.eigh(a)
    return (evecs * evals.clamp_min(0).sqrt()) @ evecs.T


def _check_stats(mu: Any, sigma: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    mu = torch.as_tensor(mu).double().cpu()
    sigma = torch.as_tensor(sigma).double().cpu()
    if mu.dim() != 1 or sigma.shape != (len(mu), len(mu)):
        raise ValueError(f"{name}: expected mu [D] and sigma [D, D], got {tuple(mu.shape)} and {tuple(sigma.shape)}")
    return mu, sigma


def frechet_distance(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    r"""Squared Fréchet distance between N(μ₁, Σ₁) and N(μ₂, Σ₂).

    :math:`d^2 = \|\mu_1-\mu_2\|^2 + \mathrm{tr}(\Sigma_1+\Sigma_2-2(\Sigma_1\Sigma_2)^{1/2})`.

    Computed in float64 as tr√(Σ₁Σ₂) = tr√(A Σ₂ A) with A = Σ₁^½: the two products are similar matrices, and the
    second is symmetric PSD, so ``eigh`` applies and no complex round-off appears.

    Args:
        mu1, mu2: means ``[D]``.
        sigma1, sigma2: covariances ``[D, D]`` (symmetric PSD).

    Returns:
        The squared Fréchet distance (≥ 0 up to round-off), a Python float.
    """
    mu1, sigma1 = _check_stats(mu1, sigma1, "mu1/sigma1")
    mu2, sigma2 = _check_stats(mu2, sigma2, "mu2/sigma2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"the two Gaussians have different dimensions: {len(mu1)} vs {len(mu2)}")
    root1 = _psd_sqrt((sigma1 + sigma1.T) / 2)
    middle = root1 @ sigma2 @ root1
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp_min(0).sqrt().sum()
    value = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return value.item()


def frechet_distance_reference(mu1: Any, sigma1: Any, mu2: Any, sigma2: Any) -> float:
    """Slow twin of :func:`frechet_distance`: the classic formula with ``scipy.linalg.sqrtm`` of Σ₁Σ₂ (float64)."""
    from scipy import linalg

    mu1, sigma1, mu2, sigma2 = (np.asarray(torch.as_tensor(a).double()) for a in (mu1, sigma1, mu2, sigma2))
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    covmean = np.real(covmean)  # imaginary parts are round-off for PSD inputs
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(features_a: Any, features_b: Any) -> float:
    """FID between two feature sets ``[N_a, D]`` and ``[N_b, D]`` (each N > D): Fréchet distance of their Gaussians."""
    a = _as_features(features_a, "features_a")
    b = _as_features(features_b, "features_b")
    _same_dim(a, b, "features_a and features_b")
    return frechet_distance(*gaussian_stats(a, "features_a"), *gaussian_stats(b, "features_b"))


# --------------------------------------------------------------------------------------------------------------
# KID
# --------------------------------------------------------------------------------------------------------------


def mmd2_unbiased_reference(x: Any, y: Any, degree: int = 3, coef: float = 1.0) -> float:
    r"""Slow twin of KID's per-subset estimate: unbiased MMD² with k(a, b) = (aᵀb / D + coef)^degree, by loops.

    :math:`\frac{1}{m(m-1)}\sum_{i\ne j}k(x_i,x_j) + \frac{1}{m(m-1)}\sum_{i\ne j}k(y_i,y_j)
    - \frac{2}{m^2}\sum_{i,j}k(x_i,y_j)`, for two sets of equal size m.
    """
    x = _as_features(x, "x", 2).numpy()
    y = _as_features(y, "y", 2).numpy()
    m, d = x.shape
    if y.shape != (m, d):
        raise ValueError(f"x and y must have the same shape, got {x.shape} and {y.shape}")

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return (float(a @ b) / d + coef) ** degree

    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    kyy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return (kxx + kyy) / (m * (m - 1)) - 2 * kxy / m**2


def kid(features_a: Any, features_b: Any, *, subsets: int = 100, subset_size: int = 1000,
        generator: torch.Generator | None = None, degree: int = 3, coef: float = 1.0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD² with a cubic polynomial kernel, averaged over random subsets.

    Args:
        features_a, features_b: ``[N_a, D]``, ``[N_b, D]``; both need at least ``subset_size`` rows.
        subsets: number of random subset pairs.
        subset_size: rows per subset (drawn without replacement within a subset).
        generator: the subsets' randomness (default: a generator seeded with 0, so the result is reproducible).
        degree, coef: kernel (aᵀb / D + coef)^degree.

    Returns:
        ``(mean, std)`` over subsets. Unbiased, so it can be slightly negative when the sets match.
    """
    from torchmetrics.image.kid import poly_mmd

    a = _as_features(features_a, "features_a")
    b = _as_features(features_b, "features_b")
    _same_dim(a, b, "features_a and features_b")
    if subsets < 1:
        raise ValueError(f"subsets must be >= 1, got {subsets}")
    if subset_size < 2 or subset_size > min(len(a), len(b)):
        raise ValueError(f"subset_size must be in [2, min(N_a, N_b) = {min(len(a), len(b))}], got {subset_size}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    scores = []
    for _ in range(subsets):
        ia = torch.randperm(len(a), generator=gen)[:subset_size]
        ib = torch.randperm(len(b), generator=gen)[:subset_size]
        scores.append(poly_mmd(a[ia], b[ib], degree=degree, gamma=1.0 / a.shape[1], coef=coef))
    scores = torch.stack(scores)
    return scores.mean().item(), scores.std(unbiased=False).item()


# --------------------------------------------------------------------------------------------------------------
# Improved precision / recall (k-NN manifolds)
# --------------------------------------------------------------------------------------------------------------


def _kth_nn_radius(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row ``[N]`` (column 0 of the sorted row is itself)."""
    radii = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i:i + chunk], x)  # [chunk, N]
        radii.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _coverage(query: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    """Fraction of query rows inside at least one ball B(support_j, radii_j)."""
    inside = 0
    for i in range(0, len(query), chunk):
        d = torch.cdist(query[i:i + chunk], support)  # [chunk, M]
        inside += (d <= radii[None, :]).any(1).sum().item()
    return inside / len(query)


def precision_recall(real: Any, fake: Any, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN balls in feature space.

    The real manifold is the union of balls around each real feature with radius its distance to its k-th nearest
    real neighbour; likewise for fake. Precision = share of fake samples inside the real manifold; recall = share of
    real samples inside the fake manifold. Distances are Euclidean, float64, computed in row chunks.

    Args:
        real: ``[N, D]`` real features; fake: ``[M, D]`` generated features (N, M > k).
        k: neighbourhood size (3 in the paper).
        chunk: rows per distance block (memory ~ chunk x max(N, M) doubles).

    Returns:
        ``(precision, recall)`` in [0, 1].
    """
    r = _as_features(real, "real")
    f = _as_features(fake, "fake")
    _same_dim(r, f, "real and fake")
    if k < 1 or k >= min(len(r), len(f)):
        raise ValueError(f"k must be in [1, min(N, M) - 1 = {min(len(r), len(f)) - 1}], got {k}")
    real_radii = _kth_nn_radius(r, k, chunk)
    fake_radii = _kth_nn_radius(f, k, chunk)
    return _coverage(f, r, real_radii, chunk), _coverage(r, f, fake_radii, chunk)


def precision_recall_reference(real: Any, fake: Any, k: int = 3) -> tuple[float, float]:
    """Slow twin of :func:`precision_recall`: full distance matrices in numpy and explicit loops."""
    r = _as_features(real, "real").numpy()
    f = _as_features(fake, "fake").numpy()

    def radii(x: np.ndarray) -> np.ndarray:
        d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        return np.sort(d, axis=1)[:, k]  # index 0 is the point itself

    def share_inside(query: np.ndarray, support: np.ndarray, rad: np.ndarray) -> float:
        hits = 0
        for q in query:
            dist = np.sqrt(((support - q) ** 2).sum(-1))
            hits += bool(np.any(dist <= rad))
        return hits / len(query)

    return share_inside(f, r, radii(r)), share_inside(r, f, radii(f))


# --------------------------------------------------------------------------------------------------------------
# Classifier score (the Inception score on the local classifier)
# --------------------------------------------------------------------------------------------------------------


def classifier_score(probs: Any) -> float:
    r"""exp(E_x KL(p(y|x) ‖ p(y))), the Inception score computed with the local classifier's softmax.

    Ranges from 1 (every sample gets the same class distribution) to the number of classes (confident, balanced
    predictions). Comparable only across models scored with the same classifier.

    Args:
        probs: ``[N, C]`` rows of class probabilities (each row sums to 1).
    """
    p = _as_features(probs, "probs")
    if (p < 0).any() or not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-4):
        raise ValueError("probs must be rows of probabilities (non-negative, each summing to 1); pass a softmax")
    marginal = p.mean(0, keepdim=True)
    # xlogy: 0 log 0 = 0 for classes a sample gives no mass to.
    kl = (torch.special.xlogy(p, p) - torch.special.xlogy(p, marginal)).sum(1)
    return math.exp(kl.mean().item())


def class_agreement(net: FeatureNet, images: Any, reconstructions: Any, batch_size: int = 1000) -> float:
    """Share of reconstructions the classifier puts in the same class as their inputs (encoder-decoder models).

    Args:
        net: the feature network whose softmax labels both sets.
        images: inputs ``[N, 1, 28, 28]``; reconstructions: their reconstructions, same shape and order.
    """
    x = as_images(images, name="images")
    r = as_images(reconstructions, name="reconstructions")
    if x.shape != r.shape:
        raise ValueError(f"images and reconstructions must have the same shape, got {tuple(x.shape)} and "
                         f"{tuple(r.shape)}")
    return (net.predict(x, batch_size) == net.predict(r, batch_size)).double().mean().item()


# --------------------------------------------------------------------------------------------------------------
# Everything at once, with provenance
# --------------------------------------------------------------------------------------------------------------


def image_metrics(net: FeatureNet, fake_images: Any, real_images: Any, *, reference: str, seed: int = 0,
                  kid_subsets: int = 100, kid_subset_size: int = 1000, pr_k: int = 3,
                  batch_size: int = 1000) -> dict[str, Any]:
    """FID, KID, precision, recall and classifier score of generated images against real ones, with provenance.

    Args:
        net: the feature network (:func:`kexue.eval.features.get_feature_net`).
        fake_images: generated images, uint8 or float in [0, 1], ``[M, 1, 28, 28]`` (see
            :func:`kexue.eval.features.as_images`).
        real_images: the reference images, same format, ``[N, 1, 28, 28]``.
        reference: what ``real_images`` are, e.g. ``"mnist/test"``; recorded, since FIDs against different splits
            differ.
        seed: seeds KID's subsets; recorded.
        kid_subsets, kid_subset_size: KID subsets (the size is capped at min(N, M)).
        pr_k: k of precision/recall.
        batch_size: images per forward pass of the feature network.

    Returns:
        ``{"fid", "kid", "kid_std", "precision", "recall", "classifier_score", "provenance"}``; provenance holds the
        feature network's name and weights hash, the sample counts, the reference, the seed and the settings.
    """
    fake = as_images(fake_images, name="fake_images")
    real = as_images(real_images, name="real_images")
    f_fake = net.features(fake, batch_size)
    f_real = net.features(real, batch_size)
    probs = net.probs(fake, batch_size)
    size = min(kid_subset_size, len(f_fake), len(f_real))
    kid_mean, kid_std = kid(f_fake, f_real, subsets=kid_subsets, subset_size=size,
                            generator=torch.Generator().manual_seed(seed))
    precision, recall = precision_recall(f_real, f_fake, k=pr_k)
    prov = net.provenance
    return {
        "fid": fid(f_fake, f_real),
        "kid": kid_mean,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "classifier_score": classifier_score(probs),
        "provenance": {
            "feature_net": prov.get("feature_net"),
            "weights_sha256": prov.get("weights_sha256"),
            "recipe_hash": prov.get("recipe_hash"),
            "feature_dim": net.num_features,
            "num_fake": len(fake),
            "num_real": len(real),
            "reference": reference,
            "seed": seed,
            "kid_subsets": kid_subsets,
            "kid_subset_size": size,
            "pr_k": pr_k,
            "arithmetic": "float64 means, covariances and matrix square root",
        },
    }
