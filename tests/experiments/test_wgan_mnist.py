"""wgan-mnist: its generator EMA's schedule, and a run killed in its second model and resumed (the same scores,
each record logged once)."""

import json
from collections import Counter

import pytest
import torch

from kexue.experiments.registry import get
from kexue.experiments.runner import run_experiment
from kexue.experiments.wgan_mnist import generator_ema
from kexue.train import runtime

SMOKE = {**get("wgan-mnist").smoke, "steps": 3}  # checkpoints (and scores) after every step


class Killed(BaseException):
    """Not an Exception: the runner re-raises it like a KeyboardInterrupt."""


def _records(path):
    lines = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if "fid" in r and r.get("variant") != "real"]


@pytest.mark.slow  # three smoke runs of the experiment: about a minute
def test_killed_and_resumed_run_matches_the_uninterrupted_one(tmp_path, monkeypatch):
    full = run_experiment("wgan-mnist", overrides=SMOKE, out=tmp_path / "a", argv=["test"])

    original = runtime.Runtime.end_step
    calls = []

    def end_step_then_die(self, **metrics):
        original(self, **metrics)
        calls.append(self.step)
        if len(calls) == 5:  # the second step of the second variant
            raise Killed

    monkeypatch.setattr(runtime.Runtime, "end_step", end_step_then_die)
    with pytest.raises(Killed):
        run_experiment("wgan-mnist", overrides=SMOKE, out=tmp_path / "b", argv=["test"])
    monkeypatch.setattr(runtime.Runtime, "end_step", original)
    killed = next((tmp_path / "b").iterdir())

    resumed = run_experiment("wgan-mnist", out=tmp_path / "unused", argv=["test", "--resume"], resume=killed)
    for key, value in full.metrics.items():
        if "seconds" not in key and "time" not in key:
            assert resumed.metrics[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    records = _records(killed)
    assert Counter((r["variant"], r["generator"], r["step"]) for r in records) == \
        Counter((r["variant"], r["generator"], r["step"]) for r in _records(full.path))
    assert all(r["provenance"]["weights_sha256"] and r["provenance"]["reference"] == "mnist/test" for r in records)


def test_generator_ema_is_the_running_mean_then_an_ema_with_a_half_life_relative_to_the_run():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = generator_ema(model, steps=100, half_life=0.1)  # h = 10 iterations
    decay = 0.5 ** (1 / 10)
    assert ema.decay == pytest.approx(decay)
    assert generator_ema(model, steps=1000, half_life=0.1).decay == pytest.approx(0.5 ** (1 / 100))
    shadow = 0.0
    for n in range(1, 41):  # the live weight after the n-th update is n
        with torch.no_grad():
            model.weight.fill_(float(n))
        ema.update(model)
        alpha = min(n / (n + 1), decay)  # warm-up: the plain mean of weights 0..n, until the cap
        shadow = alpha * shadow + (1 - alpha) * n
        if n <= 13:  # n / (n + 1) < decay up to n = 13 (decay / (1 - decay) = 13.9)
            assert shadow == pytest.approx(sum(range(n + 1)) / (n + 1))
        assert ema.copy().weight.item() == pytest.approx(shadow, rel=1e-6)
    assert ema.decay_at(14) == pytest.approx(decay) and ema.decay_at(13) == pytest.approx(13 / 14)
