"""wgan-2d trains each (data set, variant) pair the same whichever process runs it, and resumes a finished pair."""

import multiprocessing as mp
from dataclasses import replace

import numpy as np
import pytest

from kexue.experiments.wgan_2d import Config, _train_one, _worker

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


def test_a_finished_pair_resumes_without_training(tmp_path):
    cfg = replace(TINY, variants=("sn",))
    first = _train_one(cfg, "swissroll", "sn", "cpu", str(tmp_path))
    steps = []
    again = _train_one(cfg, "swissroll", "sn", "cpu", str(tmp_path), on_step=steps.append)
    assert steps == []  # loaded the finished checkpoint: no training step ran
    _same(first, again)
