import math

import pytest
import torch
from torch import nn

from kexue.data import gaussian_mixture_2d
from kexue.losses.energy import (
    energy_loss,
    gaussian_log_likelihood,
    hinge_energy_loss,
    igebm_loss,
    infogan_mutual_information,
    jsd_bce_loss,
    jsd_mutual_information,
    jsd_mutual_information_reference,
    margin_energy_loss,
    meg_energy_loss,
    meg_generator_loss,
    mutual_information,
    per_position_weight,
    score_penalty,
    score_penalty_channelwise,
    shuffled,
    standard_normal_entropy,
    statistics_mutual_information,
)
from kexue.losses.gan import gradient_norms
from kexue.models.energy import MLPEncoder, MLPStatistics
from kexue.models.gan import MLPCritic


class LinearEnergy(nn.Module):
    """U(x) = <w, x> over all coordinates of a sample: gradient w everywhere."""

    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1)


# --- the maximum-likelihood identity ------------------------------------------------------------------------------


def test_positive_negative_phase_identity_on_a_grid():
    # q_theta(x) = exp(-U_theta(x)) / Z on a 1-D grid, so Z is exact. NLL = E_p U + log Z has gradient
    # E_p grad U - E_q grad U (post 6331): autograd of the exact NLL must equal the two phases.
    torch.manual_seed(0)
    u_net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    grid = torch.linspace(-3, 3, 401, dtype=torch.float64)[:, None]
    data_w = torch.exp(-0.5 * (grid[:, 0] - 1) ** 2 / 0.3)  # the data law p on the grid
    p = data_w / data_w.sum()

    def energies():
        return u_net(grid).squeeze(-1)

    params = list(u_net.parameters())
    u = energies()
    nll = (p * u).sum() + torch.logsumexp(-u, 0)
    g_nll = torch.autograd.grad(nll, params)
    q = torch.softmax(-u.detach(), 0)
    pos = torch.autograd.grad((p * energies()).sum(), params)
    neg = torch.autograd.grad((q * energies()).sum(), params)
    for a, b, c in zip(g_nll, pos, neg, strict=True):
        assert torch.allclose(a, b - c, atol=1e-12)
    # energy_loss with samples from p and from q_theta is an unbiased estimate of the same gradient
    gen = torch.Generator().manual_seed(1)
    real = grid[torch.multinomial(p, 200000, replacement=True, generator=gen)]
    fake = grid[torch.multinomial(q, 200000, replacement=True, generator=gen)]
    g_mc = torch.autograd.grad(energy_loss(u_net(real), u_net(fake)), params)
    flat = torch.cat([g.flatten() for g in g_nll])
    flat_mc = torch.cat([g.flatten() for g in g_mc])
    assert (flat_mc - flat).norm() < 0.05 * flat.norm()


# --- the score penalty ------------------------------------------------------------------------------------------------


def test_score_penalty_is_the_per_sample_squared_norm_over_all_dims():
    w = torch.randn(3, 4, 5)
    energy = LinearEnergy(w)
    x = torch.randn(7, 3, 4, 5)
    full = score_penalty(energy, x)
    assert full.item() == pytest.approx(w.pow(2).sum().item(), rel=1e-6)
    # the official code's per-channel norm is the full one divided by H*W (and equal on flat inputs)
    assert score_penalty_channelwise(energy, x).item() == pytest.approx(full.item() / 20, rel=1e-6)
    flat = LinearEnergy(torch.randn(6))
    z = torch.randn(9, 6)
    assert score_penalty_channelwise(flat, z).item() == pytest.approx(score_penalty(flat, z).item(), rel=1e-6)


def test_official_lambda_translates_to_the_same_loss_and_gradients():
    # a nonlinear conv energy on StackedMNIST-shaped data: lam on the official per-position scale, converted by
    # per_position_weight, gives the official penalty term and its parameter gradients
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 5, 2, 2), nn.LeakyReLU(0.2), nn.Flatten(), nn.Linear(4 * 14 * 14, 1))
    energy = lambda x: net(x).squeeze(-1)  # noqa: E731
    x = torch.randn(5, 3, 28, 28)
    weight = per_position_weight(10.0, x.shape)
    assert weight == pytest.approx(10 / 784)
    ours = weight * score_penalty(energy, x)
    official = 10.0 * score_penalty_channelwise(energy, x)
    assert ours.item() == pytest.approx(official.item(), rel=1e-5)
    params = list(net.parameters())[:-1]  # the last bias does not change the score
    g_ours = torch.autograd.grad(ours, params)
    g_official = torch.autograd.grad(official, params)
    for a, b in zip(g_ours, g_official, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    assert per_position_weight(0.1, (7, 2)) == 0.1  # vectors: one position, lambda unchanged
    with pytest.raises(ValueError, match="lam"):
        per_position_weight(-1.0, x.shape)


def test_score_penalty_is_differentiable_in_the_energy_parameters():
    w = torch.randn(5, requires_grad=True)
    penalty = score_penalty(LinearEnergy(w), torch.randn(4, 5))
    (grad,) = torch.autograd.grad(penalty, w)
    assert torch.allclose(grad, 2 * w.detach())  # d||w||^2/dw


def test_real_data_penalty_drives_real_gradients_down():
    # Energy training on 8 Gaussians against a fixed broad "generator": with the zero-centred real-data penalty the
    # real points become pit bottoms (small ||grad U||); without it the energy keeps steepening there.
    real_all, _, _ = gaussian_mixture_2d(4096, "8", seed=0)
    real_all = torch.from_numpy(real_all)

    def train(lam):
        torch.manual_seed(0)
        energy = MLPCritic(2, width=64, depth=2)
        opt = torch.optim.Adam(energy.parameters(), lr=1e-3, betas=(0.5, 0.9))
        probe = real_all[:512]
        start = gradient_norms(energy, probe, create_graph=False).mean().item()
        for i in range(150):
            real = real_all[(i * 128) % 4096:(i * 128) % 4096 + 128]
            fake = 1.5 * torch.randn(128, 2)
            loss, _ = meg_energy_loss(energy, real, fake, lam=lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return start, gradient_norms(energy, probe, create_graph=False).mean().item()

    start, with_penalty = train(lam=1.0)
    _, without = train(lam=0.0)
    assert with_penalty < 0.6 * start  # down from the initial slope
    assert without > 5 * start  # unpenalised, the slope at the data keeps growing
    assert with_penalty < 0.1 * without


def test_meg_energy_loss_parts():
    energy = LinearEnergy(torch.tensor([1.0, -2.0]))
    real, fake = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([[2.0, 2.0]])
    loss, parts = meg_energy_loss(energy, real, fake, lam=0.5)
    assert parts["energy_real"].item() == pytest.approx(-0.5)
    assert parts["energy_fake"].item() == pytest.approx(-2.0)
    assert parts["score_penalty"].item() == pytest.approx(5.0)
    assert loss.item() == pytest.approx(-0.5 + 2.0 + 2.5)
    with pytest.raises(ValueError, match="lam"):
        meg_energy_loss(energy, real, fake, lam=-1.0)


# --- penalty-free variants of post 6316 -------------------------------------------------------------------------


def test_hinge_and_margin_losses():
    real, fake = torch.tensor([-2.0, 0.0, 0.5]), torch.tensor([2.0, 0.5])
    assert hinge_energy_loss(real, fake).item() == pytest.approx((0 + 1 + 1.5) / 3 + (0 + 0.5) / 2)
    # satisfied margins give zero loss and zero gradient: nothing pushes the energy further
    r, f = torch.tensor([-3.0, -1.5], requires_grad=True), torch.tensor([1.2, 4.0], requires_grad=True)
    loss = hinge_energy_loss(r, f)
    loss.backward()
    assert loss.item() == 0 and r.grad.abs().sum() == 0 and f.grad.abs().sum() == 0
    assert margin_energy_loss(torch.tensor([0.5, 1.5]), torch.tensor([0.2, 3.0]), margin=1.0).item() == \
        pytest.approx(1.0 + 0.4)
    with pytest.raises(ValueError, match="non-negative"):
        margin_energy_loss(torch.tensor([-0.1]), torch.tensor([0.2]), margin=1.0)
    with pytest.raises(ValueError, match="margin"):
        hinge_energy_loss(real, fake, margin=0.0)
    with pytest.raises(ValueError, match="one value per sample"):
        energy_loss(torch.zeros(3, 2), torch.zeros(3))


def test_igebm_loss_signs():
    real, fake = torch.tensor([1.0, -1.0]), torch.tensor([2.0, 4.0])
    assert igebm_loss(real, fake, alpha=0.5).item() == pytest.approx(0 - 3 + 0.5 * (1 + 10))
    assert igebm_loss(real, fake, alpha=0.5, sign="su").item() == pytest.approx(0 - 3 + 0.5 * (1 - 10))
    # Su's minus sign: the loss keeps falling as the fake energies grow; the paper's plus sign bounds it
    big = torch.tensor([100.0, 100.0])
    assert igebm_loss(real, big, alpha=0.5, sign="su") < igebm_loss(real, fake, alpha=0.5, sign="su")
    assert igebm_loss(real, big, alpha=0.5) > igebm_loss(real, fake, alpha=0.5)
    with pytest.raises(ValueError, match="sign"):
        igebm_loss(real, fake, alpha=0.5, sign="minus")


# --- mutual information ------------------------------------------------------------------------------------------


def test_jsd_estimator_fast_reference_and_bce_forms_agree():
    tj, tm = torch.randn(64) * 3, torch.randn(64) * 3
    mi = jsd_mutual_information(tj, tm)
    assert mi.item() == pytest.approx(jsd_mutual_information_reference(tj, tm).item(), abs=1e-5)
    assert jsd_bce_loss(tj, tm).item() == pytest.approx(-0.5 * mi.item(), abs=1e-6)  # the code's 1/2
    assert jsd_mutual_information(torch.zeros(5), torch.zeros(5)).item() == pytest.approx(-2 * math.log(2))


def test_jsd_estimator_is_higher_for_dependent_than_independent_pairs():
    # With the optimal statistic T* = log p(x,z)/(p(x)p(z)) of a correlated Gaussian the estimate is
    # 2 JSD - 2 log 2: -2 log 2 for rho = 0 and above it for rho > 0; a trained T must rank the two the same way.
    def t_star(x, z, rho):
        return (-(x**2 - 2 * rho * x * z + z**2) / (2 * (1 - rho**2)) + (x**2 + z**2) / 2
                - 0.5 * math.log(1 - rho**2))

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(20000, generator=gen)
    values = {}
    for rho in (0.0, 0.5, 0.9):
        x = rho * z + math.sqrt(1 - rho**2) * torch.randn(20000, generator=gen)
        zp = shuffled(z[:, None], generator=gen)[:, 0]
        values[rho] = jsd_mutual_information(t_star(x, z, rho), t_star(x, zp, rho)).item()
    assert values[0.0] == pytest.approx(-2 * math.log(2), abs=1e-6)
    assert values[0.0] < values[0.5] - 0.05 < values[0.9] - 0.1

    def trained_estimate(dependent):
        torch.manual_seed(0)
        t_net = MLPStatistics(x_dim=2, z_dim=2, width=32, depth=2)
        opt = torch.optim.Adam(t_net.parameters(), lr=3e-3)
        for _ in range(150):
            zz = torch.randn(256, 2)
            xx = zz + 0.1 * torch.randn(256, 2) if dependent else torch.randn(256, 2)
            loss = -statistics_mutual_information(t_net, xx, zz)
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            zz = torch.randn(4096, 2)
            xx = zz + 0.1 * torch.randn(4096, 2) if dependent else torch.randn(4096, 2)
            return statistics_mutual_information(t_net, xx, zz).item()

    dep, indep = trained_estimate(True), trained_estimate(False)
    assert dep > indep + 0.5
    assert indep == pytest.approx(-2 * math.log(2), abs=0.1)


def test_shuffled_permutes_rows():
    z = torch.arange(20.0).view(10, 2)
    zp = shuffled(z, generator=torch.Generator().manual_seed(0))
    assert sorted(zp[:, 0].tolist()) == z[:, 0].tolist() and not torch.equal(zp, z)
    assert torch.equal(zp[:, 1] - zp[:, 0], torch.ones(10))  # rows move whole
    with pytest.raises(ValueError, match="at least 2"):
        shuffled(torch.zeros(1, 3))


def test_infogan_bound_is_the_gaussian_log_likelihood_up_to_a_constant():
    torch.manual_seed(0)
    encoder = MLPEncoder(x_dim=2, z_dim=3, width=16, depth=1)
    sigma = 0.7
    x, z = torch.randn(32, 2), torch.randn(32, 3)
    z_hat = encoder(x)
    expected = torch.distributions.Normal(z_hat, sigma).log_prob(z).sum(1)
    assert torch.allclose(gaussian_log_likelihood(z, z_hat, sigma), expected, atol=1e-5)
    bound = infogan_mutual_information(encoder, x, z, sigma=sigma)
    mse = (z - z_hat).pow(2).sum(1).mean()
    const = bound + mse / (2 * sigma**2)
    assert const.item() == pytest.approx(-1.5 * math.log(2 * math.pi * sigma**2) + standard_normal_entropy(3),
                                         abs=1e-5)
    # same gradient as Su's -||z - E(G(z))||^2 / (2 sigma^2): the constant carries no parameter dependence
    g_bound = torch.autograd.grad(bound, list(encoder.parameters()), retain_graph=True)
    g_mse = torch.autograd.grad(-mse / (2 * sigma**2), list(encoder.parameters()))
    for a, b in zip(g_bound, g_mse, strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # at sigma^2 = 1/2 and unit MI weight the generator term is exactly ||z - E(G(z))||^2 (Su's lambda_2 = 1)
    half = infogan_mutual_information(encoder, x, z, sigma=math.sqrt(0.5))
    assert (half + mse).item() == pytest.approx(standard_normal_entropy(3) - 1.5 * math.log(math.pi), abs=1e-5)


def test_mutual_information_dispatch_and_generator_loss():
    torch.manual_seed(0)
    t_net, enc = MLPStatistics(2, 2, width=8, depth=1), MLPEncoder(2, 2, width=8, depth=1)
    x, z = torch.randn(16, 2), torch.randn(16, 2)
    gen = torch.Generator().manual_seed(3)
    a = mutual_information("jsd", t_net, x, z, generator=gen)
    b = statistics_mutual_information(t_net, x, z, generator=torch.Generator().manual_seed(3))
    assert a.item() == pytest.approx(b.item())
    assert mutual_information("infogan", enc, x, z, sigma=2.0).item() == pytest.approx(
        infogan_mutual_information(enc, x, z, sigma=2.0).item())
    with pytest.raises(ValueError, match="estimator"):
        mutual_information("mine", t_net, x, z)
    u = torch.tensor([1.0, 3.0])
    assert meg_generator_loss(u, torch.tensor(0.5), mi_weight=2.0).item() == pytest.approx(1.0)
    assert meg_generator_loss(u, 123.0, mi_weight=0.0).item() == pytest.approx(2.0)  # the ablation
    with pytest.raises(ValueError, match="mi_weight"):
        meg_generator_loss(u, 0.0, mi_weight=-1.0)
    with pytest.raises(ValueError, match="pair up"):
        statistics_mutual_information(t_net, x, z[:8])
    with pytest.raises(ValueError, match="sigma"):
        gaussian_log_likelihood(z, z, 0.0)
