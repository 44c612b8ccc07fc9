"""``kexue run nvae-mnist --resume``: a killed and resumed run logs and reports what an uninterrupted one does."""

import json

import pytest

from kexue.experiments.registry import get
from kexue.experiments.runner import run_experiment
from kexue.train import runtime

# 8 steps (640 images, batch 32, 0.4 epochs), a log row every 2 steps, a checkpoint every 3
SMOKE = {**get("nvae-mnist").smoke, "epochs": 0.4, "log_every": 2, "checkpoint_every": 3}
TIMINGS = {"seconds_per_step", "cpu_seconds_per_step", "eval_seconds"}


class Killed(BaseException):
    """Not an Exception: the runner re-raises it like a KeyboardInterrupt."""


def _log(path):
    lines = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMINGS} for r in lines if "event" not in r and not r.get("final")]


@pytest.mark.slow
def test_killed_and_resumed_nvae_run_matches_the_uninterrupted_one(tmp_path, monkeypatch):
    full = run_experiment("nvae-mnist", overrides=SMOKE, out=tmp_path / "a", argv=["test"])
    original = runtime.Runtime.end_step

    def end_step_then_die(self, **metrics):
        original(self, **metrics)
        if self.step == 7:  # the last checkpoint is at step 6, mid-way between two log rows
            raise Killed

    monkeypatch.setattr(runtime.Runtime, "end_step", end_step_then_die)
    with pytest.raises(Killed):
        run_experiment("nvae-mnist", overrides=SMOKE, out=tmp_path / "b", argv=["test"])
    monkeypatch.setattr(runtime.Runtime, "end_step", original)
    killed = next((tmp_path / "b").iterdir())
    resumed = run_experiment("nvae-mnist", out=tmp_path / "unused", argv=["test", "--resume"], resume=killed)
    strip = lambda m: {k: v for k, v in m.items() if k not in TIMINGS}  # noqa: E731
    assert strip(resumed.metrics) == strip(full.metrics)
    assert _log(killed) == _log(full.path)  # the same training curve, row for row
    assert json.loads((killed / "summary.json").read_text()) == json.loads((full.path / "summary.json").read_text())
