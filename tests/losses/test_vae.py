"""kexue.losses.vae: the residual-Normal KL, warm-up, KL balancing, spectral and BN regularisers, LR schedule."""

import itertools
import math

import pytest
import torch
from torch import nn

from kexue.losses.vae import (
    SpectralRegularizer,
    adamax,
    bn_regularizer,
    gaussian_kl,
    group_kl,
    kl_balance,
    kl_balance_alphas,
    kl_warmup,
    nelbo_terms,
    norm_coeff,
    residual_normal_kl,
    spectral_norm_reference,
    warmup_cosine,
    warmup_cosine_schedule,
)
from kexue.models.nvae import NVAE, Normal, NVAEConfig
from kexue.models.nvae.cells import BNSwish, Conv2d
from kexue.models.nvae.model import LatentGroup

pytestmark = pytest.mark.usefixtures("one_thread")


# --- residual Normal KL -----------------------------------------------------------------------------------------


def _params(n=1000, dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    mu = torch.randn(n, generator=g, dtype=dtype) * 2
    d_mu = torch.randn(n, generator=g, dtype=dtype)
    sigma = torch.rand(n, generator=g, dtype=dtype) * 2 + 0.05
    d_sigma = torch.rand(n, generator=g, dtype=dtype) * 3 + 0.05
    return mu, d_mu, sigma, d_sigma


def test_residual_kl_equals_generic_gaussian_kl_and_torch_distributions():
    mu, d_mu, sigma, d_sigma = _params()
    residual = residual_normal_kl(d_mu, d_sigma, sigma)
    generic = gaussian_kl(mu + d_mu, sigma * d_sigma, mu, sigma)
    torch_kl = torch.distributions.kl_divergence(torch.distributions.Normal(mu + d_mu, sigma * d_sigma),
                                                 torch.distributions.Normal(mu, sigma))
    torch.testing.assert_close(residual, generic, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(residual, torch_kl, rtol=1e-10, atol=1e-12)
    assert (residual >= 0).all()


def test_residual_kl_is_zero_at_identity_and_does_not_depend_on_mu():
    mu, d_mu, sigma, d_sigma = _params()
    assert residual_normal_kl(torch.zeros_like(mu), torch.ones_like(mu), sigma).abs().max() == 0
    shifted = gaussian_kl(mu + 7.5 + d_mu, sigma * d_sigma, mu + 7.5, sigma)
    torch.testing.assert_close(shifted, gaussian_kl(-mu + d_mu, sigma * d_sigma, -mu, sigma), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(shifted, residual_normal_kl(d_mu, d_sigma, sigma), rtol=1e-9, atol=1e-9)


def test_group_kl_closed_form_matches_monte_carlo_and_flow_groups_use_the_sample_estimate():
    g = torch.Generator().manual_seed(0)
    p = Normal(torch.randn(1, 3, 2, 2, generator=g), torch.rand(1, 3, 2, 2, generator=g) + 0.5)
    q = Normal(p.mu + 0.3 * torch.randn(1, 3, 2, 2, generator=g), p.sigma * (torch.rand(1, 3, 2, 2, generator=g) + 0.5))
    z = q.mu + q.sigma * torch.randn(200_000, 3, 2, 2, generator=g)
    log_q, log_p = q.log_prob(z), p.log_prob(z)
    closed = group_kl(LatentGroup(z[:1], q, p, log_q[:1], log_p[:1], False, 0))
    mc = (log_q - log_p).flatten(1).sum(1)
    assert closed.shape == (1,)
    assert abs(closed.item() - mc.mean().item()) < 4 * mc.std().item() / math.sqrt(len(z))
    flow = group_kl(LatentGroup(z, q, p, log_q, log_p, True, 0))
    torch.testing.assert_close(flow, mc)


# --- warm-up and balancing ---------------------------------------------------------------------------------------


def test_kl_warmup_starts_at_1e4_reaches_1_at_03T_and_is_monotone():
    total = 10_000
    betas = [kl_warmup(t, total) for t in range(total + 1)]
    assert betas[0] == pytest.approx(1e-4)
    assert betas[int(0.3 * total) + 1] == 1.0 and betas[int(0.3 * total) - 10] < 1.0
    assert all(b2 >= b1 for b1, b2 in itertools.pairwise(betas))
    assert betas[-1] == 1.0
    assert kl_warmup(1500, total) == pytest.approx((1500 - 1) / 3000)
    with pytest.raises(ValueError, match="total_steps"):
        kl_warmup(0, 0)


def test_norm_coeff_anneals_log_linearly():
    assert norm_coeff(0.3, 1e-2) == 1e-2
    assert norm_coeff(0.0, 1e-2, 1.0) == pytest.approx(1.0)
    assert norm_coeff(1.0, 1e-2, 1.0) == pytest.approx(1e-2)
    assert norm_coeff(0.5, 1e-2, 1.0) == pytest.approx(1e-1)
    with pytest.raises(ValueError, match="coeff_init"):
        norm_coeff(0.5, 1e-2, 0.0)


def test_balancing_alphas_are_4_to_the_scale_over_group_count():
    alpha = kl_balance_alphas([10, 5])  # finest first; decoder order is coarsest first
    torch.testing.assert_close(alpha, torch.tensor([1.0] * 5 + [2.0] * 10))  # (1/5, 4/10) / (1/5)
    alpha = kl_balance_alphas([4, 4, 2])
    torch.testing.assert_close(alpha, torch.tensor([1.0] * 2 + [2.0] * 4 + [8.0] * 4))
    with pytest.raises(ValueError, match="groups_per_scale"):
        kl_balance_alphas([])


def test_balancing_coefficients_have_mean_1_favour_high_kl_groups_and_stop_after_warmup():
    g = torch.Generator().manual_seed(0)
    kl = torch.rand(16, 6, generator=g) * torch.tensor([1.0, 5.0, 2.0, 0.1, 3.0, 1.0])
    kl.requires_grad_(True)
    alpha = torch.ones(6)
    balanced, gamma = kl_balance(kl, alpha, beta=0.3)
    assert gamma.mean().item() == pytest.approx(1.0)
    assert torch.argsort(gamma).tolist() == torch.argsort(kl.detach().mean(0)).tolist()
    # detached coefficients: the gradient of Σ_b kl_b with respect to KL_l is γ_l
    balanced.sum().backward()
    torch.testing.assert_close(kl.grad, gamma.expand(16, 6))
    # a larger α (bigger groups) lowers the coefficient in proportion
    _, gamma2 = kl_balance(kl.detach(), torch.tensor([1.0, 2.0, 1, 1, 1, 1]), beta=0.3)
    ratio = (gamma2 / gamma)
    assert ratio[1] / ratio[0] == pytest.approx(0.5)
    # only while β < 1 (and when enabled): afterwards the KL is a plain sum
    for beta, balance in ((1.0, True), (0.3, False)):
        plain, ones = kl_balance(kl.detach(), alpha, beta=beta, balance=balance)
        torch.testing.assert_close(plain, kl.detach().sum(1))
        assert (ones == 1).all()


# --- spectral and BN regularisers -----------------------------------------------------------------------------


class _Convs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Conv2d(8, 16, 3, padding=1)
        self.b = Conv2d(8, 16, 3, padding=1)  # same matrix shape as a: one batched group
        self.c = Conv2d(16, 4, 1, weight_norm=False)
        self.bn = nn.BatchNorm2d(4)


@pytest.mark.parametrize("batched", [True, False])
def test_power_iteration_matches_the_exact_spectral_norm(batched):
    torch.manual_seed(3)
    net = _Convs()
    sr = SpectralRegularizer(net, iterations=4, first_iterations=200, batched=batched)
    total = sr()
    exact = [torch.linalg.matrix_norm(m.normalized_weight().reshape(m.out_channels, -1), 2) for m in (net.a, net.b,
                                                                                                        net.c)]
    estimates = sr.singular_values()
    for est, ref in zip(estimates, exact, strict=True):
        assert abs(est.item() - ref.item()) <= 1e-3 * min(1.0, ref.item())
    assert total.item() == pytest.approx(sum(e.item() for e in exact), rel=1e-3)


@pytest.mark.parametrize("batched", [True, False])
def test_power_iteration_equals_the_reference_forward_and_backward(batched):
    torch.manual_seed(4)
    net = _Convs()
    sr = SpectralRegularizer(net, iterations=3, first_iterations=5, batched=batched)
    init = {k: v.clone() for k, v in sr.state_dict().items()}
    total = sr()
    total.backward()
    grads = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad()
    ref_total = 0.0
    layers = [net.a, net.b, net.c]  # groups: (16, 72) = [a, b], (4, 16) = [c]
    for g, idx in ((0, [0, 1]), (1, [2])):
        for row, i in enumerate(idx):
            w = layers[i].normalized_weight().reshape(layers[i].out_channels, -1)
            sigma, u, v = spectral_norm_reference(w, init[f"u{g}"][row], init[f"v{g}"][row], 5)
            torch.testing.assert_close(u, sr.state_dict()[f"u{g}"][row])
            torch.testing.assert_close(v, sr.state_dict()[f"v{g}"][row])
            ref_total = ref_total + sigma
    torch.testing.assert_close(total, ref_total)
    ref_total.backward()
    for n, p in net.named_parameters():
        if p.grad is not None:
            torch.testing.assert_close(grads[n], p.grad)


def test_power_iteration_vectors_persist_and_are_restored_from_a_state_dict():
    torch.manual_seed(5)
    net = _Convs()
    sr = SpectralRegularizer(net)
    sr()
    assert int(sr.calls) == 1
    state = {k: v.clone() for k, v in sr.state_dict().items()}
    after = sr()  # 4 more iterations from the stored vectors
    other = SpectralRegularizer(net)
    other.load_state_dict(state)
    torch.testing.assert_close(other(), after)


def test_spectral_regularisation_lowers_the_top_singular_values():
    torch.manual_seed(6)
    net = _Convs()
    sr = SpectralRegularizer(net)
    before = sr().item()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(20):
        opt.zero_grad()
        sr().backward()
        opt.step()
    assert sr().item() < 0.8 * before


def test_bn_regularizer_sums_max_abs_gamma():
    model = nn.Sequential(nn.BatchNorm2d(3), BNSwish(5), nn.BatchNorm2d(2, affine=False))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([0.5, -2.0, 1.0]))
        model[1].bn.weight.copy_(torch.tensor([0.1, 0.2, 3.0, -0.4, 1.0]))
    loss = bn_regularizer(model)
    assert loss.item() == pytest.approx(5.0)
    loss.backward()
    assert model[0].weight.grad.tolist() == [0.0, -1.0, 0.0]
    assert model[1].bn.weight.grad.tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="no affine BatchNorm"):
        bn_regularizer(nn.Linear(2, 2))


# --- objective ------------------------------------------------------------------------------------------------


def test_nelbo_terms_add_up():
    torch.manual_seed(7)
    cfg = NVAEConfig(image_size=8, padding=0, enc_channels=4, dec_channels=4, num_preprocess_blocks=1,
                     num_postprocess_blocks=1, num_preprocess_cells=1, num_postprocess_cells=1, groups_per_scale=2,
                     latent_channels=2, enc_cells_per_group=1, dec_cells_per_group=1)
    model = NVAE(cfg)
    x = torch.bernoulli(torch.rand(4, 1, 8, 8))
    out = model(x)
    alpha = kl_balance_alphas(model.groups_per_scale)
    terms = nelbo_terms(out, x, model.likelihood(out.params), alpha, beta=1.0)
    assert terms.kl.shape == (4, model.num_groups)
    torch.testing.assert_close(terms.loss, terms.nelbo)
    torch.testing.assert_close(terms.nelbo, terms.recon + terms.kl.sum(1))
    warm = nelbo_terms(out, x, model.likelihood(out.params), alpha, beta=0.25)
    torch.testing.assert_close(warm.loss, warm.recon + 0.25 * (warm.kl * warm.gamma).sum(1))
    assert warm.gamma.mean().item() == pytest.approx(1.0)


# --- optimiser and schedule ----------------------------------------------------------------------------------


def test_warmup_cosine_schedule():
    lrs = [warmup_cosine(s, 100, 10, 1e-2, 1e-4) for s in range(101)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[9] == pytest.approx(1e-2)
    assert all(b > a for a, b in itertools.pairwise(lrs[:10]))
    assert all(b <= a for a, b in itertools.pairwise(lrs[9:]))
    assert lrs[100] == pytest.approx(1e-4)
    assert lrs[55] == pytest.approx(1e-4 + 0.5 * (1e-2 - 1e-4))
    p = nn.Parameter(torch.zeros(3))
    opt = adamax([p], lr=1e-2)
    assert opt.defaults["eps"] == 1e-3 and opt.defaults["weight_decay"] == 3e-4
    sched = warmup_cosine_schedule(opt, 100, 10, 1e-4)
    seen = []
    for _ in range(101):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    torch.testing.assert_close(torch.tensor(seen), torch.tensor(lrs))
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(0, 10, 20, 1e-2, 1e-4)
    with pytest.raises(ValueError, match="lr_min"):
        warmup_cosine_schedule(opt, 100, 10, 1.0)
