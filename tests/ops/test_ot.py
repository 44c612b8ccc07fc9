import numpy as np
import ot
import pytest
import torch

from kexue.ops.ot import (
    cost_matrix,
    kantorovich_rubinstein_lp,
    lp_dual,
    lp_duality,
    lp_primal,
    transport_cost,
    transport_plan,
    wasserstein,
    wasserstein_1d,
)

D = torch.float64


def _problem(n, m, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, d, generator=g, dtype=D), torch.randn(m, d, generator=g, dtype=D) + 0.5
    a, b = torch.rand(n, generator=g, dtype=D) + 0.1, torch.rand(m, generator=g, dtype=D) + 0.1
    return x, y, a / a.sum(), b / b.sum()


@pytest.mark.parametrize("seed, n, m", [(0, 12, 9), (1, 12, 9), (2, 5, 17), (3, 30, 30), (4, 1, 6)])
def test_strong_duality_and_complementary_slackness(seed, n, m):
    x, y, a, b = _problem(n, m, seed=seed)
    d = lp_duality(a, b, cost_matrix(x, y))
    assert abs(d.gap) <= 1e-8
    assert d.max_violation <= 1e-9 and d.max_slackness <= 1e-8
    assert d.primal.plan.sum(1).sub(a).abs().max() < 1e-9 and d.primal.plan.sum(0).sub(b).abs().max() < 1e-9


@pytest.mark.parametrize("seed", range(3))
def test_network_simplex_matches_the_lp(seed):
    x, y, a, b = _problem(15, 11, seed=seed)
    M = cost_matrix(x, y)
    plan, log = transport_plan(a, b, M, log=True)
    assert log["cost"] == pytest.approx(lp_primal(a, b, M).value, abs=1e-10)
    assert (plan * M).sum().item() == pytest.approx(log["cost"], abs=1e-12)
    dual = lp_dual(a, b, M)
    assert (a @ log["f"] + b @ log["g"]).item() == pytest.approx(dual.value, abs=1e-9)


def _common_support(n, seed):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 2, generator=g, dtype=D)
    a, b = torch.rand(n, generator=g, dtype=D), torch.rand(n, generator=g, dtype=D)
    return z, a / a.sum(), b / b.sum()


@pytest.mark.parametrize("seed", range(3))
def test_single_potential_equals_primal_for_a_metric_cost(seed):
    z, a, b = _common_support(10, seed)
    M = cost_matrix(z, z, p=1)
    kr = kantorovich_rubinstein_lp(a, b, M)
    assert kr.value == pytest.approx(lp_primal(a, b, M).value, abs=1e-9)
    assert torch.equal(kr.g, -kr.f)


def test_single_potential_is_lower_for_the_squared_cost():
    gaps = []
    for seed in range(5):
        z, a, b = _common_support(10, seed)
        M = cost_matrix(z, z, p=2)
        kr, primal = kantorovich_rubinstein_lp(a, b, M).value, lp_primal(a, b, M).value
        assert kr <= primal + 1e-9  # weak duality: g = -f is one feasible choice
        gaps.append(primal - kr)
    assert max(gaps) > 1e-3


@pytest.mark.parametrize("seed", range(3))
def test_one_dimensional_closed_form_equals_the_lp(seed):
    x, y, a, b = _problem(13, 8, d=1, seed=seed)
    closed = wasserstein_1d(x[:, 0], y[:, 0], a, b)
    assert closed.item() == pytest.approx(lp_primal(a, b, cost_matrix(x, y)).value, abs=1e-10)
    assert closed.item() == pytest.approx(ot.wasserstein_1d(x[:, 0].numpy(), y[:, 0].numpy(), a.numpy(),
                                                            b.numpy(), p=1), abs=1e-10)


def test_dirac_distance():
    x, y = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[3.0, -3.0, 2.0]])
    assert wasserstein(x, y).item() == pytest.approx(5.0)
    assert wasserstein(x, y, p=2).item() == pytest.approx(5.0)
    assert wasserstein_1d(torch.tensor([1.0]), torch.tensor([-2.5])).item() == pytest.approx(3.5)


def test_identity_and_symmetry():
    x, y, a, b = _problem(10, 10)
    assert wasserstein(x, x).item() == pytest.approx(0.0, abs=1e-12)
    assert wasserstein(x, y, a, b).item() == pytest.approx(wasserstein(y, x, b, a).item(), abs=1e-12)
    xg = x.clone().requires_grad_(True)
    wasserstein(xg, x).backward()  # coincident points: the norm's subgradient 0, not NaN
    assert torch.isfinite(xg.grad).all()


def test_gradients_match_finite_differences():
    x, y, a, b = _problem(7, 6)
    x.requires_grad_(True)
    a.requires_grad_(True)
    value = wasserstein(x, y, a, b)
    gx, ga = torch.autograd.grad(value, (x, a))
    h = 1e-6
    for i, j in [(0, 0), (3, 1), (6, 0)]:
        e = torch.zeros_like(x)
        e[i, j] = h
        fd = (wasserstein(x.detach() + e, y, a.detach(), b) - wasserstein(x.detach() - e, y, a.detach(), b)) / (2 * h)
        assert gx[i, j].item() == pytest.approx(fd.item(), abs=1e-6)
    # Weights live on the simplex: move mass from point 4 to point 2 (a tangent direction).
    t = torch.zeros_like(a)
    t[2], t[4] = h, -h
    fd = (wasserstein(x.detach(), y, a.detach() + t, b) - wasserstein(x.detach(), y, a.detach() - t, b)) / (2 * h)
    assert (ga[2] - ga[4]).item() == pytest.approx(fd.item(), abs=1e-6)


def test_gradients_in_the_target_points_and_weights_and_for_p2():
    x, y, a, b = _problem(6, 7, seed=4)
    y.requires_grad_(True)
    b.requires_grad_(True)
    for p in (1, 2):
        gy, gb = torch.autograd.grad(wasserstein(x, y, a, b, p=p), (y, b))
        h = 1e-6

        def w(yy, bb, p=p):
            return wasserstein(x, yy, a, bb, p=p).item()

        for i, j in [(0, 1), (5, 0)]:
            e = torch.zeros_like(y)
            e[i, j] = h
            fd = (w(y.detach() + e, b.detach()) - w(y.detach() - e, b.detach())) / (2 * h)
            assert gy[i, j].item() == pytest.approx(fd, abs=1e-6)
        t = torch.zeros_like(b)
        t[1], t[6] = h, -h
        fd = (w(y.detach(), b.detach() + t) - w(y.detach(), b.detach() - t)) / (2 * h)
        assert (gb[1] - gb[6]).item() == pytest.approx(fd, abs=1e-6)


def test_weight_gradient_is_the_centred_dual_and_scales_with_the_loss():
    x, y, a, b = _problem(8, 8)
    M = cost_matrix(x, y)
    a.requires_grad_(True)
    (ga,) = torch.autograd.grad(transport_cost(a, b, M), a)
    (ga10,) = torch.autograd.grad(10 * transport_cost(a, b, M), a)
    _, log = transport_plan(a.detach(), b, M, log=True)
    assert torch.allclose(ga, log["f"], atol=1e-12) and abs(ga.sum().item()) < 1e-12
    assert torch.allclose(ga10, 10 * ga)


def test_dtype_and_device_kept_and_value_equals_bare_pot():
    x, y, _, _ = _problem(30, 20)
    w32 = wasserstein(x.float(), y.float())
    assert w32.dtype == torch.float32 and w32.device == x.device
    direct = ot.emd2(np.full(30, 1 / 30), np.full(20, 1 / 20), cost_matrix(x, y).numpy())
    assert wasserstein(x, y).item() == pytest.approx(direct, abs=1e-12)


@pytest.mark.parametrize("call, message", [
    (lambda: wasserstein(torch.randn(3, 2), torch.randn(3, 3)), "same dimension"),
    (lambda: wasserstein(torch.tensor([[float("nan"), 0.0]]), torch.randn(1, 2)), "NaN"),
    (lambda: wasserstein(torch.randn(3), torch.randn(3, 1)), "2-D tensor"),
    (lambda: wasserstein(torch.randn(2, 1), torch.randn(2, 1), torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.6])),
     "same total mass"),
    (lambda: wasserstein(torch.randn(2, 1), torch.randn(2, 1), torch.tensor([1.5, -0.5]), torch.tensor([0.5, 0.5])),
     "negative weights"),
    (lambda: wasserstein(torch.randn(2, 1), torch.randn(2, 1), torch.tensor([1.0]), None), "must have shape"),
    (lambda: kantorovich_rubinstein_lp(torch.ones(2) / 2, torch.ones(3) / 3, torch.ones(2, 3)), "square"),
    (lambda: cost_matrix(torch.randn(2, 1), torch.randn(2, 1), p=0), "p must be > 0"),
    (lambda: lp_duality(torch.tensor([0.5, 0.5]), torch.tensor([0.3, 0.3]), torch.ones(2, 2)), "same total mass"),
    (lambda: lp_primal(torch.tensor([0.5, 0.5]), torch.tensor([0.5, 0.5]), torch.tensor([[0.0, float("nan")],
                                                                                         [1.0, 0.0]])), "NaN"),
    (lambda: lp_dual(torch.tensor([1.5, -0.5]), torch.tensor([0.5, 0.5]), torch.ones(2, 2)), "negative weights"),
    (lambda: transport_plan(torch.ones(3) / 3, torch.ones(2) / 2, torch.ones(2, 3)), "must have shape"),
    (lambda: wasserstein_1d(torch.randn(3, 1), torch.randn(3)), "x must be a 1-D tensor"),
    (lambda: wasserstein_1d(torch.tensor([0.0, float("nan")]), torch.randn(2)), "NaN"),
    (lambda: wasserstein_1d(torch.randn(3), torch.randn(0)), "y has no points"),  # was a ZeroDivisionError
    (lambda: wasserstein_1d(torch.tensor([0, 1]), torch.tensor([2, 3])), "floating-point tensor, got torch.int64"),
    (lambda: wasserstein(torch.tensor([[0, 1]]), torch.tensor([[2, 3]])), "floating-point tensor"),  # was cdist's
])
def test_bad_input(call, message):
    with pytest.raises(ValueError, match=message):
        call()
