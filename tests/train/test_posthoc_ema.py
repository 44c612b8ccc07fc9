"""Post-hoc EMA (EDM2): power-function weights in closed form, sigma_rel <-> gamma, exact reconstruction of a tracked
profile, fast solver vs dense reference, snapshots on disk written by rank 0 only, state round trip."""

import math
import runpy
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy import integrate
from torch import nn

from kexue.errors import KexueError
from kexue.train.checkpoint import load_tensors
from kexue.train.distributed import DistInfo
from kexue.train.posthoc_ema import (
    GAMMA_AT_MAX_WIDTH,
    SIGMA_REL_MAX,
    PostHocEMA,
    PowerEMA,
    gamma_to_sigma_rel,
    load_snapshots,
    power_beta,
    power_weights,
    profile_inner,
    profile_inner_reference,
    reconstruct,
    sigma_rel_to_gamma,
    solve_coefficients,
    solve_coefficients_reference,
)


class OneHot(nn.Module):
    """A model whose weight at step tau is the basis vector e_tau: any EMA of it *is* its weight profile."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.full((steps,), 5.0, dtype=torch.float64))  # theta_0: must get weight 0

    def set_step(self, tau: int) -> None:
        with torch.no_grad():
            self.w.zero_()
            self.w[tau - 1] = 1.0


def small_net() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))


def perturb(model: nn.Module, gen: torch.Generator) -> None:
    with torch.no_grad():
        for t in [*model.parameters(), *model.buffers()]:
            if t.is_floating_point():
                t.add_(torch.randn(t.shape, generator=gen, dtype=t.dtype))
            else:
                t.add_(1)


def test_sigma_rel_and_gamma_round_trip_with_edm2_values():
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=5e-3)  # EDM2's two default profiles
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=5e-3)
    for sigma in [1e-3, 0.01, 0.05, 0.1, 0.2, 1 / math.sqrt(12), 0.29, 0.3]:
        gamma = sigma_rel_to_gamma(sigma)
        assert gamma >= GAMMA_AT_MAX_WIDTH
        assert gamma_to_sigma_rel(gamma) == pytest.approx(sigma, rel=1e-12)
        # the other root in (-1, gamma_max) has the same width: the cubic really has two admissible roots
        c = sigma**-2
        small = max(r.real for r in np.roots([1, 7, 16 - c, 12 - c]) if -1 < r.real < GAMMA_AT_MAX_WIDTH)
        assert gamma_to_sigma_rel(small) == pytest.approx(sigma, rel=1e-9)
    assert sigma_rel_to_gamma(1 / math.sqrt(12)) == pytest.approx(0.0, abs=1e-12)  # uniform average
    assert gamma_to_sigma_rel(GAMMA_AT_MAX_WIDTH) == pytest.approx(SIGMA_REL_MAX, rel=1e-15)
    for bad in (0.0, -0.1, SIGMA_REL_MAX, 0.5):
        with pytest.raises(KexueError, match="sigma_rel must be in"):
            sigma_rel_to_gamma(bad)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 6.937, 16.97])
def test_width_formula_is_the_profiles_relative_std(gamma):
    """sigma_rel is the std of p_{t,gamma} divided by t (integrated numerically, t = 1)."""
    density = lambda u: (gamma + 1) * u**gamma  # noqa: E731
    mass = integrate.quad(density, 0, 1)[0]
    mean = integrate.quad(lambda u: u * density(u), 0, 1)[0]
    var = integrate.quad(lambda u: (u - mean) ** 2 * density(u), 0, 1)[0]
    assert mass == pytest.approx(1.0, rel=1e-12)
    assert math.sqrt(var) == pytest.approx(gamma_to_sigma_rel(gamma), rel=1e-9)


@pytest.mark.parametrize("sigma_rel", [0.05, 0.10, 0.25])
def test_power_ema_weights_match_the_closed_form(sigma_rel):
    """After t updates, step tau's weight is (tau^(g+1) - (tau-1)^(g+1)) / t^(g+1) = integral of p over a step."""
    steps = 60
    model = OneHot(steps)
    ema = PowerEMA(model, sigma_rel, dtype=torch.float64)
    gamma = ema.gamma
    assert power_beta(1, gamma) == 0.0  # the first update copies: theta_0 gets no weight
    for t in range(1, steps + 1):
        model.set_step(t)
        ema.update(model)
        expected = np.zeros(steps)
        expected[:t] = power_weights(t, gamma)
        np.testing.assert_allclose(ema.averaged()["w"].numpy(), expected, rtol=1e-11, atol=1e-15)
    w = power_weights(steps, gamma)
    assert w.sum() == pytest.approx(1.0, rel=1e-14)
    tau = np.arange(1, steps + 1, dtype=np.float64)
    np.testing.assert_allclose(w, (tau ** (gamma + 1) - (tau - 1) ** (gamma + 1)) / steps ** (gamma + 1), rtol=1e-10)
    for k in (1, 17, steps):  # the integral form, numerically
        cell = integrate.quad(lambda u: (gamma + 1) * u**gamma / steps ** (gamma + 1), k - 1, k, epsabs=0)[0]
        assert w[k - 1] == pytest.approx(cell, rel=1e-9)


def test_profile_inner_product_closed_form_vs_quadrature():
    rng = np.random.default_rng(0)
    for _ in range(20):
        t_a, t_b = rng.uniform(1, 1000, size=2)
        g_a, g_b = rng.integers(0, 20, size=2).astype(float)  # integer exponents: Gauss-Legendre is exact
        assert profile_inner(t_a, g_a, t_b, g_b) == pytest.approx(profile_inner_reference(t_a, g_a, t_b, g_b),
                                                                  rel=1e-12)
        assert profile_inner(t_a, g_a, t_b, g_b) == pytest.approx(profile_inner(t_b, g_b, t_a, g_a), rel=1e-14)
        g_a, g_b = rng.uniform(0.5, 20, size=2)
        assert profile_inner(t_a, g_a, t_b, g_b) == pytest.approx(profile_inner_reference(t_a, g_a, t_b, g_b),
                                                                  rel=1e-8)
    # large t and gamma do not overflow: <p, p> = (g+1)^2 / ((2g+1) t)
    assert profile_inner(1e9, 40.0, 1e9, 40.0) == pytest.approx(41**2 / (81 * 1e9), rel=1e-14)


def test_fast_solver_matches_dense_reference():
    gammas = [sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.10)]
    snap_t = [t for t in (100, 200, 300, 400) for _ in gammas]
    snap_g = gammas * 4
    for sigma, t in [(0.07, 400), (0.15, 400), (0.04, 300)]:
        fast = solve_coefficients(snap_t, snap_g, t, sigma_rel_to_gamma(sigma))
        slow = solve_coefficients_reference(snap_t, snap_g, t, sigma_rel_to_gamma(sigma))
        assert fast.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(fast, slow, atol=1e-5)  # midpoint rule: O(h^2), h = 1/8 step
        assert np.all(fast[np.array(snap_t) > t] == 0.0)  # later snapshots are never used
    with pytest.raises(KexueError, match="no snapshot at or before step 50"):
        solve_coefficients(snap_t, snap_g, 50, gammas[0])


def test_reconstruction_reproduces_tracked_profiles_and_approximates_others():
    steps, every = 400, 20
    model = OneHot(steps)
    posthoc = PostHocEMA(model, (0.05, 0.10), snapshot_every=every, dtype=torch.float64)
    probe = PowerEMA(model, 0.07, dtype=torch.float64)  # tracked directly: ground truth for a third width
    probe_at = {}
    for t in range(1, steps + 1):
        model.set_step(t)
        posthoc.update(model)
        probe.update(model)
        if t % 100 == 0:
            probe_at[t] = probe.averaged()["w"]
    assert len(posthoc.snapshots()) == 2 * steps // every
    for profile in posthoc.profiles:  # a tracked profile is reproduced up to round-off, at the end and midway
        np.testing.assert_allclose(posthoc.reconstruct(profile.sigma_rel)["w"], profile.averaged()["w"],
                                   rtol=0, atol=1e-13)
        mid = np.zeros(steps)
        mid[:200] = power_weights(200, profile.gamma)
        np.testing.assert_allclose(posthoc.reconstruct(profile.sigma_rel, step=200)["w"], mid, rtol=0, atol=1e-13)
    for t, truth in probe_at.items():  # an untracked width: close, and closer with more history
        got = posthoc.reconstruct(0.07, step=t)["w"]
        error = float((got - truth).norm() / truth.norm())
        assert error < (0.02 if t >= 200 else 0.1), (t, error)


def test_buffers_follow_the_policy_and_copied_entries_come_from_the_latest_snapshot():
    gen = torch.Generator().manual_seed(1)
    model = small_net()
    posthoc = PostHocEMA(model, (0.05, 0.10), snapshot_every=3, buffers={"*.running_var": "copy"})
    for _ in range(9):
        perturb(model, gen)
        posthoc.update(model)
    out = posthoc.reconstruct(0.08)
    assert torch.equal(out["1.running_var"], model[1].running_var)  # copied: the live value at step 9
    assert torch.equal(out["1.num_batches_tracked"], model[1].num_batches_tracked)
    assert out["0.weight"].dtype == torch.float32
    at6 = posthoc.reconstruct(0.08, step=6)
    assert int(at6["1.num_batches_tracked"]) == 6


def test_snapshots_on_disk_rank0_only_and_reload(tmp_path):
    gen = torch.Generator().manual_seed(2)
    model = small_net()
    other_rank = PostHocEMA(model, snapshot_every=2, directory=tmp_path / "r1", dist=DistInfo(1, 2))
    on_disk = PostHocEMA(model, snapshot_every=2, directory=tmp_path / "r0", dist=DistInfo(0, 2))
    in_memory = PostHocEMA(model, snapshot_every=2)
    for _ in range(6):
        perturb(model, gen)
        for p in (other_rank, on_disk, in_memory):
            p.update(model)
    assert not (tmp_path / "r1").exists()  # rank 1 wrote nothing
    with pytest.raises(KexueError, match="rank 0 only"):
        other_rank.reconstruct(0.07)
    (tmp_path / "r0" / "notes.txt").write_text("not ours")  # foreign files are ignored, never touched
    files = sorted(p.name for p in (tmp_path / "r0").iterdir())
    assert files == ["notes.txt"] + [f"phema-{s:09d}-{k}.safetensors" for s in (2, 4, 6) for k in (0, 1)]
    loaded = load_snapshots(tmp_path / "r0")
    assert [(s.step, round(s.gamma, 2)) for s in loaded] == [(s, g) for s in (2, 4, 6) for g in (6.94, 16.97)]
    expected = in_memory.reconstruct(0.2, step=4)
    for got in (reconstruct(loaded, 0.2, step=4), on_disk.reconstruct(0.2, step=4)):
        assert all(torch.equal(got[k], v) for k, v in expected.items())
    copy = on_disk.copy(0.2, step=4)
    assert torch.equal(copy[0].weight, expected["0.weight"]) and not copy[0].weight.requires_grad


def test_state_dict_round_trip_continues_identically(tmp_path):
    gen = torch.Generator().manual_seed(3)
    model = small_net()
    a = PostHocEMA(model, snapshot_every=2)
    for _ in range(5):
        perturb(model, gen)
        a.update(model)
    b = PostHocEMA(small_net(), snapshot_every=2)
    b.load_state_dict(a.state_dict())
    assert b.step == 5 and len(b.snapshots()) == 4
    for _ in range(3):
        perturb(model, gen)
        a.update(model)
        b.update(model)
    ra, rb = a.reconstruct(0.12), b.reconstruct(0.12)
    assert all(torch.equal(ra[k], rb[k]) for k in ra)
    with pytest.raises(KexueError, match="gamma"):
        PowerEMA(model, 0.2).load_state_dict(a.profiles[0].state_dict())


def test_checkpointed_through_runtime_ema_slot(tmp_path):
    """``Runtime(ema=PostHocEMA)`` saves the profiles and in-memory snapshots and restores them."""
    from kexue.train.runtime import Runtime

    gen = torch.Generator().manual_seed(4)
    model = small_net()
    posthoc = PostHocEMA(model, snapshot_every=2)
    rt = Runtime(None, directory=tmp_path, model=model, ema=posthoc)
    for _ in range(4):
        perturb(model, gen)
        posthoc.update(model)
        rt.end_step()
    path = rt.save()
    fresh = PostHocEMA(small_net(), snapshot_every=2)
    Runtime(None, directory=tmp_path, model=small_net(), ema=fresh).load(path)
    assert fresh.step == 4 and [s.step for s in fresh.snapshots()] == [2, 2, 4, 4]
    a, b = posthoc.reconstruct(0.15, step=4), fresh.reconstruct(0.15, step=4)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("make, match", [
    (lambda m: PowerEMA(m), "exactly one of sigma_rel and gamma"),
    (lambda m: PowerEMA(m, 0.1, gamma=3.0), "exactly one of sigma_rel and gamma"),
    (lambda m: PowerEMA(m, gamma=-0.5), "gamma must be >="),
    (lambda m: PowerEMA(m, 0.4), "sigma_rel must be in"),
    (lambda m: PostHocEMA(m, snapshot_every=0), "snapshot_every must be a positive int"),
    (lambda m: PostHocEMA(m, (), snapshot_every=5), "at least one profile"),
    (lambda m: PostHocEMA(m, snapshot_every=5).reconstruct(0.1), "no snapshots"),
])
def test_bad_arguments_are_clear_errors(make, match):
    with pytest.raises(KexueError, match=match):
        make(small_net())


TORCHRUN_SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path
    import torch
    from torch import nn
    from kexue.train import distributed
    from kexue.train.posthoc_ema import PostHocEMA

    out = Path(sys.argv[1])
    info = distributed.init_from_env("cpu")
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 1)).double()
    net = distributed.wrap(model, info)
    # built on the wrapped model, default dist (from torchrun's environment); a folder per rank shows who writes
    posthoc = PostHocEMA(net, snapshot_every=3, directory=out / f"rank{info.rank}", dtype=torch.float64)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for step in range(6):
        x = torch.randn(8, 4, generator=torch.Generator().manual_seed(step), dtype=torch.float64)
        share = slice(info.rank * 8 // info.world_size, (info.rank + 1) * 8 // info.world_size)
        loss = (net(x[share]) - x[share].sin().sum(1, keepdim=True)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        posthoc.update(net)
    distributed.shutdown(info)
''')


def test_under_torchrun_only_rank0_writes_snapshots(tmp_path, launcher):
    """Two gloo ranks (torchrun) against one process with the same global batch: rank 0 writes the same snapshots
    (plain module keys), rank 1 writes nothing."""
    script = tmp_path / "train.py"
    script.write_text(TORCHRUN_SCRIPT)
    proc = launcher.start(script, tmp_path / "two", nproc=2)
    threads, argv = torch.get_num_threads(), sys.argv
    try:
        sys.argv = [str(script), str(tmp_path / "one")]
        runpy.run_path(str(script), run_name="__main__")  # the one-process reference, here, meanwhile
    finally:
        torch.set_num_threads(threads)
        sys.argv = argv
    launcher.finish(proc, timeout=120)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["rank0"]
    one, two = load_snapshots(tmp_path / "one" / "rank0"), load_snapshots(tmp_path / "two" / "rank0")
    assert [(s.step, s.gamma) for s in one] == [(s.step, s.gamma) for s in two] and len(one) == 4
    for a, b in zip(one, two, strict=True):
        ta, tb = load_tensors(a.path)[0], load_tensors(b.path)[0]
        assert sorted(ta) == ["0.bias", "0.weight", "2.bias", "2.weight"] == sorted(tb)
        for k in ta:
            torch.testing.assert_close(tb[k], ta[k], rtol=1e-10, atol=1e-12)
