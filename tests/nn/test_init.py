"""kexue.nn.init: the geometric claims of post 5 (7180, 8620, 8725) and the schemes that follow from them."""

import math

import pytest
import torch
from scipy import stats
from torch import nn

from kexue.nn.init import (
    ACTIVATIONS,
    SCHEMES,
    TRUNC_CORRECTION,
    TRUNC_GAMMA,
    Calibrated,
    calibrated_gain,
    fans,
    init_,
    init_weight_,
    resolve_gain,
    scheme_variance,
    second_moment,
    truncated_normal_,
    truncated_normal_variance,
    truncated_normal_variance_quadrature,
)


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- near-orthogonality (7180) ---------------------------------------------------------------------------------

@pytest.mark.parametrize("distribution", ["normal", "uniform"])
def test_wtw_minus_identity_mse(distribution):
    # Gaussian N(0, 1/n): off-diagonal entries of W^T W have variance 1/n, diagonal ones 2/n, so the mean squared
    # entry of W^T W - I is (n (n-1) / n + n * 2 / n) / n^2 = (n + 1) / n^2. Uniform: the diagonal variance is
    # n Var(w^2) = n (9/5 - 1) / n^2 = 0.8 / n, so the MSE is ((n-1) + 0.8) / n^2.
    n, reps = 100, 200
    w = torch.empty(reps, n, n, dtype=torch.float64)
    for i in range(reps):
        init_weight_(w[i], "lecun", distribution=distribution, generator=_gen(i))
    mse = ((w.transpose(1, 2) @ w - torch.eye(n, dtype=torch.float64)) ** 2).mean().item()
    expected = (n + 1) / n**2 if distribution == "normal" else (n - 1 + 0.8) / n**2
    assert mse == pytest.approx(expected, rel=0.01)
    assert mse == pytest.approx(0.01, rel=0.05)  # Su's numeric check: about 1/n


def test_rectangular_fan_out_rule_gives_orthonormal_columns_only_when_tall():
    # W in R^{m x n} (out = m, in = n), variance 1/m: W^T W ~ I_n when m >= n; when m < n it has rank <= m < n.
    m, n = 2000, 50
    w = init_weight_(torch.empty(m, n, dtype=torch.float64), "su_fan_out", generator=_gen())
    err = (w.T @ w - torch.eye(n, dtype=torch.float64)).abs().max().item()
    assert err < 5 * math.sqrt(2 / m)  # entries of W^T W - I are ~N(0, 1/m) (diagonal 2/m)
    m, n = 30, 50
    w = init_weight_(torch.empty(m, n, dtype=torch.float64), "su_fan_out", generator=_gen())
    gram = w.T @ w
    assert torch.linalg.matrix_rank(gram).item() == m
    eig = torch.linalg.eigvalsh(gram)
    assert eig[: n - m].abs().max().item() < 1e-10  # n - m zero eigenvalues: no vector in that null space survives
    assert (gram - torch.eye(n, dtype=torch.float64)).norm().item() >= math.sqrt(n - m) - 1e-9


def test_norm_ratio_concentrates_under_fan_out_variance():
    # ||Wx||^2 / ||x||^2 for variance 1/m is chi^2_m / m: mean 1, relative spread sqrt(2/m).
    m, n, trials = 200, 150, 800
    x = torch.randn(trials, n, dtype=torch.float64, generator=_gen(1))
    w = torch.empty(m, n, dtype=torch.float64)
    ratio = torch.empty(trials, dtype=torch.float64)
    for i in range(trials):
        init_weight_(w, "su_fan_out", generator=_gen(100 + i))
        ratio[i] = (w @ x[i]).pow(2).sum() / x[i].pow(2).sum()
    assert ratio.mean().item() == pytest.approx(1.0, abs=4 * math.sqrt(2 / m / trials))
    assert ratio.std().item() == pytest.approx(math.sqrt(2 / m), rel=0.1)


def test_relu_needs_gain_sqrt2():
    # Under variance 2/m, ||relu(Wx)|| ~ ||x||; under 1/m it shrinks by 1/sqrt 2 per layer.
    m, trials = 512, 400
    x = torch.randn(trials, m, dtype=torch.float64, generator=_gen(2))
    for gain, expected in (("relu", 1.0), (1.0, 0.5)):
        w = init_weight_(torch.empty(m, m, dtype=torch.float64), "su_fan_out", gain, generator=_gen(3))
        ratio = torch.relu(x @ w.T).pow(2).sum(-1) / x.pow(2).sum(-1)
        assert ratio.mean().item() == pytest.approx(expected, rel=0.03)


def test_orthogonal_is_exact_isometry_and_gaussian_is_not():
    n = 128
    q = init_weight_(torch.empty(n, n, dtype=torch.float64), "orthogonal", generator=_gen())
    torch.testing.assert_close(q.T @ q, torch.eye(n, dtype=torch.float64))
    g = init_weight_(torch.empty(n, n, dtype=torch.float64), "lecun", generator=_gen())
    s = torch.linalg.svdvals(g)
    # The quarter-circle caveat: entrywise close to orthogonal, yet singular values spread over [0, 2].
    assert s.max().item() > 1.8 and s.min().item() < 0.05
    assert (s**2).mean().item() == pytest.approx(1.0, abs=0.05)


def test_delta_orthogonal_conv_is_an_isometry():
    conv = nn.Conv2d(8, 8, 3, padding=1, padding_mode="circular", bias=False).double()
    init_(conv, "delta_orthogonal", generator=_gen())
    x = torch.randn(4, 8, 6, 6, dtype=torch.float64, generator=_gen(1))
    torch.testing.assert_close(conv(x).pow(2).sum((1, 2, 3)), x.pow(2).sum((1, 2, 3)))
    with pytest.raises(ValueError, match="odd kernel"):
        init_weight_(torch.empty(4, 4, 2, 2), "delta_orthogonal")
    with pytest.raises(ValueError, match="groups=1"):
        init_(nn.Conv2d(4, 4, 3, groups=2), "delta_orthogonal")


# --- scheme variances and fans (8725) --------------------------------------------------------------------------

@pytest.mark.parametrize("scheme", [s for s in SCHEMES if "orthogonal" not in s])
@pytest.mark.parametrize("distribution", ["normal", "uniform", "truncated_normal"])
def test_sampled_variance_matches_scheme(scheme, distribution):
    conv = nn.Conv2d(12, 40, (3, 5), groups=4).double()
    init_(conv, scheme, 1.7, distribution=distribution, generator=_gen())
    fan_in, fan_out = 3 * 15, 10 * 15  # in/groups * area, out/groups * area
    expected = 1.7**2 * scheme_variance(scheme, fan_in, fan_out)
    w = conv.weight.flatten()
    # Relative standard error of a sample variance is sqrt(kurtosis - 1) / sqrt(N) <= sqrt(2 / N).
    assert w.var().item() == pytest.approx(expected, rel=5 * math.sqrt(2 / w.numel()))
    assert torch.all(conv.bias == 0)


def test_fans_and_variance_formulas():
    assert fans(torch.empty(30, 20)) == (20, 30)
    assert fans(torch.empty(64, 8, 3, 3), groups=4) == (72, 144)
    fi, fo = 784, 256
    assert scheme_variance("lecun", fi, fo) == 1 / fi
    assert scheme_variance("su_fan_out", fi, fo) == 1 / fo
    assert scheme_variance("xavier", fi, fo) == pytest.approx(2 / (fi + fo))
    assert scheme_variance("geometric_mean", fi, fo) == pytest.approx(1 / math.sqrt(fi * fo))
    # quadratic t minimises (m t - 1)^2 + (n t - 1)^2 (8725's "local" rule)
    t = scheme_variance("quadratic", fi, fo)
    grid = torch.linspace(0.5 * t, 1.5 * t, 10001, dtype=torch.float64)
    assert grid[((fi * grid - 1) ** 2 + (fo * grid - 1) ** 2).argmin()].item() == pytest.approx(t, rel=1e-4)
    assert scheme_variance("he", fi, fo) == 2 / fi
    for scheme in ("lecun", "su_fan_out", "xavier", "geometric_mean", "quadratic"):  # all agree when square
        assert scheme_variance(scheme, 128, 128) == pytest.approx(1 / 128)


@pytest.mark.parametrize("m,n", [(1, 1), (3, 7), (784, 256), (10, 1000), (512, 511)])
def test_mean_ordering_quadratic_arithmetic_geometric(m, n):
    # (m^2 + n^2) / (m + n) >= (m + n) / 2 >= sqrt(m n); each variance is 1 / (that mean), so the order flips.
    quad, arith, geo = (m * m + n * n) / (m + n), (m + n) / 2, math.sqrt(m * n)
    assert quad >= arith >= geo
    v = {s: scheme_variance(s, m, n) for s in ("quadratic", "xavier", "geometric_mean")}
    assert v["quadratic"] <= v["xavier"] <= v["geometric_mean"]
    assert v["quadratic"] == pytest.approx(1 / quad) and v["geometric_mean"] == pytest.approx(1 / geo)


def test_x_w1_w2_preserves_second_moment_under_geometric_mean():
    # x in R^m, W1: m -> n, W2: n -> m, both with the shared variance 1/sqrt(mn): E|x W1 W2|^2 = |x|^2 m n / (mn).
    m, n, trials = 64, 256, 1000
    x = torch.randn(trials, m, dtype=torch.float64, generator=_gen(4))
    out = []
    for i in range(trials):
        w1 = init_weight_(torch.empty(n, m, dtype=torch.float64), "geometric_mean", generator=_gen(2 * i))
        w2 = init_weight_(torch.empty(m, n, dtype=torch.float64), "geometric_mean", generator=_gen(2 * i + 1))
        out.append((x[i] @ w1.T @ w2.T).pow(2).mean())
    ratio = torch.stack(out).mean() / x.pow(2).mean()
    assert ratio.item() == pytest.approx(1.0, abs=0.03)
    # Xavier's shared arithmetic mean loses the factor 4mn / (m + n)^2 = 0.64 over the pair.
    assert 4 * m * n / (m + n) ** 2 == pytest.approx(scheme_variance("xavier", m, n) ** 2 * m * n)


# --- truncated normal (8620) -----------------------------------------------------------------------------------

def test_truncated_normal_constants_by_quadrature():
    assert truncated_normal_variance(2.0) == pytest.approx(0.7737413, abs=5e-8)
    assert truncated_normal_variance_quadrature(2.0) == pytest.approx(0.7737413, abs=5e-8)
    assert pytest.approx(truncated_normal_variance_quadrature(2.0), rel=1e-12) == TRUNC_GAMMA
    assert pytest.approx(1.1368472, abs=5e-8) == TRUNC_CORRECTION
    # timm divides by 0.87962566, the std of a standard normal cut at +-2: its square is gamma
    assert math.sqrt(TRUNC_GAMMA) == pytest.approx(0.87962566, abs=5e-9)
    for b in (0.5, 1.0, 3.0):  # closed form and quadrature agree everywhere, and gamma -> 1 as the cut widens
        assert truncated_normal_variance(b) == pytest.approx(truncated_normal_variance_quadrature(b), rel=1e-10)
    assert truncated_normal_variance(8.0) == pytest.approx(1.0, abs=1e-12)


def test_truncated_normal_sampling():
    raw = nn.init.trunc_normal_(torch.empty(2_000_000, dtype=torch.float64), 0, 1, -2, 2, generator=_gen())
    assert raw.var().item() == pytest.approx(TRUNC_GAMMA, abs=4 * math.sqrt(2 / raw.numel()))
    # Rejection sampling (the obvious twin of the inverse-CDF sampler) gives the same variance.
    z = torch.randn(3_000_000, dtype=torch.float64, generator=_gen(1))
    kept = z[z.abs() <= 2]
    assert kept.var().item() == pytest.approx(TRUNC_GAMMA, abs=4 * math.sqrt(2 / kept.numel()))
    # The corrected sampler: variance std^2 after truncation, bounds in units of std, even for tiny std.
    std = 1e-3
    w = truncated_normal_(torch.empty(1_000_000, dtype=torch.float64), std, 2.0, generator=_gen(2))
    assert w.var().item() == pytest.approx(std**2, rel=0.01)
    assert w.abs().max().item() <= 2 * std * TRUNC_CORRECTION * (1 + 1e-12)
    assert w.abs().max().item() > 2 * std * TRUNC_CORRECTION * 0.999  # and it does reach the cut
    ks = stats.kstest((w / (std * TRUNC_CORRECTION)).numpy()[:20000], stats.truncnorm(-2, 2).cdf)
    assert ks.pvalue > 1e-3


# --- calibrated gains (8620) -----------------------------------------------------------------------------------

def test_second_moment_constants():
    assert second_moment(torch.sigmoid) == pytest.approx(0.2933790, abs=5e-8)
    assert second_moment(torch.relu) == pytest.approx(0.5, abs=1e-12)
    assert second_moment(lambda x: x, std=3.0) == pytest.approx(9.0, rel=1e-12)
    assert second_moment(ACTIVATIONS["selu"]) == pytest.approx(1.0, abs=1e-6)  # SELU's own calibration
    assert calibrated_gain("relu") == pytest.approx(math.sqrt(2), rel=1e-12)
    assert calibrated_gain("sigmoid") == pytest.approx(1 / math.sqrt(0.2933790), rel=1e-7)


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "gelu", "silu", "elu", "softplus"])
def test_second_moment_matches_monte_carlo(name):
    z = torch.randn(4_000_000, dtype=torch.float64, generator=_gen(5))
    v = ACTIVATIONS[name](z).pow(2)
    assert second_moment(ACTIVATIONS[name]) == pytest.approx(v.mean().item(), abs=5 * v.std().item() / 2000)


def test_calibrated_activation_has_unit_second_moment():
    z = torch.randn(2_000_000, dtype=torch.float64, generator=_gen(6))
    for name in ("tanh", "sigmoid", "gelu"):
        assert Calibrated(name)(z).pow(2).mean().item() == pytest.approx(1.0, abs=0.005)
    assert Calibrated(torch.sin)(z).pow(2).mean().item() == pytest.approx(1.0, abs=0.005)
    assert resolve_gain(torch.tanh) == pytest.approx(calibrated_gain("tanh"))


# --- application to modules ------------------------------------------------------------------------------------

def test_init_applies_to_every_layer_and_zero_option():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Sequential(nn.Conv1d(20, 20, 3), nn.Linear(3, 4)))
    init_(model, "orthogonal", "relu", zero=["2.*"], generator=_gen())
    w = model[0].weight.detach().double()
    torch.testing.assert_close(w.T @ w, 2 * torch.eye(10, dtype=torch.float64), atol=1e-5, rtol=0)  # gain^2 = 2
    assert torch.all(model[0].bias == 0)
    assert torch.all(model[2][0].weight == 0) and torch.all(model[2][1].weight == 0)
    with pytest.raises(ValueError, match="match no Linear/Conv"):
        init_(model, "lecun", zero=["blocks.*.out"])


def test_init_is_reproducible_and_works_after_meta():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 3))
    model.to_empty(device="cpu")
    a = [p.clone() for p in init_(model, "xavier", "tanh", generator=_gen(7)).parameters()]
    b = list(init_(model, "xavier", "tanh", generator=_gen(7)).parameters())
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("weight, message", [
    (torch.empty(0, 5), r"no entries \(shape \(0, 5\)\)"),  # was a ZeroDivisionError for some schemes
    (torch.empty(5, 0), "no entries"),
    (torch.empty(3, 0, 3), "no entries"),
    (torch.zeros(3, 4, dtype=torch.long), "floating-point tensor, got torch.int64"),  # was normal_kernel_cpu's
])
def test_empty_or_integer_weights_are_refused_by_every_scheme(scheme, weight, message):
    with pytest.raises(ValueError, match=message):
        init_weight_(weight, scheme)


def test_bad_input():
    with pytest.raises(ValueError, match=r"unknown scheme 'kaiming'.*lecun"):
        init_(nn.Linear(3, 3), "kaiming")
    with pytest.raises(ValueError, match="no Linear or Conv"):
        init_(nn.Sequential(nn.ReLU(), nn.LayerNorm(4)), "lecun")
    with pytest.raises(ValueError, match=r"at least 2 dimensions.*\(5,\)"):
        init_weight_(torch.empty(5), "lecun")
    with pytest.raises(ValueError, match="unknown distribution"):
        init_(nn.Linear(3, 3), "lecun", distribution="cauchy")
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        init_(nn.Linear(3, 3), "lecun", "swish")
    with pytest.raises(ValueError, match="gain must be a finite number > 0"):
        init_(nn.Linear(3, 3), "lecun", -1.0)
    with pytest.raises(ValueError, match="groups"):
        fans(torch.empty(6, 2, 3), groups=4)
    with pytest.raises(ValueError, match="exact"):
        scheme_variance("orthogonal", 3, 3)
    with pytest.raises(ValueError, match="bound"):
        truncated_normal_variance(0.0)
