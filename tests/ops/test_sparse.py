"""k-WTA, code similarities and random binarisers (kexue.ops.sparse)."""

import math

import pytest
import torch

from kexue.ops.sparse import (
    code_indices,
    flyhash,
    flyhash_projection,
    hamming,
    index_bits,
    jaccard,
    kwta,
    kwta_reference,
    overlap,
    pairwise_overlap,
    pairwise_overlap_reference,
    simhash,
    simhash_projection,
)


@pytest.mark.parametrize("k", [1, 7, 50, 64])
def test_kwta_has_exactly_k_ones_at_the_largest_values(k):
    h = torch.randn(30, 64)
    codes = kwta(h, k)
    assert codes.dtype == torch.bool and codes.shape == h.shape
    assert (codes.sum(-1) == k).all()
    # every winner beats every loser
    lowest_on = torch.where(codes, h, torch.inf).min(-1).values
    highest_off = torch.where(codes, -torch.inf, h).max(-1).values
    assert (lowest_on > highest_off).all()


def test_kwta_matches_midpoint_threshold_reference_without_ties():
    h = torch.randn(4, 5, 40, dtype=torch.float64)
    for k in (1, 3, 20, 39, 40):
        assert torch.equal(kwta(h, k), kwta_reference(h, k))


def test_kwta_is_invariant_to_increasing_maps():
    h = torch.randn(10, 33)
    codes = kwta(h, 5)
    assert torch.equal(kwta(3 * h + 7, 5), codes)
    assert torch.equal(kwta(torch.exp(h), 5), codes)
    assert torch.equal(kwta(-h, 5), kwta(h.neg(), 5))


def test_kwta_ties_still_give_exactly_k():
    h = torch.zeros(3, 10)
    assert (kwta(h, 4).sum(-1) == 4).all()
    assert (kwta_reference(h, 4).sum(-1) == 0).all()  # the threshold rule keeps no tie: why kwta uses topk


@pytest.mark.parametrize("k", [0, 11, 2.0, True])
def test_kwta_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k must be an int"):
        kwta(torch.randn(2, 10), k)


def test_overlap_jaccard_hamming_identities():
    k, n_units = 8, 50
    a, b = kwta(torch.randn(100, n_units), k), kwta(torch.randn(100, n_units), k)
    o = overlap(a, b)
    assert torch.equal(hamming(a, b), 2 * (k - o))
    assert torch.allclose(jaccard(a, b), o / (2 * k - o))
    assert (overlap(a, a) == k).all() and (hamming(a, a) == 0).all() and torch.allclose(jaccard(a, a), torch.ones(100))


def test_pairwise_overlap_matches_set_reference():
    a, b = kwta(torch.randn(13, 40), 6), kwta(torch.randn(9, 40), 6)
    fast = pairwise_overlap(a, b)
    assert torch.equal(fast, pairwise_overlap_reference(a, b))
    assert torch.equal(fast[2, 3], overlap(a[2], b[3]))


def test_code_indices_and_index_bits():
    codes = kwta(torch.randn(5, 400), 50)
    idx = code_indices(codes)
    assert idx.shape == (5, 50)
    assert (idx[:, 1:] > idx[:, :-1]).all()
    rebuilt = torch.zeros_like(codes).scatter_(1, idx, True)
    assert torch.equal(rebuilt, codes)
    assert index_bits(400, 50) == 50 * 9  # 400 units need 9 bits per index
    with pytest.raises(ValueError, match="same number of ones"):
        code_indices(torch.tensor([[True, False], [True, True]]))


def test_code_types_are_checked():
    with pytest.raises(TypeError, match="bool"):
        overlap(torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="same length"):
        overlap(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))


def test_flyhash_projection_is_sparse_binary_and_hash_is_k_hot():
    gen = torch.Generator().manual_seed(0)
    proj = flyhash_projection(20, 300, 4, generator=gen)
    assert proj.shape == (20, 300)
    assert set(proj.unique().tolist()) <= {0.0, 1.0}
    assert (proj.sum(0) == 4).all()
    codes = flyhash(torch.randn(7, 20), proj, 10)
    assert (codes.sum(-1) == 10).all()
    with pytest.raises(ValueError, match="n_inputs"):
        flyhash_projection(5, 10, 6)


def test_flyhash_preserves_neighbourhoods_better_than_chance():
    """Close inputs share more winners than far ones (the locality that makes FlyHash a hash)."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, 30, generator=gen)
    near = x + 0.1 * torch.randn(200, 30, generator=gen)
    far = torch.randn(200, 30, generator=gen)
    proj = flyhash_projection(30, 500, 5, generator=gen)
    k = 25
    cx = flyhash(x, proj, k)
    o_near = overlap(cx, flyhash(near, proj, k)).float().mean()
    o_far = overlap(cx, flyhash(far, proj, k)).float().mean()
    assert o_near > 0.6 * k
    assert o_far < 0.25 * k  # chance level is k^2 / K = 1.25


def test_simhash_bit_disagreement_is_angle_over_pi():
    """Pr[bit differs] = theta / pi for sign random projections (Charikar), at several angles."""
    gen = torch.Generator().manual_seed(2)
    d, n_bits = 16, 200_000
    proj = simhash_projection(d, n_bits, generator=gen)
    x = torch.zeros(d)
    x[0] = 1.0
    for theta in (0.3, 1.0, math.pi / 2, 2.5):
        y = torch.zeros(d)
        y[0], y[1] = math.cos(theta), math.sin(theta)
        diff = hamming(simhash(x, proj), simhash(y, proj)).item() / n_bits
        assert abs(diff - theta / math.pi) < 4 * math.sqrt(0.25 / n_bits) + 1e-3
    codes = simhash(torch.randn(50, d, generator=gen), proj[:, :1000])
    assert abs(codes.float().mean().item() - 0.5) < 0.02  # about half the bits on: "dense" binary codes
