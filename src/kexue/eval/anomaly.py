"""Anomaly-detection scores: AUPRC (average precision), AUROC, and precision/recall/F1 at a score percentile.

Protocols from the energy-based GAN paper (MEG / EnGAN, ``energy-gan.md`` §3 and §8): an energy (or any score where
higher = more anomalous) is thresholded at the 80th percentile for KDD99's F1 (the top 20% are flagged), and MNIST
is scored by AUPRC with one digit held out of training as the anomaly class (the paper's split pools all 70,000
images: :func:`pooled_held_out_digit_split`). kexue uses the Statlog Shuttle set from the river wheel in place of
KDD99 (which cannot be fetched offline); there the natural threshold is the known anomaly rate (7.15%, i.e. the
92.85th percentile).

Definitions (anomaly = positive class, label 1):

- AUROC = P(score of a random anomaly > score of a random normal) + ½ P(tie), computed from mid-ranks (the
  Mann–Whitney U statistic); the slow twin compares every pair.
- AUPRC = average precision Σ_n (R_n − R_{n−1}) P_n over the distinct score thresholds, high to low (the step-wise
  area, as scikit-learn's ``average_precision_score``: no interpolation, which would be optimistic); the slow twin
  loops over thresholds.
"""

import math
from typing import Any

import numpy as np
import torch

# --------------------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------------------


def _inputs(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    s = scores.detach().cpu().double().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, float)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if s.ndim != 1 or y.shape != s.shape or len(s) == 0:
        raise ValueError(f"scores and labels must be non-empty 1-D arrays of equal length, got shapes {s.shape} and "
                         f"{y.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.isin(y, (0, 1)).all():
        raise ValueError(f"labels must be 0 (normal) or 1 (anomaly), got values {np.unique(y)[:5].tolist()}")
    y = y.astype(np.int64)
    if y.sum() == 0 or y.sum() == len(y):
        raise ValueError("labels must contain both classes (0 = normal, 1 = anomaly)")
    return s, y


# --------------------------------------------------------------------------------------------------------------
# AUROC
# --------------------------------------------------------------------------------------------------------------


def auroc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve, from mid-ranks (ties count ½). Higher score = more anomalous.

    Args:
        scores: ``[N]`` anomaly scores.
        labels: ``[N]`` 1 for anomalies, 0 for normal points (both must occur).
    """
    from scipy.stats import rankdata

    s, y = _inputs(scores, labels)
    ranks = rankdata(s)  # average ranks for ties
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2  # Mann–Whitney U of the anomalies
    return float(u / (n_pos * n_neg))


def auroc_reference(scores: Any, labels: Any) -> float:
    """Slow twin of :func:`auroc`: compare every (anomaly, normal) pair."""
    s, y = _inputs(scores, labels)
    pos, neg = s[y == 1], s[y == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


# --------------------------------------------------------------------------------------------------------------
# AUPRC (average precision)
# --------------------------------------------------------------------------------------------------------------


def auprc(scores: Any, labels: Any) -> float:
    """Area under the precision–recall curve as average precision (step-wise, no interpolation).

    Points with equal scores are one threshold: they enter the flagged set together.

    Args:
        scores: ``[N]`` anomaly scores (higher = more anomalous).
        labels: ``[N]`` 1 for anomalies, 0 for normal points.

    Returns:
        Average precision in [0, 1]; a random score gives about the anomaly rate.
    """
    s, y = _inputs(scores, labels)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp = np.cumsum(y)  # true positives when flagging the top i+1 points
    flagged = np.arange(1, len(y) + 1)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last index of each group of equal scores
    precision = tp[last] / flagged[last]
    recall = tp[last] / tp[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def auprc_reference(scores: Any, labels: Any) -> float:
    """Slow twin of :func:`auprc`: a loop over the distinct thresholds, high to low."""
    s, y = _inputs(scores, labels)
    total, prev_recall = 0.0, 0.0
    for t in sorted(set(s.tolist()), reverse=True):
        flagged = s >= t
        tp = int((y[flagged] == 1).sum())
        precision, recall = tp / int(flagged.sum()), tp / int(y.sum())
        total += (recall - prev_recall) * precision
        prev_recall = recall
    return total


# --------------------------------------------------------------------------------------------------------------
# Threshold at a percentile
# --------------------------------------------------------------------------------------------------------------


def f1_at_percentile(scores: Any, labels: Any, percentile: float = 80.0) -> dict[str, float]:
    """Flag the points scoring above the ``percentile``-th percentile of all scores; precision, recall and F1.

    MEG's KDD99 protocol uses 80 (the top 20% are anomalies); for a set with a known anomaly rate r use
    100 · (1 − r).

    Returns:
        ``{"precision", "recall", "f1", "threshold", "flagged"}`` (``flagged`` = share of points flagged).
    """
    s, y = _inputs(scores, labels)
    if not 0.0 <= percentile < 100.0:
        raise ValueError(f"percentile must be in [0, 100), got {percentile}")
    threshold = float(np.percentile(s, percentile))
    pred = s > threshold
    tp = int((pred & (y == 1)).sum())
    precision = tp / int(pred.sum()) if pred.any() else 0.0
    recall = tp / int(y.sum())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "threshold": threshold, "flagged": float(pred.mean())}


def anomaly_scores(scores: Any, labels: Any, percentile: float = 80.0) -> dict[str, float]:
    """AUPRC, AUROC and the F1 at ``percentile``, with the anomaly rate (the AUPRC of a random score)."""
    s, y = _inputs(scores, labels)
    at = f1_at_percentile(s, y, percentile)
    return {"auprc": auprc(s, y), "auroc": auroc(s, y), "precision": at["precision"], "recall": at["recall"],
            "f1": at["f1"], "percentile": percentile, "anomaly_rate": float(y.mean()), "num_points": len(y)}


# --------------------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------------------


def held_out_digit_split(train_images: np.ndarray, train_labels: np.ndarray, test_images: np.ndarray,
                         test_labels: np.ndarray, digit: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNIST anomaly split: train on every digit but ``digit``; in the test set, ``digit`` is the anomaly class.

    Returns:
        ``(train_images_without_digit, test_images, test_is_anomaly)``, the last int64 ``[N_test]`` in {0, 1}.
    """
    if not (isinstance(digit, int | np.integer) and 0 <= digit <= 9):
        raise ValueError(f"digit must be an int in 0..9, got {digit!r}")
    keep = np.asarray(train_labels) != digit
    return np.asarray(train_images)[keep], np.asarray(test_images), (np.asarray(test_labels) == digit).astype(np.int64)


def pooled_held_out_digit_split(images: np.ndarray, labels: np.ndarray, digit: int, seed: int = 42,
                                train_fraction: float = 0.8) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The paper's MNIST anomaly split (Zenati et al. 2018, used by MEG): pool every image, hold one digit out.

    The normal images (every digit but ``digit``) are shuffled; the first ``floor(train_fraction * n_normal)`` are
    the training set, the rest of the normals plus *every* image of ``digit`` are the test set (shuffled). On the
    70,000 MNIST images this puts 33-39% anomalies in the test set (the AUPRC of a random score), against 10% for
    the MNIST test set alone (:func:`held_out_digit_split`), so the two protocols' AUPRCs are not comparable.

    Args:
        images: ``[N, ...]`` the pooled images (MNIST: train and test, 70,000).
        labels: ``[N]`` their digits.
        digit: the anomaly class, 0..9.
        seed: seed of the local generator for both shuffles.
        train_fraction: share of the normal images trained on (0.8).

    Returns:
        ``(train_images, test_images, test_is_anomaly)``: the training normals ``[N_train, ...]``, the test images
        ``[N_test, ...]`` and int64 ``[N_test]`` in {0, 1}.
    """
    if not (isinstance(digit, int | np.integer) and 0 <= digit <= 9):
        raise ValueError(f"digit must be an int in 0..9, got {digit!r}")
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    images, labels = np.asarray(images), np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
    rng = np.random.default_rng(seed)
    normal = rng.permutation(np.flatnonzero(labels != digit))
    cut = math.floor(train_fraction * len(normal))
    test = rng.permutation(np.r_[normal[cut:], np.flatnonzero(labels == digit)])
    return images[normal[:cut]], images[test], (labels[test] == digit).astype(np.int64)


def shuttle_split(features: np.ndarray, labels: np.ndarray, seed: int = 0,
                  train_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The KDD99-style protocol on Shuttle: a random half to train on (its normal points only), the rest to test.

    Returns:
        ``(train_normal_features, test_features, test_labels)``.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(features))
    cut = math.floor(train_fraction * len(features))
    train, test = perm[:cut], perm[cut:]
    return features[train][labels[train] == 0], features[test], labels[test]
