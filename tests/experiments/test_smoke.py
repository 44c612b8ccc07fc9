"""Every registered experiment runs (quick preset + its smoke overrides) into a fresh run directory."""

import json

import pytest

from kexue.eval.report import load_run
from kexue.experiments.registry import POSTS, experiments
from kexue.experiments.runner import run_experiment

EXPERIMENTS = experiments()


def test_registry_is_consistent():
    assert EXPERIMENTS, "no experiment registered"
    for exp in EXPERIMENTS.values():
        assert 1 <= exp.post <= len(POSTS)
        assert {"quick", "full"} <= set(exp.presets), exp.name
        assert exp.description and len(exp.description) < 120
    for post in POSTS:
        assert sum(e.headline for e in EXPERIMENTS.values() if e.post == post.number) <= 1, post


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_quick_preset_smoke(name, tmp_path):
    exp = EXPERIMENTS[name]
    result = run_experiment(name, preset="quick", overrides=exp.smoke, out=tmp_path, argv=["test"])
    assert result.status == "done"
    path = result.path
    for item in ("config.json", "env.json", "argv.txt", "metrics.jsonl", "status.json", "report.md", "report.html"):
        assert (path / item).is_file(), item
    config = json.loads((path / "config.json").read_text())
    assert config["experiment"] == name
    for key, value in exp.smoke.items():
        assert config[key] == (list(value) if isinstance(value, tuple) else value)
    run = load_run(path)
    assert run["status"]["status"] == "done"
    assert run["metrics"] and run["metrics"][-1].get("final") is True
    figures = [b["path"] for b in run["blocks"] if b["type"] == "figure"]
    assert figures, "an experiment should make at least one figure"
    for fig in figures:
        assert (path / fig).stat().st_size > 1000
    assert run["summary"], "an experiment should record headline metrics with run.summary"
    html = (path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)
