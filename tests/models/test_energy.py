import pytest
import torch

from kexue.models.energy import ConvEncoder, ConvStatistics, MLPEncoder, MLPStatistics


@pytest.mark.parametrize(("net", "x_shape", "z_dim"), [
    (MLPStatistics(x_dim=3, z_dim=2, width=16, depth=2), (3,), 2),
    (ConvStatistics(channels=3, z_dim=5, width=8, hidden=16), (3, 28, 28), 5),
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
