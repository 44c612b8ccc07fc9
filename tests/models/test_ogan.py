import pytest
import torch
from torch import nn

from kexue.models.ogan import OGAN, SelfModulatedBatchNorm, SelfModulatedGenerator, conv_ogan
from kexue.ops.correlation import standardize


def _trained_stats(model, steps=3):
    """Give batch norm non-trivial running statistics, as after some training."""
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model.generator(torch.randn(8, model.z_dim) * 2 + 1)
    return model


def _buffers(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}


@pytest.mark.parametrize("norm", ["bn", "sm"])
def test_shapes_and_ranges(norm):
    model = conv_ogan(z_dim=6, channels=3, g_width=8, e_width=4, norm=norm)
    x = model.sample(5)
    assert x.shape == (5, 3, 28, 28) and x.abs().max() <= 1
    assert model.score(x).shape == (5,) and model.codes(x).shape == (5, 6)
    code = model.encode(x)
    torch.testing.assert_close(code.mean(1), torch.zeros(5), rtol=0, atol=1e-5)
    torch.testing.assert_close(code.pow(2).mean(1), torch.ones(5), rtol=0, atol=1e-4)
    assert model.reconstruct(x).shape == x.shape
    assert model.interpolate(x[:2], x[2:4], steps=4).shape == (2, 4, 3, 28, 28)


@pytest.mark.parametrize("norm", ["bn", "sm"])
def test_reconstruction_runs_in_eval_mode_without_touching_batch_norm(norm):
    model = _trained_stats(conv_ogan(z_dim=6, g_width=8, e_width=4, norm=norm))
    model.encoder.eval()  # mixed flags: each one must come back as it was
    flags = {name: m.training for name, m in model.named_modules()}
    before = _buffers(model)
    assert before and any(v.abs().sum() > 0 for k, v in before.items() if "running_mean" in k)
    x = torch.rand(6, 1, 28, 28) * 2 - 1
    rec = model.reconstruct(x, scale=0.9)
    model.interpolate(x[:3], x[3:], steps=3)
    model.encode(x)
    model.sample(4)
    after = _buffers(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert flags == {name: m.training for name, m in model.named_modules()}
    assert not rec.requires_grad
    # eval mode: a sample's reconstruction does not depend on the rest of its batch
    torch.testing.assert_close(model.reconstruct(x[:2]), rec[:2])
    # and it is G(0.9 N(E(x))) with running statistics
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(rec, model.generator(0.9 * standardize(model.encoder(x))))


def test_interpolation_ends_are_the_reconstructions():
    model = _trained_stats(conv_ogan(z_dim=6, g_width=8, e_width=4))
    x1, x2 = torch.rand(3, 1, 28, 28), torch.rand(3, 1, 28, 28)
    path = model.interpolate(x1, x2, steps=5, scale=0.8)
    torch.testing.assert_close(path[:, 0], model.reconstruct(x1, scale=0.8))
    torch.testing.assert_close(path[:, -1], model.reconstruct(x2, scale=0.8))
    # the midpoint decodes the mean of the two standardised codes
    mid = 0.8 * (model.encode(x1) + model.encode(x2)) / 2
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(path[:, 2], model.generator(mid))


def test_self_modulated_batch_norm():
    layer = SelfModulatedBatchNorm(4, z_dim=3)
    h, z = torch.randn(8, 4, 5, 5), torch.randn(8, 3)
    plain = nn.BatchNorm2d(4, affine=False)
    torch.testing.assert_close(layer(h, z), plain(h))  # output layers start at zero: plain batch norm
    for net in (layer.gamma, layer.beta):
        nn.init.normal_(net[2].weight)
    gamma, beta = layer.gamma(z)[:, :, None, None], layer.beta(z)[:, :, None, None]
    torch.testing.assert_close(layer(h, z), plain(h) * (gamma + 1) + beta)
    flat = SelfModulatedBatchNorm(4, z_dim=3, spatial=False)
    assert flat(torch.randn(8, 4), z).shape == (8, 4)


def test_self_modulated_generator_depends_on_z_through_the_norms():
    gen = SelfModulatedGenerator(z_dim=4, width=8)
    params = sum(p.numel() for p in gen.parameters())
    assert params > sum(p.numel() for p in conv_ogan(z_dim=4, g_width=8, norm="bn").generator.parameters())
    out = gen(torch.randn(6, 4))
    assert out.shape == (6, 1, 28, 28)
    out.sum().backward()
    # the modulation networks' output layers receive gradient although they start at zero
    assert gen.norm1.gamma[2].weight.grad.abs().max() > 0


def test_bad_input():
    with pytest.raises(ValueError, match="z_dim must be an int >= 3"):
        conv_ogan(z_dim=2)
    with pytest.raises(ValueError, match="norm must be one of 'bn', 'sm'"):
        conv_ogan(norm="ln")
    model = conv_ogan(z_dim=4, g_width=4, e_width=4)
    x = torch.rand(2, 1, 28, 28)
    with pytest.raises(ValueError, match="scale must be a positive number"):
        model.reconstruct(x, scale=0)
    with pytest.raises(ValueError, match="steps must be an int >= 2"):
        model.interpolate(x, x, steps=1)
    with pytest.raises(ValueError, match="x2 must have the shape of x1"):
        model.interpolate(x, x[:1])
    with pytest.raises(ValueError, match=r"x must be a float image batch \[B, C, H, W\]"):
        model.encode(x[0])
    with pytest.raises(ValueError, match="n must be a positive int"):
        model.sample(0)
    with pytest.raises(ValueError, match=r"the encoder must return codes \[B, 4\]"):
        OGAN(nn.Sequential(nn.Flatten(), nn.Linear(784, 5)), model.generator, 4).encode(x)
    with pytest.raises(ValueError, match=r"expected codes \[B, 4\]"):
        SelfModulatedGenerator(z_dim=4)(torch.randn(2, 5))
