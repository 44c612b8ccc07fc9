"""wgan-mnist killed in its second variant and resumed: the same scores, and each record logged once."""

import json
from collections import Counter

import pytest

from kexue.experiments.registry import get
from kexue.experiments.runner import run_experiment
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
