"""ogan-mnist paths the smoke test does not take: the two-player form with an EMA, and checkpoints per model."""

import json
from dataclasses import replace

import pytest
import torch

from kexue.experiments.ogan_mnist import Config, make_ema
from kexue.experiments.registry import get
from kexue.experiments.runner import run_experiment


def test_two_player_form_with_ema(tmp_path):
    exp = get("ogan-mnist")
    overrides = {**exp.smoke, "form": "two-player", "norm": "bn", "ablations": ("gan-qp",), "ema_decay": 0.9,
                 "checkpoint_every": 2, "steps": 4, "seeds": ()}
    result = run_experiment("ogan-mnist", preset="quick", overrides=overrides, out=tmp_path, argv=["test"])
    assert result.status == "done"
    for name in ("o-gan", "gan-qp"):
        assert [p.name for p in (result.path / "checkpoints" / name).iterdir()] == ["step-000000004"]
    lines = [json.loads(line) for line in (result.path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in lines if r.get("variant") == "o-gan" and "rho" in r and "step" in r]
    assert [r["step"] for r in logged] == [2, 4]
    assert -1 <= result.metrics["rho_o-gan"] <= 1 and "fid_ratio" in result.metrics


def test_ema_horizon_is_a_fraction_of_the_run_with_a_running_mean_warm_up():
    cfg = replace(Config(), steps=2000, ema_half_life=0.05)
    model = torch.nn.Linear(1, 1, bias=False)
    ema = make_ema(cfg, model)
    assert ema.decay == pytest.approx(0.5 ** (1 / 100))  # half-life 0.05 x 2000 = 100 steps
    weights = [model.weight.item()]
    with torch.no_grad():
        for w in (1.0, 2.0, 6.0):
            model.weight.fill_(w)
            ema.update(model)
            weights.append(w)
            # warm-up: the plain mean of every weight so far, the initial one included
            assert float(ema.averaged()["weight"]) == pytest.approx(sum(weights) / len(weights))
    assert ema.decay_at(10_000) == ema.decay
    # without a half-life: Keras' zero-debiased fixed decay, or no EMA
    assert make_ema(replace(cfg, ema_half_life=0.0, ema_decay=0.99), model).decay == 0.99
    assert make_ema(replace(cfg, ema_half_life=0.0, ema_decay=0.0), model) is None


def test_seeds_give_one_model_per_seed_and_summaries_over_seeds(tmp_path):
    exp = get("ogan-mnist")
    overrides = {**exp.smoke, "seeds": (3, 4), "gan_qp_seeds": 1, "ablations": ("gan-qp", "mse")}
    result = run_experiment("ogan-mnist", preset="quick", overrides=overrides, out=tmp_path, argv=["test"])
    assert result.status == "done"
    assert sorted(p.name for p in (result.path / "checkpoints").iterdir()) == [
        "gan-qp-s3", "mse-s3", "mse-s4", "o-gan-s3", "o-gan-s4"]
    m = result.metrics
    assert m["rho_o-gan"] == pytest.approx((m["rho_o-gan_s3"] + m["rho_o-gan_s4"]) / 2)
    assert m["fid_ratio_mse"] == pytest.approx((m["fid_mse_s3"] / m["fid_o-gan_s3"]
                                                + m["fid_mse_s4"] / m["fid_o-gan_s4"]) / 2)
    assert m["fid_ratio"] == pytest.approx(m["fid_o-gan_s3"] / m["fid_gan-qp_s3"])
    summary = json.loads((result.path / "summary.json").read_text())
    assert summary["fid_ratio_mse"]["bar"] == 2.0 and summary["rho"]["value"] == pytest.approx(m["rho_o-gan"])
