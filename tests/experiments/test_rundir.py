import json
from dataclasses import dataclass

import pytest

from kexue.errors import ConfigError
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.rundir import collect_env, create_run_dir, run_label, start_run


def test_run_dirs_are_unique_and_numbered(tmp_path):
    a = create_run_dir(tmp_path, "x-s0")
    b = create_run_dir(tmp_path, "x-s0")
    (tmp_path / "00007-other").mkdir()
    c = create_run_dir(tmp_path, "y")
    assert [a.name, b.name, c.name] == ["00000-x-s0", "00001-x-s0", "00008-y"]


def test_run_label_is_readable_and_safe():
    assert run_label("exp", {}, 3) == "exp-s3"
    assert run_label("exp", {"b": "1", "a": "x/y z"}, 0) == "exp-a=x_y_z,b=1-s0"


@dataclass
class Cfg(ExperimentConfig):
    steps: int = param(2, "steps", min=1)


def test_start_run_writes_config_env_and_status(tmp_path):
    run = start_run(tmp_path, "demo", Cfg(steps=5), {"steps": 5}, ["kexue", "run", "demo"])
    config = json.loads((run.path / "config.json").read_text())
    assert config == {"experiment": "demo", "seed": 0, "device": "cpu", "max_rollbacks": 5, "steps": 5}
    assert (run.path / "argv.txt").read_text().strip() == "kexue run demo"
    assert json.loads((run.path / "status.json").read_text())["status"] == "running"
    assert (run.path / "figures").is_dir() and (run.path / "checkpoints").is_dir()


def test_summary_and_metrics(tmp_path):
    run = start_run(tmp_path, "demo", Cfg(), {}, [])
    run.summary("acc", 0.9, bar=0.8)
    run.summary("err", 0.3, bar=0.2, direction="min", paper=0.1)
    run.summary("nan", float("nan"), bar=1.0)
    run.summary("free", 1.0)
    summary = json.loads((run.path / "summary.json").read_text())
    assert summary["acc"]["met"] is True and summary["err"]["met"] is False
    assert summary["nan"]["met"] is False and summary["free"]["met"] is None
    assert summary["err"]["paper"] == 0.1
    run.log(1, loss=0.5, vec=[1, 2])
    run.log(2, loss=float("inf"))
    lines = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert lines == [{"step": 1, "loss": 0.5, "vec": [1, 2]}, {"step": 2, "loss": "inf"}]
    with pytest.raises(ValueError, match="direction"):
        run.summary("x", 1.0, direction="up")


def test_cuda_request_without_cuda_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    with pytest.raises(ConfigError, match="CUDA"):
        start_run(tmp_path, "demo", Cfg(device="cuda"), {}, [])
    assert list(tmp_path.iterdir()) == []


def test_env_records_versions_and_git():
    env = collect_env("cpu")
    for key in ("python", "torch", "numpy", "git_sha", "git_dirty", "torch_threads", "device"):
        assert key in env
