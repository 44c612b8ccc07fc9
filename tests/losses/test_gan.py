import math

import pytest
import torch
from torch import nn

from kexue.losses.gan import (
    clip_weights_,
    gan_qp_critic_loss,
    gan_qp_generator_loss,
    gradient_norms,
    gradient_penalty,
    gradient_power_penalty,
    interpolate,
    spectral_normalize,
    wgan_critic_loss,
    wgan_generator_loss,
)
from kexue.models.gan import ConvCritic, MLPCritic


class Linear(nn.Module):
    """f(x) = <w, x> over all coordinates of a sample: gradient w everywhere."""

    def __init__(self, w):
        super().__init__()
        self.w = w

    def forward(self, x):
        return (x.flatten(1) * self.w.flatten()).sum(1)


def test_gradient_penalty_is_zero_for_a_unit_gradient_critic():
    w = torch.randn(3, 4, 4)
    critic = Linear(w / w.norm())  # 1-Lipschitz with ||grad|| = 1 everywhere
    real, fake = torch.randn(8, 3, 4, 4), torch.randn(8, 3, 4, 4)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-12)
    norms = gradient_norms(critic, real)
    assert torch.allclose(norms, torch.ones(8))


def test_norm_is_per_sample_over_all_coordinates():
    # ||grad|| = 2 per sample: the per-sample norm gives penalty (2-1)^2 = 1. A per-channel norm (over one axis)
    # would see 2/sqrt(3) per channel, and a whole-batch norm 2*sqrt(B); both give another value.
    w = torch.randn(3, 4, 4)
    critic = Linear(2 * w / w.norm())
    real, fake = torch.randn(5, 3, 4, 4), torch.randn(5, 3, 4, 4)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(1.0, rel=1e-6)
    assert gradient_penalty(critic, real, fake, one_sided=True).item() == pytest.approx(1.0, rel=1e-6)
    half = Linear(0.5 * w / w.norm())
    assert gradient_penalty(half, real, fake).item() == pytest.approx(0.25, rel=1e-6)
    assert gradient_penalty(half, real, fake, one_sided=True).item() == 0.0


def test_epsilon_is_drawn_per_sample():
    real, fake = torch.ones(256, 2, 3), torch.zeros(256, 2, 3)
    mixed = interpolate(real, fake, generator=torch.Generator().manual_seed(0))
    per_sample = mixed.flatten(1)
    assert torch.allclose(per_sample, per_sample[:, :1].expand_as(per_sample))  # one eps within a sample
    eps = per_sample[:, 0]
    assert eps.unique().numel() == 256 and eps.min() >= 0 and eps.max() <= 1  # a different eps per sample
    assert abs(eps.mean().item() - 0.5) < 0.06


class Recording(Linear):
    """A unit-gradient linear critic that remembers the points it was evaluated at."""

    def forward(self, x):
        self.seen = x.detach().clone()
        return super().forward(x)


def test_gradient_penalty_evaluates_at_per_sample_interpolates():
    # Through the public penalty: with real = 1 and fake = 0 the interpolate of sample b is eps_b everywhere. A
    # per-pixel eps would vary inside a sample; a whole-batch eps would be one value for all samples.
    w = torch.randn(2, 5, 5)
    critic = Recording(w / w.norm())
    real, fake = torch.ones(64, 2, 5, 5), torch.zeros(64, 2, 5, 5)
    assert gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(1)).item() == \
        pytest.approx(0.0, abs=1e-12)
    x_hat = critic.seen.flatten(1)
    assert torch.equal(x_hat, x_hat[:, :1].expand_as(x_hat))  # not per pixel
    assert x_hat[:, 0].unique().numel() == 64  # not one eps for the batch
    # The same generator state gives the same interpolates (the penalty is reproducible).
    gradient_penalty(critic, real, fake, generator=torch.Generator().manual_seed(1))
    assert torch.equal(critic.seen.flatten(1), x_hat)


@pytest.mark.parametrize("make", [lambda: ConvCritic(channels=3, width=8),
                                  lambda: nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 1))])
def test_gradient_norms_match_a_per_sample_loop(make):
    # Slow twin: differentiate each sample's score on its own and take the norm over all of its coordinates.
    torch.manual_seed(0)
    critic = make()
    shape = (5, 3, 28, 28) if isinstance(critic, ConvCritic) else (5, 3, 2, 2)
    x = torch.randn(*shape)
    fast = gradient_norms(critic, x, create_graph=False)
    slow = []
    for b in range(len(x)):
        xb = x[b:b + 1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(critic(xb).sum(), xb)
        slow.append(g.norm())
    torch.testing.assert_close(fast, torch.stack(slow), rtol=1e-5, atol=1e-7)
    # Norms over one axis (per channel) or over the whole batch are different numbers.
    assert not torch.allclose(fast, torch.stack(slow) / math.sqrt(shape[1]))


def test_penalty_reaches_critic_parameters():
    critic = nn.Sequential(nn.Flatten(), nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 1))
    loss = gradient_penalty(critic, torch.randn(4, 2, 3), torch.randn(4, 2, 3))
    loss.backward()
    # Every weight shapes grad_x f; the output bias does not, so it gets no gradient from the penalty.
    weights = [critic[1].weight, critic[1].bias, critic[3].weight]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)
    assert critic[3].bias.grad is None or critic[3].bias.grad.abs().sum() == 0


def test_power_penalty_closed_form():
    w = torch.randn(5)
    critic = Linear(3 * w / w.norm())
    x = torch.randn(7, 5)
    assert gradient_power_penalty(critic, x, k=2, p=6).item() == pytest.approx(2 * 3**6, rel=1e-5)
    assert gradient_power_penalty(critic, x, k=1, p=2).item() == pytest.approx(9, rel=1e-5)


def test_clipping_bounds_every_weight():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(10)
    clip_weights_(net, 0.01)
    assert all(p.abs().max() <= 0.01 for p in net.parameters())
    with pytest.raises(ValueError, match="c must be > 0"):
        clip_weights_(net, 0)


def test_spectral_normalisation_matches_the_svd():
    torch.manual_seed(0)
    net = spectral_normalize(nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Conv1d(1, 1, 1)), n_power_iterations=1)
    layer = net[0]
    raw = layer.parametrizations.weight.original.detach()
    for _ in range(30):  # training-mode forwards run the persistent power iteration
        net[0](torch.randn(2, 20))
    sigma = torch.linalg.matrix_norm(raw, 2)
    assert torch.linalg.matrix_norm(layer.weight.detach(), 2).item() == pytest.approx(1.0, rel=1e-3)
    assert (raw.norm() / layer.weight.detach().norm()).item() == pytest.approx(sigma.item(), rel=1e-3)
    with pytest.raises(ValueError, match="no Linear or Conv"):
        spectral_normalize(nn.ReLU())


def test_spectral_normalised_critic_is_1_lipschitz():
    # Every layer with top singular value 1 and LeakyReLU (slope <= 1) between them: ||grad f|| <= 1 everywhere,
    # even for weights that make the raw network steep.
    torch.manual_seed(0)
    critic = MLPCritic(in_dim=2, width=32, depth=3)
    with torch.no_grad():
        for p in critic.parameters():
            p.mul_(4)
    x = 3 * torch.randn(2000, 2)
    assert gradient_norms(critic, x, create_graph=False).max().item() > 5
    spectral_normalize(critic)
    with torch.no_grad():
        for _ in range(50):  # converge the persistent power iterations
            critic(torch.randn(8, 2))
    critic.eval()
    for layer in (m for m in critic.modules() if isinstance(m, nn.Linear)):
        assert torch.linalg.matrix_norm(layer.weight.detach(), 2).item() == pytest.approx(1.0, rel=1e-3)
    assert gradient_norms(critic, x, create_graph=False).max().item() <= 1.0 + 1e-3


def test_wgan_losses_and_gan_qp():
    real_s, fake_s = torch.tensor([2.0, 1.0]), torch.tensor([0.0, 1.0])
    assert wgan_critic_loss(real_s, fake_s).item() == -1.0
    assert wgan_generator_loss(fake_s).item() == -0.5
    real, fake = torch.zeros(2, 3), torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 0.0]])
    # dT = (2, 0); l1 distances (3, 2): loss = mean(-dT + dT^2 / (2 lam d)) = mean(-2 + 4 / (2*10*3), 0)
    assert gan_qp_critic_loss(real_s, fake_s, real, fake, lam=10).item() == pytest.approx((-2 + 4 / 60) / 2)
    assert gan_qp_critic_loss(real_s, fake_s, real, fake, lam=1, distance="l2").item() == pytest.approx(
        (-2 + 4 / (2 * math.sqrt(3))) / 2)
    assert gan_qp_generator_loss(real_s, fake_s).item() == 1.0
    # The optimum of -dT + dT^2/(2 lam d) over dT is dT = lam d: the critic's gap grows with the distance.
    dT = torch.tensor(0.5, requires_grad=True)
    for _ in range(500):
        loss = gan_qp_critic_loss(dT.reshape(1), torch.zeros(1), torch.zeros(1, 4), torch.ones(1, 4) * 0.5, lam=2)
        (g,) = torch.autograd.grad(loss, dT)
        dT.data -= 0.5 * g
    assert dT.item() == pytest.approx(2 * 2.0, rel=1e-3)


def test_bad_critic_output():
    with pytest.raises(ValueError, match="one score per sample"):
        gradient_norms(lambda x: x, torch.randn(3, 2))
    with pytest.raises(ValueError, match="same shape"):
        interpolate(torch.randn(2, 3), torch.randn(3, 3))
    with pytest.raises(ValueError, match="need k >= 0 and p > 0"):
        gradient_power_penalty(Linear(torch.ones(2)), torch.randn(3, 2), p=0)
    with pytest.raises(ValueError, match="distance must be"):
        gan_qp_critic_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2, 3), torch.ones(2, 3), distance="l3")
    with pytest.raises(ValueError, match="lam must be > 0"):
        gan_qp_critic_loss(torch.zeros(2), torch.zeros(2), torch.zeros(2, 3), torch.ones(2, 3), lam=0)
