"""wgan-2d trains each (data set, variant) pair the same whichever process runs it, and resumes a finished pair."""

import multiprocessing as mp
from dataclasses import replace

import numpy as np
import pytest
import torch

from kexue.experiments._wgan_duality import fit_critic, w1_floor
from kexue.experiments.wgan_2d import Config, _train_one, _worker
from kexue.ops.ot import wasserstein

TINY = Config(steps=6, n_critic=2, batch_size=32, width=8, depth=1, log_every=3, w1_batch=16, eval_samples=100,
              pool=1000, refit_steps=2, workers=1)


def _same(a: dict, b: dict) -> None:
    assert a["history"] == b["history"]
    for key in ("w1_final", "refit_estimate", "modes_covered", "high_quality"):
        assert a.get(key) == b.get(key), key
    np.testing.assert_array_equal(a["fake"], b["fake"])
    np.testing.assert_array_equal(a["grid"][2], b["grid"][2])


@pytest.mark.slow  # a spawned process imports torch and kexue afresh: 19 s on a busy 2-core machine
def test_a_worker_process_gives_the_in_process_result(tmp_path):
    here = _train_one(TINY, "8gaussians", "gp", "cpu", str(tmp_path / "here"))
    with mp.get_context("spawn").Pool(1) as pool:
        (there,) = pool.map(_worker, [(TINY, "8gaussians", "gp", "cpu", str(tmp_path / "there"))])
    _same(here, there)
    assert len(here["history"]) == 2 and here["num_modes"] == 8


class _Bar:
    """A progress bar that records its updates."""

    def __init__(self) -> None:
        self.updates: list[int] = []

    def update(self, n: int) -> None:
        self.updates.append(n)

    def set_postfix(self, *args, **kwargs) -> None:
        pass


def test_a_finished_pair_resumes_without_training(tmp_path):
    cfg = replace(TINY, variants=("sn",))
    first = _train_one(cfg, "swissroll", "sn", "cpu", str(tmp_path))
    bar = _Bar()
    again = _train_one(cfg, "swissroll", "sn", "cpu", str(tmp_path), bar=bar)
    assert bar.updates == [cfg.steps]  # loaded the finished checkpoint: the bar skips ahead, no training step ran
    _same(first, again)


def test_fresh_critic_recovers_a_known_w1():
    # Two tight 2-D Gaussians, the second shifted by v with |v| = 1: W1 = 1 exactly. The one-sided GP critic's
    # optimum is linear with slope 1 + |v|/(2 lam), so its gap is |v| + |v|^2/(4 lam); the exact W1 of finite samples
    # minus its data-vs-data floor estimates |v| too.
    v, std, lam = torch.tensor([0.6, 0.8]), 0.1, 10.0

    def p(n, g):
        return std * torch.randn(n, 2, generator=g)

    def q(n, g):
        return std * torch.randn(n, 2, generator=g) + v

    g = torch.Generator().manual_seed(0)
    x_eval, y_eval = p(20_000, g), q(20_000, g)
    fit = fit_critic(p, q, x_eval, y_eval, width=32, depth=2, steps=300, batch=256, lr=1e-3, gp_weight=lam, seed=0)
    assert fit["estimate"] == pytest.approx(1 + 1 / (4 * lam), abs=0.02)
    assert fit["grad_q99"] == pytest.approx(1 + 1 / (2 * lam), abs=0.3)
    n = 1000
    floor = w1_floor(lambda i: p(2 * n, g), n, draws=2)
    w1 = wasserstein(p(n, g).double(), q(n, g).double()).item()
    assert 0 < floor < 0.05
    assert w1 - floor == pytest.approx(1.0, abs=0.03)
    assert abs(fit["estimate"] - (w1 - floor)) / (w1 - floor) < 0.1


def test_duality_points_at_the_declared_iterations_and_on_resume(tmp_path):
    cfg = replace(TINY, variants=("gp-one-sided",), refit_at=(0, 3, 6, 99), refit_critic_steps=3, refit_batch=16,
                  refit_points=60, refit_eval_points=200, refit_floor_draws=1)
    first = _train_one(cfg, "8gaussians", "gp-one-sided", "cpu", str(tmp_path))
    assert [r["step"] for r in first["duality"]] == [0, 3, 6]  # 99 > steps is dropped
    for r in first["duality"]:
        assert r["w1_minus_floor"] == pytest.approx(r["w1"] - first["duality_floor"])
        assert r["one_sided_rel_err"] == pytest.approx(abs(r["one_sided_estimate"] - r["w1_minus_floor"])
                                                       / r["w1_minus_floor"])
    again = _train_one(cfg, "8gaussians", "gp-one-sided", "cpu", str(tmp_path))
    assert again["duality"] == first["duality"]
    assert all(np.isfinite(r["w1_extrapolated"]) for r in first["duality"])
    # the duality test uses its own RNGs: the training is the same without it
    other = _train_one(replace(cfg, refit_at=()), "8gaussians", "gp-one-sided", "cpu", str(tmp_path / "none"))
    assert other["duality"] == [] and other["history"] == first["history"]
