import math

import pytest
import torch
from scipy import integrate

from kexue.ops.angles import angle_log_density, angle_variance, laplace_variance, random_angles

POST_TABLE = {3: 0.467401, 10: 0.110661, 20: 0.0525832, 50: 0.0204053, 100: 0.0101007, 200: 0.00502508,
              1000: 0.001001}


@pytest.mark.parametrize("n", [2, 3, 10, 100, 1000])
def test_density_integrates_to_one(n):
    total, _ = integrate.quad(lambda t: angle_log_density(torch.tensor(t, dtype=torch.float64), n).exp().item(),
                              0, math.pi, points=[math.pi / 2], limit=200)
    assert total == pytest.approx(1.0, abs=1e-8)


def test_closed_forms_small_n():
    # n = 2: theta is uniform on [0, pi]; n = 3: density sin(theta)/2, so Var = pi^2/4 - 2.
    assert angle_variance(2) == pytest.approx(math.pi**2 / 12, rel=1e-10)
    assert angle_variance(3) == pytest.approx(math.pi**2 / 4 - 2, rel=1e-10)
    theta = torch.linspace(0.1, 3.0, 7, dtype=torch.float64)
    assert torch.allclose(angle_log_density(theta, 2).exp(), torch.full_like(theta, 1 / math.pi))
    assert torch.allclose(angle_log_density(theta, 3).exp(), torch.sin(theta) / 2)


@pytest.mark.parametrize("n", sorted(POST_TABLE))
def test_exact_variance_matches_post_table(n):
    # The post prints 4-6 significant digits.
    assert angle_variance(n) == pytest.approx(POST_TABLE[n], rel=5e-4)


@pytest.mark.parametrize("n", sorted(POST_TABLE))
def test_monte_carlo_variance_within_2_percent(n):
    gen = torch.Generator().manual_seed(n)
    theta = random_angles(n, 100_000, generator=gen)
    assert theta.var().item() == pytest.approx(POST_TABLE[n], rel=0.02)
    assert theta.mean().item() == pytest.approx(math.pi / 2, abs=5 * math.sqrt(POST_TABLE[n] / 100_000))


def test_cosine_is_uniform_in_three_dimensions():
    cos = torch.cos(random_angles(3, 50_000, generator=torch.Generator().manual_seed(1)))
    counts = torch.histc(cos.float(), bins=10, min=-1, max=1)
    # Each bin holds 5000 +- sqrt(4500) ~ 67; 6 standard deviations is a generous bound.
    assert (counts - 5000).abs().max() < 400


def test_laplace_approximation_improves_with_n():
    errors = [abs(laplace_variance(n) - angle_variance(n)) / angle_variance(n) for n in (10, 100, 1000)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 2e-3


def test_seeded_and_chunked_sampling():
    a = random_angles(50, 1000, generator=torch.Generator().manual_seed(0))
    b = random_angles(50, 1000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == (1000,) and a.dtype == torch.float64
    # A tiny chunk (one pair per draw) changes the stream but not the law.
    small = random_angles(50, 20_000, generator=torch.Generator().manual_seed(0), chunk=1)
    assert small.var().item() == pytest.approx(POST_TABLE[50], rel=0.05)


@pytest.mark.parametrize("bad", [1, 0, 2.5, "3"])
def test_bad_dimension(bad):
    with pytest.raises(ValueError, match="n"):
        angle_variance(bad)
    with pytest.raises(ValueError, match="n"):
        random_angles(bad, 10)


def test_bad_pairs():
    with pytest.raises(ValueError, match="pairs"):
        random_angles(3, 0)
