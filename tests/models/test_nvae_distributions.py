"""kexue.models.nvae.distributions and flows: normalisation, fast vs reference, bad pixels, triangular Jacobians."""

import itertools

import pytest
import torch

from kexue.models.nvae.distributions import (
    Bernoulli,
    DiscretizedLogisticMixture,
    Normal,
    discretized_logistic_mixture_log_prob_reference,
    logistic_mixture_channels,
    quantize,
)
from kexue.models.nvae.flows import FlowCell, PairedFlow, autoregressive_mask

pytestmark = pytest.mark.usefixtures("one_thread")


def _params(channels, mix, h=2, w=2, b=1, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, logistic_mixture_channels(channels, mix), h, w, generator=g) * scale


# --- discretised mixture of logistics ----------------------------------------------------------------------------


def test_logistic_mixture_channel_count():
    assert logistic_mixture_channels(3, 10) == 100  # NVAE's 10 per component for RGB
    assert logistic_mixture_channels(1, 10) == 30


@pytest.mark.parametrize("bits", [8, 5])
def test_grey_mixture_is_normalised_over_all_pixel_values(bits):
    levels = 2**bits
    params = _params(1, 4, scale=1.5)
    dist = DiscretizedLogisticMixture(params.expand(levels, -1, -1, -1), 1, num_mix=4, num_bits=bits)
    x = (torch.arange(levels, dtype=torch.float32) / (levels - 1)).view(levels, 1, 1, 1).expand(-1, 1, 2, 2)
    total = dist.log_prob(x).exp().sum(0)  # [2, 2]: sums over every value of each pixel
    torch.testing.assert_close(total, torch.ones(2, 2), rtol=0, atol=2e-4)


def test_rgb_mixture_is_normalised_over_all_colours():
    bits, levels = 2, 4  # 4^3 = 64 colours
    params = _params(3, 3, h=1, w=2, scale=1.5)
    colours = torch.tensor(list(itertools.product(range(levels), repeat=3)), dtype=torch.float32) / (levels - 1)
    x = colours.view(-1, 3, 1, 1).expand(-1, 3, 1, 2)
    dist = DiscretizedLogisticMixture(params.expand(len(x), -1, -1, -1), 3, num_mix=3, num_bits=bits)
    total = dist.log_prob(x).exp().sum(0)
    torch.testing.assert_close(total, torch.ones(1, 2), rtol=0, atol=1e-5)


def test_mixture_matches_the_float64_reference_forward_and_backward():
    params = _params(3, 5, h=3, w=3, b=4, seed=1).requires_grad_(True)
    x = torch.randint(0, 256, (4, 3, 3, 3), generator=torch.Generator().manual_seed(2)) / 255
    x[0, :, 0, 0] = 0.0  # both edge bins
    x[1, :, 0, 0] = 1.0
    fast = DiscretizedLogisticMixture(params, 3, num_mix=5, num_bits=8).log_prob(x)
    ref = discretized_logistic_mixture_log_prob_reference(params, x, 3, num_mix=5, num_bits=8)
    torch.testing.assert_close(fast.double(), ref, rtol=1e-4, atol=1e-4)
    g = torch.randn_like(fast)
    (grad_fast,) = torch.autograd.grad(fast, params, g)
    (grad_ref,) = torch.autograd.grad(ref, params, g.double())
    torch.testing.assert_close(grad_fast.double(), grad_ref.double(), rtol=1e-3, atol=1e-4)


def test_mixture_refuses_pixels_off_the_grid_or_outside_the_unit_interval():
    dist = DiscretizedLogisticMixture(_params(1, 2), 1, num_mix=2, num_bits=5)
    with pytest.raises(ValueError, match="5-bit grid"):
        dist.log_prob(torch.full((1, 1, 2, 2), 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        dist.log_prob(torch.full((1, 1, 2, 2), 1.5))
    with pytest.raises(ValueError, match="channels"):
        DiscretizedLogisticMixture(torch.zeros(1, 7, 2, 2), 1, num_mix=2)


def test_mixture_samples_and_means_lie_in_the_unit_interval():
    dist = DiscretizedLogisticMixture(_params(3, 4, h=4, w=4, b=8, scale=3.0), 3, num_mix=4)
    for t in (0.5, 1.0):
        s = dist.sample(t, generator=torch.Generator().manual_seed(0))
        assert s.shape == (8, 3, 4, 4) and s.min() >= 0 and s.max() <= 1
    m = dist.mean()
    assert m.min() >= 0 and m.max() <= 1


def test_quantize_to_5_bits():
    x = torch.arange(256, dtype=torch.float32) / 255
    q = quantize(x, 5)
    assert torch.equal(torch.unique(q * 31), torch.arange(32, dtype=torch.float32))
    torch.testing.assert_close(q, torch.floor(torch.arange(256) / 8) / 31)
    assert torch.equal(quantize(x, 8), x)
    with pytest.raises(ValueError, match="num_bits"):
        quantize(x, 9)


# --- Bernoulli and Normal ------------------------------------------------------------------------------------------


def test_bernoulli_log_prob_and_binary_check():
    logits = torch.randn(2, 1, 3, 3)
    x = torch.bernoulli(torch.full((2, 1, 3, 3), 0.5))
    ref = torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(1)
    torch.testing.assert_close(Bernoulli(logits).log_prob(x), ref)
    with pytest.raises(ValueError, match="binary pixels"):
        Bernoulli(logits).log_prob(x * 0.5)
    with pytest.raises(ValueError, match="shape"):
        Bernoulli(logits).log_prob(x[:1])


def test_normal_log_prob_matches_torch():
    n = Normal(torch.randn(5), torch.rand(5) + 0.1)
    z = torch.randn(5)
    torch.testing.assert_close(n.log_prob(z), torch.distributions.Normal(n.mu, n.sigma).log_prob(z))


# --- flows -----------------------------------------------------------------------------------------------------------


def _jacobian(fn, z):
    return torch.autograd.functional.jacobian(lambda v: fn(v.view_as(z))[0].flatten(), z.flatten())


def _order(c, h, w, mirror):
    """Flat index (c, y, x) -> position in the autoregressive order: pixels in raster (or reversed) order, then c."""
    pos = torch.empty(c * h * w, dtype=torch.long)
    for ch, y, x in itertools.product(range(c), range(h), range(w)):
        pixel = y * w + x
        pixel = h * w - 1 - pixel if mirror else pixel
        pos[ch * h * w + y * w + x] = pixel * c + ch
    return pos


@pytest.mark.parametrize("mirror", [False, True])
def test_flow_cell_is_autoregressive_with_the_stated_log_det(mirror):
    torch.manual_seed(0)
    cell = FlowCell(3, expansion=2, mirror=mirror)
    with torch.no_grad():  # make the shift and scale large enough to matter
        cell.shift.log_weight_norm.add_(2.0)
        cell.log_scale.log_weight_norm.add_(2.0)
    z = torch.randn(1, 3, 3, 4)
    jac = _jacobian(cell, z)
    order = _order(3, 3, 4, mirror)
    perm = torch.argsort(order)
    jac = jac[perm][:, perm]  # rows and columns in the autoregressive order
    assert torch.allclose(jac.triu(1), torch.zeros_like(jac), atol=1e-6)  # nothing depends on later positions
    _, log_det = cell(z)
    torch.testing.assert_close(torch.diagonal(jac).log(), log_det.flatten()[perm], rtol=1e-4, atol=1e-5)
    assert log_det.abs().sum() > 0.1


def test_paired_flow_log_det_equals_the_full_jacobian_determinant():
    torch.manual_seed(1)
    flow = PairedFlow(2, expansion=2)
    with torch.no_grad():
        for cell in flow.cells:
            cell.log_scale.log_weight_norm.add_(2.0)
    z = torch.randn(1, 2, 3, 3)
    _, logdet_full = torch.linalg.slogdet(_jacobian(flow, z))
    _, log_det = flow(z)
    torch.testing.assert_close(log_det.sum(), logdet_full, rtol=1e-4, atol=1e-4)


def test_autoregressive_mask_centre_taps():
    m = autoregressive_mask(2, 4, 3, zero_diag=True)
    assert m[:, :, 0].eq(1).all() and m[:, :, 2].eq(0).all() and m[:, :, 1, 0].eq(1).all()
    assert m[:, :, 1, 2].eq(0).all()
    torch.testing.assert_close(m[:, :, 1, 1], torch.tensor([[0.0, 0], [0, 0], [1, 0], [1, 0]]))
    torch.testing.assert_close(autoregressive_mask(2, 4, 3)[:, :, 1, 1], torch.tensor([[1.0, 0], [1, 0], [1, 1],
                                                                                      [1, 1]]))
    with pytest.raises(ValueError, match="odd"):
        autoregressive_mask(2, 2, 4)
