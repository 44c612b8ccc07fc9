"""energy-2d's protocol pieces: the quality metric against the data generator, the baseline's penalty weight, and
the recipe table's preset lookup."""

import math

import pytest
import torch

from kexue.experiments import energy_2d
from kexue.experiments._energy import build_step, preset_value, toy_metrics, toy_set


@pytest.mark.parametrize("name, modes", [("25gaussians", 25), ("8gaussians", 8)])
def test_quality_metric_matches_the_data_generator(name, modes):
    """Fresh draws of the data itself: every mode covered, a share P(chi2_2 <= 9) = 1 - e^{-4.5} within 3 std of
    their centre (so the metric's std is the generator's 0.05/2.828 and 0.02/1.414), and a near-uniform histogram."""
    toy = toy_set(name, 40_000, seed=1)
    m = toy_metrics(toy, toy.data)
    within = 1 - math.exp(-4.5)  # 0.98889
    assert m["modes"] == modes
    assert abs(m["high_quality"] - within) < 4 * math.sqrt(within * (1 - within) / len(toy.data))
    assert m["kl"] < 0.01
    # the same points spread by 2x their noise fall out of the 3-sigma discs more often: P(chi2_2 <= 9/4)
    centre = toy.centres[torch.cdist(toy.data, toy.centres).argmin(1)]
    wide = toy_metrics(toy, centre + 2 * (toy.data - centre))
    assert abs(wide["high_quality"] - (1 - math.exp(-9 / 8))) < 0.01


def test_baseline_gradient_penalty_weight_reaches_the_critic_loss():
    """build_step's gp_weight is the weight of the WGAN-GP penalty: loss(w) = -W + w * GP for the same batch."""
    G, D = torch.nn.Linear(2, 2), torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    real, fake = torch.randn(16, 2), torch.randn(16, 2)
    losses = {}
    for w in (0.0, 0.1, 10.0):
        step = build_step("wgan-gp", G, D, None, sample_real=lambda: real, sample_z=lambda n: torch.randn(n, 2),
                          lam=0.0, mi_weight=0.0, estimator="jsd", n_critic=1, lr=1e-4, betas=(0.5, 0.9),
                          gp_weight=w)
        torch.manual_seed(0)  # the same interpolates
        loss, extra = step.critic_loss(real, fake, None)
        losses[w] = (loss.item(), extra["w_estimate"].item(), extra["gp"].item())
    w_est, gp = losses[0.0][1], losses[0.0][2]
    for w, (loss, _, _) in losses.items():
        assert loss == pytest.approx(-w_est + w * gp, rel=1e-5, abs=1e-6)


def test_recipe_presets():
    """The audit table reads each preset's override, else the field default."""
    assert preset_value(energy_2d.Config, energy_2d.PRESETS, "quick", "n_critic") == 5
    assert preset_value(energy_2d.Config, energy_2d.PRESETS, "full", "width") == 512
    assert preset_value(energy_2d.Config, energy_2d.PRESETS, "full", "wgan_lambda") == 0.1
    assert preset_value(energy_2d.Config, energy_2d.PRESETS, "quick", "seeds") == (0, 1, 2)
