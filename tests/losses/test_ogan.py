import pytest
import torch

from kexue.losses.gan import gan_qp_critic_loss, gan_qp_generator_loss
from kexue.losses.ogan import (
    code_loss,
    latent_mse,
    latent_sse,
    ogan_critic_loss,
    ogan_generator_loss,
    ogan_single_loss,
    pixel_mse,
)
from kexue.models.ogan import conv_ogan
from kexue.ops.correlation import pearson_reference, standardize

B, N = 6, 8


def _batch(dtype=torch.float64):
    real_codes = torch.randn(B, N, dtype=dtype, requires_grad=True)
    fake_codes = torch.randn(B, N, dtype=dtype, requires_grad=True)
    real, fake = torch.rand(B, 1, 5, 5, dtype=dtype), torch.rand(B, 1, 5, 5, dtype=dtype)
    return real_codes, fake_codes, real, fake, torch.randn(B, N, dtype=dtype)


def test_critic_loss_is_the_official_formula():
    rc, fc, real, fake, z = _batch()
    loss = ogan_critic_loss(rc, fc, real, fake, z, lam2=0.5, qp_weight=0.25)
    # written out independently: per-pixel mean squared distance, textbook Pearson correlation
    t1 = rc.detach().mean(1) - fc.detach().mean(1)
    dist = ((real - fake) ** 2).mean(dim=(1, 2, 3))
    expected = (t1 + 0.25 * t1 ** 2 / dist - 0.5 * pearson_reference(z, fc.detach())).mean()
    torch.testing.assert_close(loss.detach(), expected)


@pytest.mark.parametrize("code", ["pearson", "sse", "mse"])
def test_lam2_zero_is_gan_qp_with_critic_minus_avg_e(code):
    rc, fc, real, fake, z = _batch()
    ours = ogan_critic_loss(rc, fc, real, fake, z, lam2=0.0, qp_weight=0.25, code=code)
    # GAN-QP's critic is high on real data: T = -avg(E); 0.25 = 1 / (2 lambda) -> lambda = 2; distance = pixel mean
    base = gan_qp_critic_loss(-rc.mean(1), -fc.mean(1), real, fake, lam=2.0, distance="mse")
    torch.testing.assert_close(ours, base)
    g_ours = torch.autograd.grad(ours, (rc, fc))
    g_base = torch.autograd.grad(base, (rc, fc))
    for a, b in zip(g_ours, g_base, strict=True):
        torch.testing.assert_close(a, b)
    ours_g = ogan_generator_loss(fc, z, real_codes=rc, lam2=0.0, code=code)
    base_g = gan_qp_generator_loss(-rc.mean(1), -fc.mean(1))
    torch.testing.assert_close(ours_g, base_g)
    torch.testing.assert_close(torch.autograd.grad(ours_g, fc)[0], torch.autograd.grad(base_g, fc)[0])
    # real codes only shift the generator's value, never its gradient
    torch.testing.assert_close(torch.autograd.grad(ogan_generator_loss(fc, z, lam2=0.0, code=code), fc)[0],
                               torch.autograd.grad(base_g, fc)[0])


def test_pearson_term_never_pushes_on_the_score_but_mse_does():
    # The component of dL/d(fake codes) along 1 (the direction of the score avg E) does not depend on lambda2 for
    # -rho: the correlation is orthogonal to the discriminator. The MSE term uses that direction as well.
    rc, fc, real, fake, z = _batch()
    ones = torch.ones(N, dtype=torch.float64)

    def along_mean(lam2, code):
        (g,) = torch.autograd.grad(ogan_critic_loss(rc, fc, real, fake, z, lam2=lam2, code=code), fc)
        return g @ ones

    torch.testing.assert_close(along_mean(5.0, "pearson"), along_mean(0.0, "pearson"), rtol=0, atol=1e-14)
    assert (along_mean(5.0, "mse") - along_mean(0.0, "mse")).abs().max() > 1e-3


def test_latent_mse_is_one_minus_rho_on_standardised_codes():
    z, zh = torch.randn(B, N, dtype=torch.float64), torch.randn(B, N, dtype=torch.float64)
    torch.testing.assert_close(latent_mse(standardize(z, eps=0), standardize(zh, eps=0)),
                               1 - pearson_reference(z, zh))
    torch.testing.assert_close(code_loss(z, zh, "pearson"), -pearson_reference(z, zh))


def _grads(module):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in module.parameters()]


@pytest.mark.parametrize("norm", ["bn", "sm"])
@pytest.mark.parametrize("code, lam2", [("pearson", 0.5), ("mse", 1.0), ("pearson", 0.0)])
def test_single_loss_gives_each_player_its_own_gradient(norm, code, lam2):
    model = conv_ogan(z_dim=5, g_width=4, e_width=3, norm=norm).double()
    enc, gen = model.encoder, model.generator
    real = torch.rand(4, 1, 28, 28, dtype=torch.float64) * 2 - 1
    z = torch.randn(4, 5, dtype=torch.float64)
    kw = dict(lam2=lam2, code=code)

    model.zero_grad()
    loss, logs = ogan_single_loss(model.codes, gen, real, z, qp_weight=0.25, **kw)
    loss.backward()
    single_e, single_g = _grads(enc), _grads(gen)

    model.zero_grad()  # E's objective on a detached G(z)
    fake = gen(z).detach()
    ogan_critic_loss(model.codes(real), model.codes(fake), real, fake, z, qp_weight=0.25, **kw).backward()
    two_e = _grads(enc)
    model.zero_grad()  # G's objective through E (E's gradients from this pass are not E's)
    ogan_generator_loss(model.codes(gen(z)), z, **kw).backward()
    two_g = _grads(gen)

    assert any(g.abs().max() > 0 for g in single_g) and any(g.abs().max() > 0 for g in single_e)
    for a, b in zip(single_e + single_g, two_e + two_g, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    assert set(logs) == {"t1", "rho", "qp", "code"} and all(v.dim() == 0 for v in logs.values())


def test_single_loss_value():
    model = conv_ogan(z_dim=4, g_width=4, e_width=3).double()
    real, z = torch.rand(3, 1, 28, 28, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    loss, logs = ogan_single_loss(model.codes, model.generator, real, z)
    with torch.no_grad():  # t2 is zero in value, so the loss equals E's objective
        fake = model.generator(z)
        expected = ogan_critic_loss(model.codes(real), model.codes(fake), real, fake, z)
    torch.testing.assert_close(loss.detach(), expected)
    torch.testing.assert_close(logs["rho"], pearson_reference(z, model.codes(fake).detach()).mean())


def test_bad_input():
    rc, fc, real, fake, z = _batch()
    with pytest.raises(ValueError, match="lam2"):
        ogan_critic_loss(rc, fc, real, fake, z, lam2=-1.0)
    with pytest.raises(ValueError, match="qp_weight"):
        ogan_critic_loss(rc, fc, real, fake, z, qp_weight=0.0)
    with pytest.raises(ValueError, match="code must be one of 'pearson', 'sse', 'mse'"):
        ogan_critic_loss(rc, fc, real, fake, z, code="l1")
    with pytest.raises(ValueError, match=r"fake_codes and z must both be \[B, z_dim\]"):
        ogan_generator_loss(fc, z[:, :3])
    with pytest.raises(ValueError, match="real_codes must have the shape"):
        ogan_critic_loss(rc[:2], fc, real, fake, z)
    with pytest.raises(ValueError, match="real and fake must have the same shape"):
        pixel_mse(real, fake[:2])


def test_literal_mse_ablation_is_su_formula_on_a_tiny_case():
    # z = (1, 2, 3), E(G(z)) = (0, 4, 3): ||z - E(G(z))||^2 = 1 + 4 + 0 = 5, summed over the dimensions (the post's
    # form); the rescaled "mse" is half the mean, 5 / 6.
    z = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    z_hat = torch.tensor([[0.0, 4.0, 3.0]], dtype=torch.float64, requires_grad=True)
    torch.testing.assert_close(latent_sse(z, z_hat), torch.tensor([5.0], dtype=torch.float64))
    torch.testing.assert_close(code_loss(z, z_hat, "sse"), torch.tensor([5.0], dtype=torch.float64))
    torch.testing.assert_close(latent_mse(z, z_hat), torch.tensor([5.0 / 6], dtype=torch.float64))
    # its gradient is 2 (z_hat - z), and it enters both players' losses with weight lam2
    torch.testing.assert_close(torch.autograd.grad(latent_sse(z, z_hat).sum(), z_hat)[0],
                               torch.tensor([[-2.0, 4.0, 0.0]], dtype=torch.float64))
    loss = ogan_generator_loss(z_hat, z, lam2=0.5, code="sse")
    torch.testing.assert_close(loss, z_hat.mean() + 0.5 * 5.0)
    # in the single loss: value = E's objective, the code term with weight lam2 = 1 on the literal sum
    model = conv_ogan(z_dim=3, g_width=4, e_width=3).double()
    real, z3 = torch.rand(2, 1, 28, 28, dtype=torch.float64), torch.randn(2, 3, dtype=torch.float64)
    loss, logs = ogan_single_loss(model.codes, model.generator, real, z3, lam2=1.0, code="sse")
    with torch.no_grad():
        fake = model.generator(z3)
        codes = model.codes(fake)
        sse = ((z3 - codes) ** 2).sum(1).mean()
        expected = ogan_critic_loss(model.codes(real), codes, real, fake, z3, lam2=0.0) + sse
    torch.testing.assert_close(loss.detach(), expected)
    torch.testing.assert_close(logs["code"], sse)
