import itertools
import math

import pytest
import torch
from torch import nn

from kexue.ops.mcmc import (
    ReplayBuffer,
    langevin,
    log_proposal,
    mala,
    mala_reference,
    mh_log_ratio,
    potential,
    replay_langevin,
)


def quadratic(x):
    """U = ||x||^2 / 2 per sample: the standard normal."""
    return 0.5 * x.flatten(1).pow(2).sum(1)


def double_well(x):
    """U = 2 (x^2 - 1)^2 in 1-D: two modes at +-1."""
    return 2 * (x[:, 0].pow(2) - 1).pow(2)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- Langevin ---------------------------------------------------------------------------------------------------


def test_langevin_samples_the_standard_normal():
    # Started far away (x = 3), small step: mean -> 0, variance -> 1/(1 - step/2) ~ 1.
    x0 = torch.full((4000, 2), 3.0)
    x = langevin(quadratic, x0, step=0.02, n_steps=500, generator=_gen())
    assert x.mean(0).abs().max().item() < 0.06
    assert x.var(0).sub(1.0).abs().max().item() < 0.07


def test_langevin_bias_is_the_closed_form_and_temperature_scales_the_variance():
    # x' = (1 - a/T) x + sqrt(2a) xi has stationary variance 2a / (1 - (1 - a/T)^2); at a = 0.5, T = 1 that is 4/3.
    x = langevin(quadratic, torch.zeros(8000, 1), step=0.5, n_steps=100, generator=_gen(1))
    assert x.var().item() == pytest.approx(4 / 3, rel=0.05)
    hot = langevin(quadratic, torch.zeros(8000, 1), step=0.02, n_steps=400, temperature=3.0, generator=_gen(2))
    assert hot.var().item() == pytest.approx(3.0 / (1 - 0.01 / 3), rel=0.06)


def test_langevin_bounds_and_trace():
    x, log = langevin(quadratic, torch.full((16, 3), 5.0), step=0.1, n_steps=7, bounds=(-1.0, 1.0),
                      generator=_gen(), trace=True, log=True)
    assert x.abs().max() <= 1.0
    assert log["trace"].shape == (8, 16, 3) and log["energy"].shape == (8,)
    assert log["trace"][0].max() == 1.0  # clamped from the start


# --- MALA -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("step", [0.8, 1.5])
def test_mala_is_exact_for_a_gaussian_even_with_a_large_step(step):
    # Unadjusted Langevin at these steps has variance 1/(1 - step/2) = 1.67 and 4; MALA keeps N(0, 1).
    x0 = 3 * torch.randn(6000, 1, generator=_gen(3))
    x = mala(quadratic, x0, step=step, n_steps=150, generator=_gen(4))
    assert abs(x.mean().item()) < 0.05
    assert x.var().item() == pytest.approx(1.0, abs=0.06)
    assert x.pow(4).mean().item() == pytest.approx(3.0, abs=0.3)  # fourth moment of N(0, 1)


def test_mala_matches_quadrature_on_a_double_well():
    grid = torch.linspace(-3, 3, 20001, dtype=torch.float64)
    w = torch.exp(-double_well(grid[:, None]))
    second = ((grid**2) * w).sum() / w.sum()  # E[x^2] under exp(-U)
    # Started near the wells: from far out in the quartic tails (|x| > 2) the drift overshoots so far that MALA
    # rejects nearly every proposal (its known weakness with super-linear gradients) and those chains stay put.
    x0 = 0.5 * torch.randn(4000, 1, generator=_gen(5))
    x = mala(double_well, x0, step=0.1, n_steps=300, generator=_gen(6))
    assert x.pow(2).mean().item() == pytest.approx(second.item(), abs=0.03)
    assert (x > 0).double().mean().item() == pytest.approx(0.5, abs=0.04)  # both wells visited


@pytest.mark.parametrize("correction", ["mh", "energy"])
def test_mh_ratio_needs_the_proposal_term(correction):
    # At step 1 the proposal is x' = sqrt(2) xi, independent of x. With the energy ratio only, detailed balance
    # holds for pi * q = N(0, 1) N(0, 2), variance 2/3, not for pi: the uncorrected sampler fails this check.
    x0 = torch.randn(8000, 1, generator=_gen(7))
    x = mala(quadratic, x0, step=1.0, n_steps=60, correction=correction, generator=_gen(8))
    if correction == "mh":
        assert x.var().item() == pytest.approx(1.0, abs=0.05)
    else:
        assert x.var().item() == pytest.approx(2 / 3, abs=0.05)
        assert abs(x.var().item() - 1.0) > 0.25


def test_acceptance_falls_as_the_step_grows():
    x0 = torch.randn(2000, 10, generator=_gen(9))
    rates = []
    for step in (0.05, 0.3, 0.8, 1.5, 1.9):
        _, log = mala(quadratic, x0, step=step, n_steps=20, generator=_gen(10), log=True)
        rates.append(log["accept_rate"].mean().item())
    assert all(a > b for a, b in itertools.pairwise(rates)), rates
    assert rates[0] > 0.97 and rates[-1] < 0.2


def test_mh_log_ratio_matches_normalised_gaussian_densities():
    x, x_new = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    v, grad, _ = potential(double_well, x)
    v_new, grad_new, _ = potential(double_well, x_new)
    step = 0.37
    sd = math.sqrt(2 * step)
    fwd = torch.distributions.Normal(x - step * grad, sd).log_prob(x_new).sum(1)
    bwd = torch.distributions.Normal(x_new - step * grad_new, sd).log_prob(x).sum(1)
    expected = v - v_new + bwd - fwd
    assert torch.allclose(mh_log_ratio(v, v_new, x, x_new, grad, grad_new, step), expected, atol=1e-12)
    assert torch.allclose(mh_log_ratio(v, v_new, x, x_new, grad, grad_new, step, "energy"), v - v_new)
    # the proposal density is not symmetric when the gradient varies: the correction is not a no-op
    assert not torch.allclose(log_proposal(x, x_new, grad_new, step), log_proposal(x_new, x, grad, step))


@pytest.mark.parametrize("correction", ["mh", "energy"])
def test_mala_equals_its_per_chain_reference(correction):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).double()

    def energy(x):
        return net(x).squeeze(-1) + 0.1 * x.pow(2).sum(1)

    x0 = torch.randn(6, 2, dtype=torch.float64)
    fast = mala(energy, x0, step=0.3, n_steps=15, temperature=0.7, prior=True, correction=correction,
                generator=_gen(11))
    slow = mala_reference(energy, x0, step=0.3, n_steps=15, temperature=0.7, prior=True, correction=correction,
                          generator=_gen(11))
    assert torch.allclose(fast, slow, atol=1e-10)
    assert not torch.allclose(fast, x0)  # the chains moved


def test_temperature_and_prior_define_the_target():
    # V = U / T + ||x||^2/2 [prior] for U = ||x||^2/2: variance T at temperature T, T/(1+T) with the prior.
    x0 = torch.randn(6000, 2, generator=_gen(12))
    hot = mala(quadratic, x0, step=0.5, n_steps=100, temperature=4.0, generator=_gen(13))
    assert hot.var(0).mean().item() == pytest.approx(4.0, rel=0.06)
    with_prior = mala(quadratic, x0, step=0.5, n_steps=100, temperature=4.0, prior=True, generator=_gen(14))
    assert with_prior.var(0).mean().item() == pytest.approx(0.8, rel=0.06)


def test_mala_through_a_generator_samples_the_latent_posterior():
    # U(G(z)) = ||A z + b - m||^2 / 2 with a linear G: the target is N(A^-1 (m - b), (A^T A)^-1).
    torch.manual_seed(1)
    g = nn.Linear(2, 2).double()
    with torch.no_grad():
        g.weight.copy_(torch.tensor([[1.5, 0.3], [-0.4, 0.8]]))
    m = torch.tensor([0.5, -1.0], dtype=torch.float64)

    def latent_energy(z):
        return 0.5 * (g(z) - m).pow(2).sum(1)

    a, b = g.weight.detach(), g.bias.detach()
    mean = torch.linalg.solve(a, m - b)
    cov = torch.linalg.inv(a.T @ a)
    z = mala(latent_energy, torch.randn(6000, 2, dtype=torch.float64, generator=_gen(15)), step=0.3, n_steps=150,
             generator=_gen(16))
    assert torch.allclose(z.mean(0), mean, atol=0.05)
    assert torch.allclose(torch.cov(z.T), cov, atol=0.06)


def test_step_adaptation_reaches_the_target_rate_then_freezes():
    x0 = torch.randn(500, 20, generator=_gen(17))
    _, log = mala(quadratic, x0, step=1e-3, n_steps=300, target_accept=0.574, adapt_steps=200, adapt_rate=0.1,
                  generator=_gen(18), log=True)
    steps = log["step"]
    assert steps[200:].unique().numel() == 1 and steps[-1].item() == pytest.approx(log["final_step"])
    assert steps[-1].item() > 0.1  # grew from 1e-3
    assert log["accept_rate"][200:].mean().item() == pytest.approx(0.574, abs=0.06)
    assert log["accepted"].shape == (500,) and log["energy"].shape == (301,)


def test_mala_works_on_image_shaped_states_and_rejects_nonfinite_proposals():
    def energy(x):  # +inf outside the unit ball: those proposals must be rejected, not accepted
        u = quadratic(x)
        return torch.where(x.flatten(1).norm(dim=1) < 1.5, u, torch.full_like(u, math.inf))

    x, log = mala(energy, 0.1 * torch.randn(64, 1, 2, 2), step=0.5, n_steps=30, generator=_gen(), log=True,
                  trace=True)
    assert x.shape == (64, 1, 2, 2) and x.flatten(1).norm(dim=1).max() < 1.5
    assert log["nonfinite"] > 0 and log["trace"].shape == (31, 64, 1, 2, 2)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"step": 0.0}, "step"),
    ({"step": float("nan")}, "step"),
    ({"n_steps": -1}, "n_steps"),
    ({"temperature": 0.0}, "temperature"),
    ({"correction": "metropolis"}, "correction"),
    ({"target_accept": 1.5}, "target_accept"),
    ({"adapt_steps": 5}, "target_accept"),
    ({"target_accept": 0.5, "adapt_steps": 99}, "adapt_steps"),
])
def test_mala_rejects_bad_arguments(kwargs, match):
    args = {"step": 0.1, "n_steps": 10, **kwargs}
    with pytest.raises(ValueError, match=match):
        mala(quadratic, torch.zeros(4, 2), **args)


def test_samplers_reject_bad_states_and_energies():
    with pytest.raises(ValueError, match="x0"):
        langevin(quadratic, torch.zeros(0, 2), step=0.1, n_steps=1)
    with pytest.raises(ValueError, match="x0"):
        mala(quadratic, torch.zeros(3, 2, dtype=torch.long), step=0.1, n_steps=1)
    with pytest.raises(ValueError, match="one value per chain"):
        mala(lambda x: x.sum(), torch.zeros(3, 2), step=0.1, n_steps=1)
    with pytest.raises(ValueError, match="noise_scale"):
        langevin(quadratic, torch.zeros(3, 2), step=0.1, n_steps=1, noise_scale=-1.0)
    with pytest.raises(ValueError, match="bounds"):
        langevin(quadratic, torch.zeros(3, 2), step=0.1, n_steps=1, bounds=(1.0, -1.0))


# --- replay buffer ----------------------------------------------------------------------------------------------


def test_replay_buffer_draws_noise_until_filled_then_mostly_stored_samples():
    buf = ReplayBuffer(100, (2,), low=-1.0, high=1.0, reinit_prob=0.05, generator=_gen())
    x, fresh = buf.sample(50)
    assert fresh.all() and x.min() >= -1 and x.max() <= 1 and len(buf) == 0
    buf.push(torch.full((100, 2), 7.0))
    x, fresh = buf.sample(20000)
    assert fresh.double().mean().item() == pytest.approx(0.05, abs=0.01)
    assert (x[~fresh] == 7.0).all() and (x[fresh].abs() <= 1).all()


def test_replay_buffer_is_fifo():
    buf = ReplayBuffer(4, (1,))
    buf.push(torch.arange(3.0)[:, None])
    buf.push(torch.arange(3.0, 6.0)[:, None])  # 0, 1 are overwritten
    assert len(buf) == 4 and sorted(buf.data[:, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]
    buf.push(torch.arange(10.0, 16.0)[:, None])  # more than the capacity: the newest four stay
    assert sorted(buf.data[:, 0].tolist()) == [12.0, 13.0, 14.0, 15.0]
    with pytest.raises(ValueError, match="shape"):
        buf.push(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(0, (1,))
    with pytest.raises(ValueError, match="reinit_prob"):
        ReplayBuffer(3, (1,), reinit_prob=1.5)


def test_replay_langevin_moves_towards_low_energy_and_refills_the_buffer():
    buf = ReplayBuffer(256, (2,), low=-2.0, high=2.0, generator=_gen(19))
    for _ in range(10):
        x = replay_langevin(quadratic, buf, 128, step=0.01, n_steps=20, noise_scale=0.0)
    assert len(buf) == 256 and x.abs().max() <= 2.0
    assert quadratic(buf.data).mean() < quadratic(buf.noise(256)).mean() / 2  # persistent chains went downhill
