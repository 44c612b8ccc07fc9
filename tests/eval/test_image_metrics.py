"""FID, KID, precision/recall and the classifier score: closed forms, identities, reference agreement, monotonicity."""

import itertools
import math

import numpy as np
import pytest
import torch

from kexue.eval import image_metrics as M
from kexue.eval.features import FeatureNet
from kexue.models.classifier import FeatureCNN


def _features(n: int, d: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    """n draws from one correlated Gaussian per dimension d (its mixing matrix is fixed), shifted by ``shift``."""
    mix = torch.randn(d, d, generator=torch.Generator().manual_seed(1000 + d), dtype=torch.float64) / math.sqrt(d)
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ mix + shift


# --------------------------------------------------------------------------------------------------------------
# FID
# --------------------------------------------------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero_and_fid_is_symmetric():
    a, b = _features(400, 16, 0), _features(300, 16, 1, shift=0.3)
    assert abs(M.fid(a, a)) < 1e-9
    assert M.fid(a, b) == pytest.approx(M.fid(b, a), rel=1e-10)
    assert M.fid(a, b) > 0.1


def test_frechet_distance_matches_scipy_sqrtm_reference():
    for seed, d in ((0, 8), (1, 32), (2, 64)):
        a, b = _features(500, d, seed), _features(500, d, seed + 10, shift=0.1)
        stats = (*M.gaussian_stats(a), *M.gaussian_stats(b))
        fast, ref = M.frechet_distance(*stats), M.frechet_distance_reference(*stats)
        assert fast == pytest.approx(ref, rel=1e-6, abs=1e-6)


def test_frechet_distance_closed_form_for_commuting_covariances():
    """Diagonal covariances: d² = |μ₁ − μ₂|² + Σ_i (√s1_i − √s2_i)²."""
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.randn(10, generator=g, dtype=torch.float64), torch.randn(10, generator=g, dtype=torch.float64)
    s1, s2 = torch.rand(10, generator=g, dtype=torch.float64) + 0.1, torch.rand(10, generator=g, dtype=torch.float64)
    exact = (mu1 - mu2).square().sum() + (s1.sqrt() - s2.sqrt()).square().sum()
    assert M.frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(exact.item(), rel=1e-12)
    # Rotating both Gaussians by the same orthogonal matrix leaves the distance unchanged.
    q, _ = torch.linalg.qr(torch.randn(10, 10, generator=g, dtype=torch.float64))
    rotated = M.frechet_distance(q @ mu1, q @ torch.diag(s1) @ q.T, q @ mu2, q @ torch.diag(s2) @ q.T)
    assert rotated == pytest.approx(exact.item(), rel=1e-10)


def test_fid_agrees_with_torchmetrics_custom_feature_module():
    from torchmetrics.image.fid import FrechetInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 12

        def forward(self, x):
            return x.double()

    a, b = _features(300, 12, 0), _features(250, 12, 1, shift=0.2)
    metric = FrechetInceptionDistance(feature=Identity())
    metric.update(a, real=True)
    metric.update(b, real=False)
    assert M.fid(a, b) == pytest.approx(metric.compute().item(), rel=1e-6)


def test_gaussian_stats_float64_and_too_few_samples():
    mu, sigma = M.gaussian_stats(np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
    assert mu.dtype == sigma.dtype == torch.float64
    torch.testing.assert_close(sigma, sigma.T)
    with pytest.raises(ValueError, match="too few for a covariance"):
        M.gaussian_stats(torch.randn(8, 8))
    with pytest.raises(ValueError, match="different feature dimensions"):
        M.fid(torch.randn(50, 4), torch.randn(50, 5))
    with pytest.raises(ValueError, match=r"shape \[N, D\]"):
        M.fid(torch.randn(50), torch.randn(50, 5))
    with pytest.raises(ValueError, match="NaN"):
        M.fid(torch.full((50, 4), float("nan")), torch.randn(50, 4))


# --------------------------------------------------------------------------------------------------------------
# KID
# --------------------------------------------------------------------------------------------------------------


def test_kid_subset_estimate_matches_loop_reference():
    from torchmetrics.image.kid import poly_mmd

    x, y = _features(20, 6, 0), _features(20, 6, 1, shift=0.5)
    fast = poly_mmd(x, y, degree=3, gamma=1 / 6, coef=1.0).item()
    assert fast == pytest.approx(M.mmd2_unbiased_reference(x, y), rel=1e-10)
    # With one subset covering both sets entirely, kid() is exactly that estimate.
    mean, std = M.kid(x, y, subsets=1, subset_size=20)
    assert mean == pytest.approx(fast, rel=1e-10) and std == 0.0


def test_kid_is_unbiased_near_zero_for_one_distribution_and_reproducible():
    a, b = _features(600, 8, 0), _features(600, 8, 1)  # same distribution, independent draws
    mean, std = M.kid(a, b, subsets=20, subset_size=200)
    assert abs(mean) < 3 * std / math.sqrt(20) + 1e-3
    again = M.kid(a, b, subsets=20, subset_size=200)
    assert again == (mean, std)  # default generator is seeded
    with pytest.raises(ValueError, match="subset_size"):
        M.kid(a, b, subset_size=601)


# --------------------------------------------------------------------------------------------------------------
# Monotonic degradation under noise, on images through a (random) feature network
# --------------------------------------------------------------------------------------------------------------


def _blob_images(n: int, seed: int) -> torch.Tensor:
    """Structured 28x28 images: a bright Gaussian blob at a random place."""
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, generator=g) * 16 + 6
    grid = torch.arange(28.0)
    d2 = (grid[None, :, None] - centre[:, 0, None, None]) ** 2 + (grid[None, None, :] - centre[:, 1, None, None]) ** 2
    return torch.exp(-d2 / 18).unsqueeze(1)  # [n, 1, 28, 28] in (0, 1]


def _random_feature_net() -> FeatureNet:
    torch.manual_seed(0)
    return FeatureNet(FeatureCNN(widths=(8, 16), feature_dim=16), {"feature_net": "random", "weights_sha256": "x"})


def test_fid_and_kid_grow_monotonically_with_noise():
    net = _random_feature_net()
    real = net.features(_blob_images(600, 0))
    clean = _blob_images(600, 1)
    g = torch.Generator().manual_seed(2)
    noise = torch.randn(clean.shape, generator=g)
    fids, kids = [], []
    for sigma in (0.0, 0.05, 0.1, 0.2, 0.4):
        fake = net.features((clean + sigma * noise).clamp(0, 1))
        fids.append(M.fid(fake, real))
        kids.append(M.kid(fake, real, subsets=10, subset_size=300)[0])
    assert all(a < b for a, b in itertools.pairwise(fids)), fids
    assert all(a < b for a, b in itertools.pairwise(kids)), kids


# --------------------------------------------------------------------------------------------------------------
# Precision / recall
# --------------------------------------------------------------------------------------------------------------


def test_precision_recall_identical_sets_are_one_and_disjoint_sets_zero():
    a = _features(200, 5, 0)
    assert M.precision_recall(a, a.clone()) == (1.0, 1.0)
    assert M.precision_recall(a, a + 1000.0) == (0.0, 0.0)


def test_precision_recall_matches_reference_and_detects_mode_dropping():
    real = _features(300, 4, 0)
    fake = real[real[:, 0] > 0] + 0.01 * _features(int((real[:, 0] > 0).sum()), 4, 1)  # half the modes, precise
    fast = M.precision_recall(real, fake, k=3, chunk=64)
    assert fast == pytest.approx(M.precision_recall_reference(real, fake, k=3), abs=1e-12)
    precision, recall = fast
    assert precision > 0.95 and recall < 0.8


# --------------------------------------------------------------------------------------------------------------
# Classifier score and the combined record
# --------------------------------------------------------------------------------------------------------------


def test_classifier_score_closed_forms():
    assert M.classifier_score(torch.eye(10).repeat(3, 1)) == pytest.approx(10.0)  # confident and balanced
    assert M.classifier_score(torch.full((5, 10), 0.1)) == pytest.approx(1.0)  # no information
    assert M.classifier_score(torch.eye(10)[[0, 0, 0, 1]]) == pytest.approx(math.exp(-(0.75 * math.log(0.75)
                                                                                      + 0.25 * math.log(0.25))))
    with pytest.raises(ValueError, match="probabilities"):
        M.classifier_score(torch.randn(4, 10))


def test_image_metrics_record_carries_provenance():
    net = _random_feature_net()
    out = M.image_metrics(net, _blob_images(120, 0), _blob_images(150, 1), reference="blobs/test", seed=5,
                          kid_subsets=3, kid_subset_size=50)
    for key in ("fid", "kid", "kid_std", "precision", "recall", "classifier_score"):
        assert math.isfinite(out[key]), key
    prov = out["provenance"]
    assert prov["num_fake"] == 120 and prov["num_real"] == 150 and prov["reference"] == "blobs/test"
    assert prov["seed"] == 5 and prov["feature_net"] == "random" and prov["weights_sha256"] == "x"
    with pytest.raises(ValueError, match="fake_images"):
        M.image_metrics(net, torch.rand(10, 1, 28, 28) * 2 - 1, _blob_images(150, 1), reference="x")


def test_class_agreement():
    net = _random_feature_net()
    x = _blob_images(40, 0)
    assert M.class_agreement(net, x, x.clone()) == 1.0
    flipped = x.flip(0)
    expected = (net.predict(x) == net.predict(flipped)).double().mean().item()
    assert M.class_agreement(net, x, flipped) == expected
    with pytest.raises(ValueError, match="same shape"):
        M.class_agreement(net, x, x[:10])


@pytest.mark.slow
def test_fid_kid_grow_with_noise_on_real_mnist_with_the_cached_feature_net():
    """The issue's check on real images: needs MNIST and the standard feature net (`kexue run eval-featurenet`)."""
    from kexue.data.images import load_mnist
    from kexue.errors import DataMissingError
    from kexue.eval.features import FeatureNetCacheError, get_feature_net

    try:
        net = get_feature_net("mnist", train=False)
        test, _ = load_mnist("test")
    except (FeatureNetCacheError, DataMissingError) as err:
        pytest.skip(str(err))
    real = net.features(test[:2000])
    clean = torch.from_numpy(test[2000:4000]).float().div(255).unsqueeze(1)
    noise = torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    fids, kids = [], []
    for sigma in (0.0, 0.05, 0.1, 0.2, 0.4):
        fake = net.features((clean + sigma * noise).clamp(0, 1))
        fids.append(M.fid(fake, real))
        kids.append(M.kid(fake, real, subsets=20, subset_size=1000)[0])
    assert all(a < b for a, b in itertools.pairwise(fids)), fids
    assert all(a < b for a, b in itertools.pairwise(kids)), kids
