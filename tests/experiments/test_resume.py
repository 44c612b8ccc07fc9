"""``kexue run NAME --resume RUN_DIR``: a run killed mid-way and resumed ends with the uninterrupted run's numbers."""

import json

import pytest

from kexue.cli import main
from kexue.errors import ConfigError
from kexue.experiments.registry import get
from kexue.experiments.runner import run_experiment
from kexue.train import runtime

# 2 epochs of 8 steps, an evaluation and a checkpoint every 4 steps
SMOKE = get("ema-mnist").smoke


class Killed(BaseException):
    """Not an Exception: the runner re-raises it like a KeyboardInterrupt."""


def test_killed_and_resumed_run_matches_the_uninterrupted_one(tmp_path, monkeypatch):
    full = run_experiment("ema-mnist", overrides=SMOKE, out=tmp_path / "a", argv=["test"])

    original = runtime.Runtime.end_step

    def end_step_then_die(self, **metrics):
        original(self, **metrics)
        if self.step == 11:  # checkpoints every 4 steps: the last one is at 8
            raise Killed

    monkeypatch.setattr(runtime.Runtime, "end_step", end_step_then_die)
    with pytest.raises(Killed):
        run_experiment("ema-mnist", overrides=SMOKE, out=tmp_path / "b", argv=["test"])
    monkeypatch.setattr(runtime.Runtime, "end_step", original)
    killed = next((tmp_path / "b").iterdir())
    assert json.loads((killed / "status.json").read_text())["status"] == "failed"

    resumed = run_experiment("ema-mnist", out=tmp_path / "unused", argv=["test", "--resume"], resume=killed)
    assert resumed.path == killed and not (tmp_path / "unused").exists()
    assert resumed.metrics == full.metrics
    summary = json.loads((killed / "summary.json").read_text())
    assert summary == json.loads((full.path / "summary.json").read_text())
    steps = [json.loads(s).get("step") for s in (killed / "metrics.jsonl").read_text().splitlines()]
    logged = [s for s in steps if s is not None]
    assert logged == sorted(logged)  # the steps lost with the kill were moved out of the log
    assert json.loads((killed / "status.json").read_text())["status"] == "done"


def test_resume_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        run_experiment("ema-mnist", resume=tmp_path / "nope")
    done = run_experiment("ema-dirac", overrides=get("ema-dirac").smoke, out=tmp_path, argv=["test"])
    with pytest.raises(ConfigError, match="is a run of 'ema-dirac', not 'ema-mnist'"):
        run_experiment("ema-mnist", resume=done.path)
    with pytest.raises(ConfigError, match=r"steps=500 \(run has 400\)"):
        run_experiment("ema-dirac", overrides={"steps": "500"}, resume=done.path)
    config_before = (done.path / "config.json").read_text()
    assert main(["run", "ema-dirac", "--resume", str(tmp_path / "nope")]) == 2
    assert (done.path / "config.json").read_text() == config_before
