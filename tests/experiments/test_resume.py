"""``kexue run NAME --resume RUN_DIR``: a run killed mid-way and resumed ends with the uninterrupted run's numbers."""

import json
import shutil

import pytest

from kexue.cli import main
from kexue.data.cache import set_data_dir
from kexue.errors import ConfigError
from kexue.experiments.registry import get
from kexue.experiments.runner import run_experiment
from kexue.train import runtime
from kexue.train.checkpoint import list_checkpoints

# 2 epochs of 8 steps, an evaluation and a checkpoint every 4 steps
SMOKE = get("ema-mnist").smoke


class Killed(BaseException):
    """Not an Exception: the runner re-raises it like a KeyboardInterrupt."""


@pytest.fixture(autouse=True)
def _default_data_dir():
    yield
    set_data_dir(None)  # a test's --data-dir sets it for the process


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The uninterrupted smoke run that killed-and-resumed runs must reproduce."""
    return run_experiment("ema-mnist", overrides=SMOKE, out=tmp_path_factory.mktemp("full"), argv=["test"])


def killed_run(out, monkeypatch):
    """A smoke run killed after step 11 (checkpoints every 4 steps: the last one is at 8)."""
    original = runtime.Runtime.end_step

    def end_step_then_die(self, **metrics):
        original(self, **metrics)
        if self.step == 11:
            raise Killed

    monkeypatch.setattr(runtime.Runtime, "end_step", end_step_then_die)
    with pytest.raises(Killed):
        run_experiment("ema-mnist", overrides=SMOKE, out=out, argv=["test"])
    monkeypatch.setattr(runtime.Runtime, "end_step", original)
    return next(out.iterdir())


def test_killed_and_resumed_run_matches_the_uninterrupted_one(tmp_path, monkeypatch, full):
    killed = killed_run(tmp_path / "b", monkeypatch)
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


def test_a_torn_last_line_is_moved_aside_and_the_resumed_run_matches(tmp_path, monkeypatch, capsys, full):
    """A crash during an append leaves half a line: the resume keeps the complete lines and says so in one line."""
    killed = killed_run(tmp_path / "b", monkeypatch)
    torn = '{"step": 11, "loss": 0.4'
    with open(killed / "metrics.jsonl", "a") as fh:
        fh.write(torn)
    capsys.readouterr()
    assert main(["--quiet", "run", "ema-mnist", "--resume", str(killed)]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "moved 1 torn line(s)" in err, err
    assert json.loads((killed / "summary.json").read_text()) == json.loads((full.path / "summary.json").read_text())
    final = [json.loads(s) for s in (killed / "metrics.jsonl").read_text().splitlines()][-1]
    assert final == json.loads((full.path / "metrics.jsonl").read_text().splitlines()[-1])
    assert torn + "\n" in (killed / "metrics.dropped.jsonl").read_text()


def test_a_failed_resume_leaves_the_run_as_it_was(tmp_path, capsys, full):
    run = shutil.copytree(full.path, tmp_path / "done")
    files = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    # missing data: the experiment fails before it writes anything
    assert main(["--data-dir", str(tmp_path / "empty"), "run", "ema-mnist", "--resume", str(run)]) == 2
    assert "is not in the data folder" in capsys.readouterr().err
    # a truncated newest checkpoint: refused before the run is touched (it turned done into failed)
    tensors = list_checkpoints(run / "checkpoints")[-1][1] / "tensors.safetensors"
    tensors.write_bytes(files[tensors][:100])
    files[tensors] = tensors.read_bytes()
    assert main(["run", "ema-mnist", "--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "corrupt or truncated" in err
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == files


def test_a_loss_that_stays_nan_fails_the_run_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime.Runtime, "_finite", lambda self, loss: self.step < 5)
    sets = [f"{k}={v}" for k, v in SMOKE.items()]
    assert main(["--quiet", "run", "ema-mnist", "--set", *sets, "max_rollbacks=1", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "NaN guard" in err and "max_rollbacks=1" in err and "at step 4" in err, err
    run = next(tmp_path.iterdir())
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "failed" and "NaN guard" in status["error"]
