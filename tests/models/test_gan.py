import pytest
import torch

from kexue.models.gan import ConvCritic, ConvGenerator, MLPCritic, MLPGenerator


@pytest.mark.parametrize("channels", [1, 3])
def test_conv_shapes_and_range(channels):
    g, c = ConvGenerator(z_dim=16, channels=channels, width=16), ConvCritic(channels=channels, width=16)
    x = g(torch.randn(5, 16))
    assert x.shape == (5, channels, 28, 28) and x.abs().max() <= 1
    assert c(x).shape == (5,) and c.features(x).shape == (5, c.feature_dim)
    assert ConvCritic(channels=channels, width=8, out_dim=7)(x).shape == (5, 7)


@pytest.mark.parametrize("critic, shape", [(ConvCritic(channels=2, width=8), (4, 2, 28, 28)),
                                           (MLPCritic(in_dim=3, width=16), (4, 3))])
def test_critic_scores_are_per_sample(critic, shape):
    # A gradient penalty assumes sample b's score depends only on x_b: the Jacobian of the batch is block-diagonal.
    x = torch.randn(*shape)
    jac = torch.autograd.functional.jacobian(critic, x)  # [B, B, ...]
    off = jac.flatten(2).abs().sum(-1) * (1 - torch.eye(shape[0]))
    assert off.max() == 0 and (jac.flatten(2).abs().sum(-1).diagonal() > 0).all()


def test_initialisation_keeps_the_signal_scale():
    torch.manual_seed(0)
    g = MLPGenerator(z_dim=64, out_dim=64, width=256, depth=8)
    z = torch.randn(512, 64)
    out = g(z)
    # He init on ReLU layers: the output second moment stays O(1) after 8 layers (PyTorch's default shrinks it).
    assert 0.2 < out.pow(2).mean().item() < 5
    for m in g.modules():
        if isinstance(m, torch.nn.Linear):
            m.reset_parameters()
    assert g(z).pow(2).mean().item() < 1e-3 * out.pow(2).mean().item()


def test_bad_input():
    with pytest.raises(ValueError, match="channels must be a positive int"):
        ConvGenerator(channels=0)
    with pytest.raises(ValueError, match="width must be >= 2"):
        ConvGenerator(width=1)
    with pytest.raises(ValueError, match=r"expected images \[B, 1, 28, 28\]"):
        ConvCritic()(torch.randn(2, 1, 32, 32))
