"""energy-stackedmnist: the summaries are the means over the training seeds, and each seed's model is its own."""

import json

import pytest

from kexue.experiments.registry import get
from kexue.experiments.runner import run_experiment


def test_summaries_are_means_over_seeds(tmp_path):
    result = run_experiment("energy-stackedmnist", overrides=get("energy-stackedmnist").smoke, out=tmp_path,
                            argv=["test"])
    m = result.metrics
    summary = json.loads((result.path / "summary.json").read_text())
    for method, key in (("meg", "modes_meg"), ("wgan-gp", "modes_wgan_gp")):
        per_seed = [m[f"{method}_s{s}_modes"] for s in (0, 1)]
        assert summary[key]["value"] == pytest.approx(sum(per_seed) / 2)
    assert summary["kl_meg"]["value"] == pytest.approx((m["meg_s0_kl"] + m["meg_s1_kl"]) / 2)
    assert summary["modes_meg"]["bar"] == 900
    # the seeds train different models (different samples, so in general different mode histograms)
    assert (m["meg_s0_modes"], m["meg_s0_kl"]) != (m["meg_s1_modes"], m["meg_s1_kl"])
    checkpoints = {p.name for p in (result.path / "checkpoints").iterdir()}
    assert checkpoints == {"meg-s0", "meg-s1", "wgan-gp-s0", "wgan-gp-s1"}
