"""kexue.eval.signal: forward second moments and Jacobian spectra at initialisation (post 5's depth claims)."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import nn

from kexue.eval.signal import (
    activation_second_moments,
    input_output_jacobian,
    jacobian_singular_values,
    jacobian_singular_values_reference,
    log_spread,
    quarter_circle_density,
)
from kexue.nn.init import init_


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _stack(depth: int, width: int, act: type[nn.Module] | None, bias: bool = True) -> nn.Sequential:
    blocks = [nn.Sequential(nn.Linear(width, width, bias=bias), act() if act else nn.Identity()) for _ in range(depth)]
    return nn.Sequential(*blocks)


BLOCKS = [str(i) for i in range(50)]


# --- second moments --------------------------------------------------------------------------------------------

def test_hooks_match_stepping_through_the_stack():
    model = _stack(6, 32, nn.Tanh)
    x = torch.randn(64, 32, generator=_gen())
    trace = activation_second_moments(model, x, modules=[str(i) for i in range(6)])
    h, expected = x, [x.double().pow(2).mean()]
    with torch.no_grad():
        for block in model:
            h = block(h)
            expected.append(h.double().pow(2).mean())
    assert trace.names == ["input", *map(str, range(6))]
    torch.testing.assert_close(trace.second_moments, torch.stack(expected))
    torch.testing.assert_close(trace.drift(), trace.log_rms() - trace.log_rms()[0])
    assert trace.drift(reference=2)[2] == 0
    # default: every leaf in call order (Linear, Tanh, Linear, ...)
    assert activation_second_moments(model, x).names[1:4] == ["0.0", "0.1", "1.0"]


def test_second_moment_of_one_layer_closed_form():
    # E[(Wx)_j^2] = fan_in * Var(w) * E[x^2] = gain^2 E[x^2] under LeCun; ReLU halves it.
    n = 512
    layer = init_(nn.Sequential(nn.Linear(n, n), nn.ReLU()), "lecun", 3.0, generator=_gen(1))
    x = 2.0 * torch.randn(4096, n, generator=_gen(2))
    q = activation_second_moments(layer, x).second_moments
    assert q[0].item() == pytest.approx(4.0, rel=0.01)
    assert q[1].item() == pytest.approx(9 * 4.0, rel=0.03)
    assert q[2].item() == pytest.approx(9 * 4.0 / 2, rel=0.03)


@pytest.mark.parametrize("act,scheme,gain,width", [(None, "lecun", 1.0, 256), (None, "orthogonal", 1.0, 64),
                                                   (nn.ReLU, "he", 1.0, 256),
                                                   (nn.Tanh, "lecun", "tanh", 256)])
def test_matched_schemes_keep_the_log_norm_flat_over_50_layers(act, scheme, gain, width):
    model = init_(_stack(50, width, act), scheme, gain, generator=_gen(3))
    x = torch.randn(128, width, generator=_gen(4))
    drift = activation_second_moments(model, x, BLOCKS).drift(reference=1)
    # Finite width leaves a random walk of a few tenths of a nat (and, for ReLU, a downward bias of about
    # 5/(4n) per layer). A variance off by only 10% would drift by 49 * ln(1.1) / 2 = 2.3 nats; torch's default
    # drifts by 27 (linear) and 44 (ReLU) nats (next test).
    assert drift.abs().max().item() < 1.0


@pytest.mark.parametrize("act,per_layer", [(None, -0.5 * math.log(3)), (nn.ReLU, -0.5 * math.log(6))])
def test_torch_default_drifts_linearly_at_the_predicted_rate(act, per_layer):
    # torch's default kaiming_uniform_(a=sqrt 5) is U(+-1/sqrt(fan_in)): variance 1/(3 fan_in), a third of LeCun.
    torch.manual_seed(5)
    model = _stack(50, 128, act, bias=False)
    drift = activation_second_moments(model, torch.randn(256, 128, generator=_gen(6)), BLOCKS).drift(reference=1)
    slope = np.polyfit(np.arange(1, 51), drift[1:].numpy(), 1)[0]
    assert slope == pytest.approx(per_layer, rel=0.05)
    assert drift[-1].item() == pytest.approx(49 * per_layer, rel=0.05)


def test_torch_default_with_biases_sinks_to_the_bias_floor():
    # Linear stack with torch's default biases U(+-1/sqrt n) (variance 1/(3n)): q' = q/3 + 1/(3n), fixed point
    # q* = 1/(2n), whatever the input: the RMS stops drifting because the input signal has been replaced by bias.
    n = 64
    torch.manual_seed(7)
    model = _stack(50, n, None)
    q = activation_second_moments(model, 10 * torch.randn(256, n, generator=_gen(8)), BLOCKS).second_moments
    assert q[-1].item() == pytest.approx(1 / (2 * n), rel=0.2)
    jac = jacobian_singular_values(model, torch.randn(1, n, generator=_gen(9)))
    assert jac.max().item() < 1e-8  # the output no longer depends on the input


# --- Jacobians -------------------------------------------------------------------------------------------------

def test_jacobian_fast_matches_reference():
    model = init_(_stack(5, 12, nn.Tanh), "xavier", "tanh", generator=_gen(10)).double()
    x = torch.randn(3, 12, dtype=torch.float64, generator=_gen(11))
    torch.testing.assert_close(jacobian_singular_values(model, x), jacobian_singular_values_reference(model, x))
    jac = input_output_jacobian(model, x, chunk_size=5)
    torch.testing.assert_close(jac[1], torch.autograd.functional.jacobian(model, x[1:2]).reshape(12, 12))
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.Tanh(), nn.Conv2d(3, 1, 3)).double()
    xc = torch.randn(2, 2, 5, 5, dtype=torch.float64, generator=_gen(12))
    assert input_output_jacobian(conv, xc).shape == (2, 9, 50)
    torch.testing.assert_close(jacobian_singular_values(conv, xc), jacobian_singular_values_reference(conv, xc))


def test_linear_stack_jacobian_is_the_weight_product():
    model = init_(_stack(8, 20, None), "lecun", generator=_gen(13)).double()
    product = torch.eye(20, dtype=torch.float64)
    for block in model:
        product = block[0].weight @ product
    x = torch.randn(2, 20, dtype=torch.float64, generator=_gen(14))
    s = jacobian_singular_values(model, x)
    torch.testing.assert_close(s[0], torch.linalg.svdvals(product))
    torch.testing.assert_close(s[1], s[0])  # a linear map's Jacobian does not depend on the input


def test_orthogonal_stack_is_an_isometry_and_gaussian_is_not():
    x = torch.randn(2, 64, dtype=torch.float64, generator=_gen(15))
    orth = init_(_stack(30, 64, None), "orthogonal", generator=_gen(16)).double()
    s = jacobian_singular_values(orth, x)
    torch.testing.assert_close(s, torch.ones_like(s), atol=2e-5, rtol=0)  # float32 weights
    assert log_spread(s) == pytest.approx(0.0, abs=1e-5)
    gauss = init_(_stack(30, 64, None), "lecun", generator=_gen(16)).double()
    assert log_spread(jacobian_singular_values(gauss, x)) > 5  # many decades, although E[s^2] ~ 1


# --- reference laws --------------------------------------------------------------------------------------------

def test_quarter_circle_density_is_the_singular_value_law():
    total, _ = integrate.quad(lambda s: quarter_circle_density(torch.tensor(s)).item(), 0, 2)
    mean_sq, _ = integrate.quad(lambda s: s * s * quarter_circle_density(torch.tensor(s)).item(), 0, 2)
    assert total == pytest.approx(1.0, abs=1e-6)  # quad's error at the square-root edge
    assert mean_sq == pytest.approx(1.0, abs=1e-6)
    assert quarter_circle_density(torch.tensor([-0.1, 2.1])).abs().max().item() == 0
    n = 600
    w = init_(nn.Linear(n, n, bias=False), "lecun", generator=_gen(17)).weight.detach().double()
    s = torch.linalg.svdvals(w).numpy()

    def cdf(v: np.ndarray) -> np.ndarray:  # integral of sqrt(4 - t^2) / pi from 0 to v, in closed form
        v = np.clip(v, 0.0, 2.0)
        return (v * np.sqrt(4 - v * v) / 2 + 2 * np.arcsin(v / 2)) / math.pi

    for v in (0.3, 1.0, 1.9):
        assert cdf(np.array(v)) == pytest.approx(integrate.quad(lambda t: math.sqrt(4 - t * t) / math.pi, 0, v)[0])
    assert stats.kstest(s, cdf).statistic < 0.04


def test_log_spread():
    assert log_spread(torch.logspace(0, 10, 11), q=0.1) == pytest.approx(8.0)  # the 2nd and 10th of 11 values
    assert log_spread(torch.zeros(10)) == math.inf
    with pytest.raises(ValueError, match="q must be in"):
        log_spread(torch.ones(3), q=0.5)


def test_bad_input():
    model = _stack(2, 4, nn.ReLU)
    with pytest.raises(ValueError, match="matches no submodule"):
        activation_second_moments(model, torch.randn(2, 4), modules=["blocks.*"])
    with pytest.raises(ValueError, match="must be a batch"):
        input_output_jacobian(model, torch.randn(4))
    trace = activation_second_moments(model, torch.randn(2, 4))
    with pytest.raises(IndexError, match="reference"):
        trace.drift(reference=99)
