"""Importance-weighted NLL on a linear-Gaussian latent model, whose marginal log-likelihood is known exactly.

Model: z ~ N(0, I_d), x | z ~ N(W z + b, s² I_D), so x ~ N(b, W Wᵀ + s² I) and the posterior is Gaussian with
covariance (I + WᵀW / s²)⁻¹ and mean that covariance times Wᵀ(x − b) / s².
"""

import itertools
import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from kexue.eval import likelihood as L

D, d, S = 6, 2, 0.5


@pytest.fixture(scope="module")
def model():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(D, d, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    marginal = MultivariateNormal(b, w @ w.T + S**2 * torch.eye(D, dtype=torch.float64))
    x = marginal.sample((400,))
    post_cov = torch.linalg.inv(torch.eye(d, dtype=torch.float64) + w.T @ w / S**2)
    return w, b, marginal, x, post_cov


def _log_weights(model, widen: float, generator: torch.Generator, record: list | None = None):
    """Sampler for q(z|x) = N(posterior mean, widen² · posterior covariance); widen = 1 is the exact posterior."""
    w, b, _, _, post_cov = model
    chol = torch.linalg.cholesky(post_cov) * widen

    def log_weights(x: torch.Tensor, k: int):
        mean = (x - b) @ w @ post_cov.T / S**2  # [B, d]
        eps = torch.randn(k, len(x), d, generator=generator, dtype=torch.float64)
        z = mean + eps @ chol.T  # [k, B, d]
        log_q = MultivariateNormal(mean, scale_tril=chol).log_prob(z)  # [k, B]
        log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
        log_px = Normal(z @ w.T + b, S).log_prob(x).sum(-1)
        if record is not None:
            record.append((log_px, log_pz, log_q))
        return log_px, log_pz, log_q

    return log_weights


def test_exact_posterior_gives_the_exact_log_likelihood_for_any_k(model):
    _, _, marginal, x, _ = model
    exact = marginal.log_prob(x)
    fn = _log_weights(model, 1.0, torch.Generator().manual_seed(1))
    for k in (1, 7):
        est = L.iw_log_likelihood_chunked(fn, x, num_samples=k, chunk_size=3)
        torch.testing.assert_close(est, exact, rtol=0, atol=1e-9)


def test_iw_bound_matches_exact_within_monte_carlo_error_and_tightens_with_k(model):
    _, _, marginal, x, _ = model
    exact = marginal.log_prob(x)
    gaps, sems = [], []
    for k in (1, 10, 100, 1000):
        fn = _log_weights(model, 2.0, torch.Generator().manual_seed(k))  # a q twice too wide: a loose bound
        gap = exact - L.iw_log_likelihood_chunked(fn, x, num_samples=k, chunk_size=250)
        gaps.append(gap.mean().item())
        sems.append(gap.std().item() / math.sqrt(len(gap)))
    assert all(a > b for a, b in itertools.pairwise(gaps)), gaps  # E[L_K] increases with K
    assert gaps[0] > 0.3  # the ELBO with this q is clearly below log p(x)
    assert abs(gaps[-1]) < 0.02 + 4 * sems[-1]  # K = 1000 is within Monte-Carlo error of the truth


def test_chunked_estimate_equals_one_shot_on_the_same_samples(model):
    _, _, _, x, _ = model
    record = []
    fn = _log_weights(model, 1.5, torch.Generator().manual_seed(3), record)
    chunked = L.iw_log_likelihood_chunked(fn, x[:50], num_samples=23, chunk_size=5)
    assert [t[0].shape[0] for t in record] == [5, 5, 5, 5, 3]
    stacked = [torch.cat([r[i] for r in record]) for i in range(3)]  # [23, 50] each
    torch.testing.assert_close(chunked, L.iw_log_likelihood(*stacked), rtol=0, atol=1e-10)


def test_importance_weighted_nll_over_a_data_set(model):
    _, _, marginal, x, _ = model
    fn = _log_weights(model, 1.0, torch.Generator().manual_seed(4))
    out = L.importance_weighted_nll(fn, x, num_samples=4, chunk_size=2, batch_size=64, num_dims=D)
    exact_nll = -marginal.log_prob(x).mean().item()
    assert out["nll_nats"] == pytest.approx(exact_nll, abs=1e-9)
    assert out["bits_per_dim"] == pytest.approx(exact_nll / (D * math.log(2)), abs=1e-9)
    assert out["num_examples"] == len(x) and out["log_px"].shape == (len(x),)
    # An iterable of batches gives the same answer as a tensor.
    fn = _log_weights(model, 1.0, torch.Generator().manual_seed(4))
    again = L.importance_weighted_nll(fn, iter(x.split(100)), num_samples=4)
    assert again["nll_nats"] == pytest.approx(exact_nll, abs=1e-9)


def test_bits_per_dim_closed_form():
    assert L.bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="num_dims"):
        L.bits_per_dim(1.0, 0)


def test_bad_log_weight_terms():
    ok = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="same shape"):
        L.iw_log_likelihood(ok, ok, torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"\[K, B\]"):
        L.iw_log_likelihood(torch.zeros(3), torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        L.iw_log_likelihood(torch.full((3, 4), float("nan")), ok, ok)
    with pytest.raises(ValueError, match=r"expected \[2, 4\]"):
        L.iw_log_likelihood_chunked(lambda x, k: (ok, ok, ok), torch.zeros(4, 1), num_samples=2)
    with pytest.raises(ValueError, match="empty"):
        L.importance_weighted_nll(lambda x, k: (ok, ok, ok), torch.zeros(0, 1))
