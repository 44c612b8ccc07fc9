"""Seeded synthetic sets: determinism, geometry of the mixtures, StackedMNIST labels."""

import numpy as np
import pytest

from kexue.data import gaussian_mixture_2d, mixture_centres, stacked_mnist, swiss_roll_2d


@pytest.mark.parametrize("kind", ["8", "25"])
def test_mixture_is_deterministic_per_seed(kind):
    a, la, _ = gaussian_mixture_2d(500, kind, seed=3)
    b, lb, _ = gaussian_mixture_2d(500, kind, seed=3)
    c, _, _ = gaussian_mixture_2d(500, kind, seed=4)
    assert a.dtype == np.float32 and a.shape == (500, 2)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a, c)


def test_mixture_does_not_touch_global_state():
    np.random.seed(0)
    expected = np.random.rand()
    np.random.seed(0)
    gaussian_mixture_2d(10, seed=1)
    assert np.random.rand() == expected


def test_centre_conventions():
    ring = mixture_centres("8")
    np.testing.assert_allclose(np.linalg.norm(ring, axis=1), 2, rtol=1e-6)
    np.testing.assert_allclose(
        np.sort(np.arctan2(ring[:, 1], ring[:, 0]) % (2 * np.pi)), np.arange(8) * np.pi / 4, atol=1e-6
    )
    grid = mixture_centres("25")
    assert sorted(map(tuple, grid.tolist())) == [(x, y) for x in (-4, -2, 0, 2, 4) for y in (-4, -2, 0, 2, 4)]


@pytest.mark.parametrize(("kind", "std", "scale"), [("8", 0.02, 1.414), ("25", 0.05, 2.828)])
def test_points_lie_near_their_centre_with_the_right_spread(kind, std, scale):
    points, labels, centres = gaussian_mixture_2d(20_000, kind, seed=0)
    np.testing.assert_allclose(centres, mixture_centres(kind) / scale, rtol=1e-6)
    offsets = points - centres[labels]
    assert np.linalg.norm(offsets, axis=1).max() < 6 * std / scale  # P(|eps| > 6) in 2-D is e^-18
    np.testing.assert_allclose(offsets.std(axis=0), std / scale, rtol=0.05)
    counts = np.bincount(labels, minlength=len(centres))
    assert counts.min() > 0.8 * 20_000 / len(centres)  # equal weights


def test_raw_coordinates_and_bad_kind():
    points, labels, centres = gaussian_mixture_2d(100, "25", std=0.0, scale=1.0)
    np.testing.assert_array_equal(points, centres[labels])
    with pytest.raises(ValueError, match="kind"):
        gaussian_mixture_2d(10, "9")


def test_swiss_roll_without_noise_lies_on_the_spiral():
    points, t = swiss_roll_2d(1000, noise=0.0, scale=1.0, seed=0)
    assert t.min() >= 1.5 * np.pi and t.max() <= 4.5 * np.pi
    np.testing.assert_allclose(np.linalg.norm(points, axis=1), t, rtol=1e-5)
    np.testing.assert_allclose(np.arctan2(points[:, 1], points[:, 0]) % (2 * np.pi), t % (2 * np.pi), atol=1e-4)
    a, _ = swiss_roll_2d(100, seed=1)
    b, _ = swiss_roll_2d(100, seed=1)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.float32


def test_stacked_mnist_labels_are_the_digits_of_the_stacked_images():
    # Image i is filled with the value i, so each channel tells which source image was drawn.
    n_src = 200
    images = np.broadcast_to(np.arange(n_src, dtype=np.uint8)[:, None, None], (n_src, 28, 28)).copy()
    digits = np.random.default_rng(0).integers(10, size=n_src)
    stacks, modes = stacked_mnist(5000, 7, images, digits)
    assert stacks.shape == (5000, 3, 28, 28) and stacks.dtype == np.uint8 and modes.dtype == np.int64
    chosen = stacks[:, :, 0, 0].astype(np.int64)  # [n, 3] source indices
    assert (stacks == stacks[:, :, :1, :1]).all()  # whole channels come from one image
    d = digits[chosen]
    np.testing.assert_array_equal(modes, 100 * d[:, 0] + 10 * d[:, 1] + d[:, 2])
    assert len(np.unique(modes)) > 900  # close to all 1,000 modes appear
    again, _ = stacked_mnist(5000, 7, images, digits)
    np.testing.assert_array_equal(stacks, again)
    four, modes4 = stacked_mnist(10, 1, images, digits, channels=4)
    d4 = digits[four[:, :, 0, 0].astype(np.int64)]
    np.testing.assert_array_equal(modes4, d4 @ np.array([1000, 100, 10, 1]))


def test_toy_sets_are_the_conventional_draws_and_their_std():
    from kexue.data.synthetic import toy_2d, toy_std

    points, centres = toy_2d("25gaussians", 100, seed=3)
    ref, _, ref_centres = gaussian_mixture_2d(100, "25", seed=3)
    np.testing.assert_array_equal(points, ref)
    np.testing.assert_array_equal(centres, ref_centres)
    roll, none = toy_2d("swissroll", 50, seed=3)
    np.testing.assert_array_equal(roll, swiss_roll_2d(50, seed=3)[0])
    assert none is None
    assert toy_std("8gaussians") == 0.02 / 1.414 and toy_std("25gaussians") == 0.05 / 2.828
    assert toy_std("swissroll") == 0.25 / 7.5
    with pytest.raises(ValueError, match="toy set"):
        toy_2d("moons", 10)
