import pytest
import torch

from kexue.models.energy import (
    ConvEncoder,
    ConvStatistics,
    MEGEnergy28,
    MEGGenerator28,
    MEGStatistics28,
    MLPEncoder,
    MLPStatistics,
)


@pytest.mark.parametrize(("net", "x_shape", "z_dim"), [
    (MLPStatistics(x_dim=3, z_dim=2, width=16, depth=2), (3,), 2),
    (ConvStatistics(channels=3, z_dim=5, width=8, hidden=16), (3, 28, 28), 5),
    (MEGStatistics28(channels=3, z_dim=5, dim=16), (3, 28, 28), 5),
])
def test_statistics_networks_score_each_pair_on_its_own(net, x_shape, z_dim):
    x, z = torch.randn(6, *x_shape), torch.randn(6, z_dim)
    t = net(x, z)
    assert t.shape == (6,)
    # no batch coupling: changing the other pairs leaves pair 0's statistic unchanged
    x2, z2 = x.clone(), z.clone()
    x2[1:], z2[1:] = torch.randn_like(x2[1:]), torch.randn_like(z2[1:])
    assert torch.allclose(net(x2, z2)[0], t[0], atol=1e-6)
    # T depends on both arguments, and gradients reach x (the generator's path)
    assert not torch.allclose(net(x, torch.randn_like(z)), t)
    xg = x.clone().requires_grad_(True)
    net(xg, z).sum().backward()
    assert xg.grad.abs().sum() > 0


@pytest.mark.parametrize(("net", "x_shape"), [
    (MLPEncoder(x_dim=2, z_dim=4, width=16, depth=2), (2,)),
    (ConvEncoder(channels=1, z_dim=4, width=8), (1, 28, 28)),
    (ConvEncoder(channels=1, z_dim=1, width=8), (1, 28, 28)),
])
def test_encoders_map_to_codes(net, x_shape):
    z_hat = net(torch.randn(5, *x_shape))
    assert z_hat.shape == (5, net.z_dim)


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="z_dim"):
        MLPStatistics(x_dim=2, z_dim=0)
    with pytest.raises(ValueError, match="width"):
        ConvStatistics(width=-3)
    with pytest.raises(ValueError, match=r"z \[B, 2\]"):
        MLPStatistics(2, 2, width=8)(torch.randn(4, 2), torch.randn(3, 2))
    with pytest.raises(ValueError, match="x"):
        ConvStatistics(channels=1, z_dim=2, width=4, hidden=8)(torch.randn(2, 3, 28, 28), torch.randn(2, 2))
    with pytest.raises(ValueError, match="x"):
        MLPEncoder(x_dim=2, z_dim=2, width=8)(torch.randn(4, 3))


def test_meg_28px_networks_have_the_official_shapes_and_sizes():
    # the official networks/mnist.py at dim 512, 3 stacks, z 128: parameter counts from its layer list
    dim, c, z = 512, 3, 128
    conv = [(c, dim // 8), (dim // 8, dim // 4), (dim // 4, dim // 2), (dim // 2, dim)]
    trunk = sum(25 * i * o + o for i, o in conv)
    deconv = [(dim, dim // 2), (dim // 2, dim // 4), (dim // 4, dim // 8), (dim // 8, c)]
    gen = z * 4 * dim + 4 * dim + sum(25 * i * o + o + 2 * i for i, o in deconv)  # + BN scale and shift per input
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    G, E = MEGGenerator28(z, c, dim), MEGEnergy28(c, dim)
    T = MEGStatistics28(c, z, dim)
    assert count(G) == gen
    assert count(E) == trunk + 4 * dim + 1
    assert count(T) == trunk + 4 * dim * z + z + 2 * z * dim + dim + dim + 1
    small = MEGGenerator28(8, 3, 16)
    x = small(torch.randn(4, 8))
    assert x.shape == (4, 3, 28, 28) and x.abs().max() <= 1
    e = MEGEnergy28(3, 16)
    assert e(x).shape == (4,)
    # no batch coupling in the energy: the score penalty is per sample
    x2 = x.clone()
    x2[1:] = torch.randn_like(x2[1:])
    assert torch.allclose(e(x2)[0], e(x)[0], atol=1e-6)
    # the DCGAN initialisation of the generator's transposed convolutions
    w = torch.cat([m.weight.flatten() for m in MEGGenerator28(8, 3, 64).modules()
                   if isinstance(m, torch.nn.ConvTranspose2d)])
    assert abs(w.std().item() - 0.02) < 2e-3
    with pytest.raises(ValueError, match="dim must be a multiple of 8"):
        MEGEnergy28(3, 12)
    with pytest.raises(ValueError, match=r"z \[B, 8\]"):
        small(torch.randn(2, 7))
