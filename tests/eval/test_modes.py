"""Mode counting: exact counts and KL on known histograms, StackedMNIST labelling, 2-D mixture coverage."""

import math

import numpy as np
import pytest
import torch

from kexue.data.synthetic import gaussian_mixture_2d
from kexue.eval import modes as M
from kexue.eval.features import FeatureNet

# --------------------------------------------------------------------------------------------------------------
# Histograms
# --------------------------------------------------------------------------------------------------------------


def test_count_modes_on_a_known_histogram():
    labels = [0] * 5 + [1] * 3 + [7] * 2
    out = M.count_modes(labels, 10)
    p = np.array([0.5, 0.3, 0.2])
    assert out.covered == 3 and out.num_samples == 10 and out.num_modes == 10
    assert out.kl == pytest.approx(float((p * np.log(p * 10)).sum()), rel=1e-12)
    assert out.counts.tolist() == [5, 3, 0, 0, 0, 0, 0, 2, 0, 0]
    ref = M.count_modes_reference(labels, 10)
    assert (ref.covered, ref.counts.tolist()) == (out.covered, out.counts.tolist())
    assert ref.kl == pytest.approx(out.kl, rel=1e-12)


def test_kl_closed_forms():
    assert M.count_modes(np.arange(1000).repeat(26), 1000).kl == pytest.approx(0.0, abs=1e-12)  # uniform
    single = M.count_modes(np.zeros(26_000, dtype=np.int64), 1000)
    assert single.covered == 1 and single.kl == pytest.approx(math.log(1000))  # all mass on one mode
    half = M.count_modes(np.arange(500).repeat(4), 1000)  # uniform on half the modes: KL = log 2
    assert half.covered == 500 and half.kl == pytest.approx(math.log(2))
    assert M.kl_to_uniform([0, 0]) == math.inf


def test_count_modes_fast_matches_reference_on_random_labels():
    labels = np.random.default_rng(0).zipf(1.5, 5000) % 100
    fast, ref = M.count_modes(labels, 100), M.count_modes_reference(labels, 100)
    assert fast.covered == ref.covered and np.array_equal(fast.counts, ref.counts)
    assert fast.kl == pytest.approx(ref.kl, rel=1e-10)


@pytest.mark.parametrize("bad, match", [([0, 10], r"\[0, 9\]"), ([-1], r"\[0, 9\]"), ([0.5], "integer"),
                                        ([], "non-empty"), ([[0, 1]], "1-D")])
def test_count_modes_bad_labels(bad, match):
    with pytest.raises(ValueError, match=match):
        M.count_modes(np.asarray(bad) if bad != [0.5] else np.array(bad), 10)


# --------------------------------------------------------------------------------------------------------------
# StackedMNIST
# --------------------------------------------------------------------------------------------------------------


class _BrightnessClassifier(torch.nn.Module):
    """A stand-in MNIST classifier: an image of constant brightness d/9 is digit d."""

    in_channels, image_size, num_features = 1, 28, 1

    def __init__(self):
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # FeatureNet reads the device from a parameter

    def forward(self, x):
        level = x.mean((1, 2, 3), keepdim=False)[:, None] * 9  # [N, 1]
        return -(level - torch.arange(10.0)).square()  # logits peaked at the nearest digit


def test_digits_to_mode_and_protocol_size():
    assert M.digits_to_mode([[1, 2, 3], [0, 0, 9], [9, 9, 9]]).tolist() == [123, 9, 999]
    assert M.stacked_num_samples(3) == 26_000 and M.stacked_num_samples(4) == 260_000
    with pytest.raises(ValueError, match=r"0\.\.9"):
        M.digits_to_mode([[1, 10, 3]])


def test_stacked_mnist_modes_labels_each_channel():
    net = FeatureNet(_BrightnessClassifier(), {"data": "mnist"})
    digits = np.stack(np.meshgrid(np.arange(10), np.arange(10), np.arange(10), indexing="ij"), -1).reshape(-1, 3)
    digits = np.concatenate([digits, digits[:10]])  # every mode once, the first ten twice
    images = np.broadcast_to((digits / 9.0)[:, :, None, None], (len(digits), 3, 28, 28)).astype(np.float32)
    out = M.stacked_mnist_modes(images, net)
    assert out.covered == 1000 and out.num_modes == 1000 and out.num_samples == 1010
    expected = np.ones(1000)
    expected[M.digits_to_mode(digits[:10]).numpy()] += 1
    assert np.array_equal(out.counts, expected)
    assert out.kl == pytest.approx(M.kl_to_uniform(expected), rel=1e-12)
    record = out.as_dict()  # the metrics record names the labeller and the protocol's size
    assert record["provenance"]["n_stack"] == 3 and record["provenance"]["protocol_samples"] == 26_000
    assert record["modes_covered"] == 1000 and "counts" not in record
    with pytest.raises(ValueError, match="MNIST feature network"):
        M.stacked_mnist_modes(images[:2], FeatureNet(_BrightnessClassifier(), {"data": "fashion-mnist"}))


# --------------------------------------------------------------------------------------------------------------
# 2-D mixtures
# --------------------------------------------------------------------------------------------------------------


def test_mixture_modes_exact_counts():
    centres = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    std = 0.01
    samples = np.concatenate([
        np.repeat(centres[:2], 3, axis=0),  # 3 exact hits on modes 0 and 1
        [[1.0, 1.0 + 2.9 * std]],  # inside 3σ of mode 3
        [[0.0, 1.0 + 3.1 * std]],  # just outside 3σ of mode 2: low quality
        [[0.5, 0.5]],  # between modes
    ])
    out = M.mixture_modes(samples, centres, std)
    assert out.counts.tolist() == [3, 3, 0, 1]
    assert out.covered == 3 and out.high_quality == pytest.approx(7 / 9)
    p = np.array([3, 3, 1]) / 7
    assert out.kl == pytest.approx(float((p * np.log(p * 4)).sum()))
    assert M.mixture_modes(samples, centres, std, min_count=2).covered == 2
    assert out.as_dict()["provenance"] == {"std": std, "sigmas": 3.0, "min_count": 1}
    ref = M.mixture_modes_reference(samples, centres, std)
    assert (ref.covered, ref.high_quality, ref.counts.tolist()) == (out.covered, out.high_quality,
                                                                    out.counts.tolist())


def test_mixture_modes_on_true_samples_match_the_rayleigh_closed_form():
    """True samples: all 25 modes covered; P(|ε| ≤ 3σ) for a 2-D Gaussian is 1 − exp(−9/2) = 98.89%."""
    n = 20_000
    points, _, centres = gaussian_mixture_2d(n, kind="25", seed=0)
    std = 0.05 / 2.828  # the convention's std after division
    out = M.mixture_modes(points, centres, std)
    expected = 1 - math.exp(-4.5)
    assert out.covered == 25
    assert out.high_quality == pytest.approx(expected, abs=4 * math.sqrt(expected * (1 - expected) / n))
    assert out.kl < 0.01
    ref = M.mixture_modes_reference(points[:500], centres, std)
    fast = M.mixture_modes(points[:500], centres, std)
    assert ref.high_quality == fast.high_quality and np.array_equal(ref.counts, fast.counts)


def test_mixture_modes_bad_inputs():
    with pytest.raises(ValueError, match="centres"):
        M.mixture_modes(np.zeros((5, 2)), np.zeros((3, 3)), 0.1)
    with pytest.raises(ValueError, match="std > 0"):
        M.mixture_modes(np.zeros((5, 2)), np.zeros((3, 2)), 0.0)
    with pytest.raises(ValueError, match="NaN"):
        M.mixture_modes(np.full((5, 2), np.nan), np.zeros((3, 2)), 0.1)
