"""Anomaly scores: closed forms (perfect, reversed, constant), fast-vs-reference with ties, thresholds, splits."""

import numpy as np
import pytest
import torch

from kexue.eval import anomaly as A


def test_perfect_score_gives_one():
    labels = np.r_[np.zeros(90), np.ones(10)].astype(int)
    scores = labels + np.random.default_rng(0).random(100) * 0.5
    assert A.auprc(scores, labels) == 1.0
    assert A.auroc(scores, labels) == 1.0
    at = A.f1_at_percentile(scores, labels, percentile=90)
    assert (at["precision"], at["recall"], at["f1"]) == (1.0, 1.0, 1.0)


def test_reversed_and_constant_scores():
    labels = np.r_[np.zeros(30), np.ones(10)].astype(int)
    assert A.auroc(-labels.astype(float), labels) == 0.0
    assert A.auroc(np.ones(40), labels) == 0.5  # every pair is a tie
    assert A.auprc(np.ones(40), labels) == pytest.approx(0.25)  # one threshold: precision = the anomaly rate
    # Anomalies ranked last: AP = mean over anomalies of (rank among anomalies) / (overall rank).
    expected = np.mean([(i + 1) / (30 + i + 1) for i in range(10)])
    distinct = -10.0 * labels + np.random.default_rng(0).random(40)  # no ties, every anomaly below every normal
    assert A.auprc(distinct, labels) == pytest.approx(expected)


def test_small_worked_example():
    scores, labels = [0.9, 0.8, 0.7, 0.6], [1, 0, 1, 0]
    assert A.auprc(scores, labels) == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert A.auroc(scores, labels) == pytest.approx(3 / 4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_matches_reference_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = (rng.random(300) < 0.2).astype(int)
    scores = rng.integers(0, 12, 300) + 3 * labels  # heavy ties, informative
    assert A.auroc(scores, labels) == pytest.approx(A.auroc_reference(scores, labels), abs=1e-12)
    assert A.auprc(scores, labels) == pytest.approx(A.auprc_reference(scores, labels), abs=1e-12)
    assert A.auprc(torch.tensor(scores), torch.tensor(labels)) == A.auprc(scores, labels)


def test_random_score_auprc_is_the_anomaly_rate():
    rng = np.random.default_rng(0)
    labels = (rng.random(20_000) < 0.1).astype(int)
    assert A.auprc(rng.random(20_000), labels) == pytest.approx(labels.mean(), abs=0.01)
    assert A.auroc(rng.random(20_000), labels) == pytest.approx(0.5, abs=0.02)


def test_anomaly_scores_bundle():
    labels = np.r_[np.zeros(80), np.ones(20)].astype(int)
    out = A.anomaly_scores(labels.astype(float), labels, percentile=80)
    assert out["auprc"] == out["auroc"] == out["f1"] == 1.0
    assert out["anomaly_rate"] == 0.2 and out["num_points"] == 100


@pytest.mark.parametrize("scores, labels, match", [
    ([0.1, 0.2], [0, 2], "0 \\(normal\\) or 1"),
    ([0.1, 0.2], [1, 1], "both classes"),
    ([0.1, np.nan], [0, 1], "NaN"),
    ([0.1, 0.2, 0.3], [0, 1], "equal length"),
])
def test_bad_inputs(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        A.auprc(scores, labels)
    with pytest.raises(ValueError, match="percentile"):
        A.f1_at_percentile([0.1, 0.2], [0, 1], percentile=100)


def test_splits():
    train_x, train_y = np.arange(20).reshape(20, 1), np.arange(20) % 10
    test_x, test_y = np.arange(10).reshape(10, 1), np.arange(10)
    tx, sx, sy = A.held_out_digit_split(train_x, train_y, test_x, test_y, 3)
    assert len(tx) == 18 and 3 not in train_y[train_y != 3] and sy.tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 0, 0]
    assert sx.shape == test_x.shape
    with pytest.raises(ValueError, match="digit"):
        A.held_out_digit_split(train_x, train_y, test_x, test_y, 10)
    feats, labels = np.arange(100.0).reshape(50, 2), (np.arange(50) % 5 == 0).astype(int)
    train, test, test_labels = A.shuttle_split(feats, labels, seed=0)
    assert len(test) == 25 and len(test_labels) == 25 and len(train) == 25 - (labels.sum() - test_labels.sum())
    assert not set(map(tuple, train.tolist())) & set(map(tuple, test.tolist()))  # disjoint halves


# MNIST's digit counts over the pooled 70,000 train + test images (0..9)
MNIST_COUNTS = (6903, 7877, 6990, 7141, 6824, 6313, 6876, 7293, 6825, 6958)


@pytest.mark.parametrize("digit, rate", [(1, 0.388), (4, 0.351), (5, 0.331), (7, 0.368), (9, 0.356)])
def test_pooled_split_class_ratios(digit, rate):
    """The paper's split on MNIST's label counts: train = 80% of the normals (no anomaly), test = the other 20% of
    the normals plus every held-out image, so the anomaly share is n_d / (n_d + 0.2 (70,000 - n_d))."""
    labels = np.repeat(np.arange(10), MNIST_COUNTS)
    images = np.arange(len(labels))  # each "image" is its own index, so membership can be traced
    train, test, is_anomaly = A.pooled_held_out_digit_split(images, labels, digit, seed=3)
    n_digit, n_normal = MNIST_COUNTS[digit], 70_000 - MNIST_COUNTS[digit]
    assert len(train) == int(0.8 * n_normal) and len(test) == n_normal - len(train) + n_digit
    assert (labels[train] != digit).all()  # nothing of the held-out digit is trained on
    assert is_anomaly.sum() == n_digit and (is_anomaly == (labels[test] == digit)).all()
    assert round(is_anomaly.mean(), 3) == rate  # the random AUPRC the spec quotes
    assert not set(train.tolist()) & set(test.tolist())  # disjoint
    assert sorted(train.tolist() + test.tolist()) == list(range(70_000))  # every image used once
    # the normal digits keep their proportions in both halves (a random split, not a sorted one)
    for d in set(range(10)) - {digit}:
        share = MNIST_COUNTS[d] / n_normal
        assert abs((labels[train] == d).mean() - share) < 0.01
        assert abs((labels[test][is_anomaly == 0] == d).mean() - share) < 0.02
    # the test order is shuffled: the anomalies are not all at the end
    assert is_anomaly[: len(test) // 2].mean() > 0.3


def test_pooled_split_seed_and_inputs():
    labels = np.arange(100) % 10
    a = A.pooled_held_out_digit_split(np.arange(100), labels, 2, seed=0)
    b = A.pooled_held_out_digit_split(np.arange(100), labels, 2, seed=0)
    c = A.pooled_held_out_digit_split(np.arange(100), labels, 2, seed=1)
    assert all((x == y).all() for x, y in zip(a, b, strict=True)) and not (a[0] == c[0]).all()
    with pytest.raises(ValueError, match="digit"):
        A.pooled_held_out_digit_split(np.arange(100), labels, 10)
    with pytest.raises(ValueError, match="train_fraction"):
        A.pooled_held_out_digit_split(np.arange(100), labels, 2, train_fraction=1.0)
    with pytest.raises(ValueError, match="differ in length"):
        A.pooled_held_out_digit_split(np.arange(99), labels, 2)
