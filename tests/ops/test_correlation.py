import pytest
import torch

from kexue.ops.correlation import pearson, pearson_reference, standardize


def test_closed_form():
    z = torch.tensor([[1.0, 2.0, 3.0]])
    # centred: [-1, 0, 1] and [-1, 1, 0]; cosine = 1 / (sqrt 2 * sqrt 2)
    assert pearson(z, torch.tensor([[1.0, 3.0, 2.0]])).item() == pytest.approx(0.5)
    assert pearson(z, z).item() == pytest.approx(1.0)
    assert pearson(z, -z).item() == pytest.approx(-1.0)
    assert torch.allclose(standardize(z), torch.tensor([[-1.0, 0.0, 1.0]]) * 1.5 ** 0.5)


def test_matches_the_textbook_formula_forward_and_backward():
    z = torch.randn(64, 16, dtype=torch.float64)
    zh = (0.7 * z + torch.randn(64, 16, dtype=torch.float64)).requires_grad_(True)
    fast, ref = pearson(z, zh), pearson_reference(z, zh)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    (g_fast,) = torch.autograd.grad(fast.sum(), zh)
    (g_ref,) = torch.autograd.grad(ref.sum(), zh)
    torch.testing.assert_close(g_fast, g_ref, rtol=0, atol=1e-12)
    # float32 agrees with the float64 reference too
    torch.testing.assert_close(pearson(z.float(), zh.detach().float()).double(), ref.detach(), rtol=0, atol=1e-6)


def test_invariant_to_positive_scaling_and_shifts():
    z, zh = torch.randn(32, 10, dtype=torch.float64), torch.randn(32, 10, dtype=torch.float64)
    a = torch.rand(32, 1, dtype=torch.float64) * 10 + 0.1  # one positive scale per row
    b = torch.randn(32, 1, dtype=torch.float64) * 5  # one shift per row
    rho = pearson(z, zh)
    torch.testing.assert_close(pearson(z, a * zh + b), rho)
    torch.testing.assert_close(pearson(a * z + b, zh), rho)
    torch.testing.assert_close(pearson(z, -a * zh + b), -rho)  # a negative scale flips the sign
    torch.testing.assert_close(standardize(a * zh + b, eps=0), standardize(zh, eps=0))


def test_gradient_is_orthogonal_to_the_mean_and_scale_directions():
    # rho is flat along 1 (shifts) and along zh - avg zh (scalings): its gradient is orthogonal to both, hence to
    # the gradient of avg(zh) = 1/n, the O-GAN discriminator's direction.
    z = torch.randn(16, 12, dtype=torch.float64)
    zh = torch.randn(16, 12, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(pearson(z, zh).sum(), zh)
    (g_avg,) = torch.autograd.grad(zh.mean(-1).sum(), zh)
    assert g.abs().max() > 1e-3  # not trivially zero
    torch.testing.assert_close((g * g_avg).sum(-1), torch.zeros(16, dtype=torch.float64), rtol=0, atol=1e-14)
    centred = zh.detach() - zh.detach().mean(-1, keepdim=True)
    torch.testing.assert_close((g * centred).sum(-1), torch.zeros(16, dtype=torch.float64), rtol=0, atol=1e-13)


def test_distance_of_standardised_vectors():
    # ||N(z) - N(zh)||^2 = 2 n (1 - rho), exactly, since ||N(.)||^2 = n
    n = 20
    z, zh = torch.randn(50, n, dtype=torch.float64), torch.randn(50, n, dtype=torch.float64) * 3 + 1
    lhs = (standardize(z, eps=0) - standardize(zh, eps=0)).pow(2).sum(-1)
    torch.testing.assert_close(lhs, 2 * n * (1 - pearson(z, zh)))
    torch.testing.assert_close(standardize(z, eps=0).pow(2).sum(-1), torch.full((50,), float(n), dtype=torch.float64))


def test_constant_rows_stay_finite():
    z = torch.randn(3, 5)
    const = torch.ones(3, 5)
    assert torch.equal(pearson(z, const), torch.zeros(3))
    assert torch.equal(standardize(const), torch.zeros(3, 5))


def test_bad_input():
    with pytest.raises(ValueError, match="z_hat must have at least 2 entries"):
        pearson(torch.randn(4, 3), torch.randn(4, 1))
    with pytest.raises(ValueError, match="same shape"):
        pearson(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="z must be a floating-point tensor"):
        standardize(torch.ones(4, 3, dtype=torch.long))
