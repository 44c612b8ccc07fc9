import dataclasses
import html
import json
import re
from pathlib import Path

import pytest

import kexue.experiments.registry as registry
import kexue.experiments.tour as tour
from kexue.experiments.config import ExperimentConfig
from kexue.experiments.registry import POSTS, Experiment


def _broken(cfg, run):
    run.summary("never", 1.0)
    raise RuntimeError("deliberate failure")


@pytest.fixture
def fast_registry(monkeypatch):
    """The real registry with each quick preset shrunk to its smoke size, plus an experiment that fails."""
    real = registry.experiments()
    # "broken" stands in as post 1's headline, so post 1's real headline steps aside
    fast = {n: dataclasses.replace(e, presets={**e.presets, "quick": {**e.presets["quick"], **e.smoke}},
                                   headline=e.headline and e.post != 1)
            for n, e in real.items()}
    fast["broken"] = Experiment("broken", 1, "always fails", ExperimentConfig, _broken, headline=True)
    monkeypatch.setattr(registry, "experiments", lambda: fast)
    monkeypatch.setattr(tour, "experiments", lambda: fast)
    return fast


def test_plan_covers_every_post(fast_registry):
    plan = tour.plan_tour()
    assert [p for p, _ in plan] == [p.number for p in POSTS]
    assert dict(plan)[5] == "init-geometry"
    assert dict(plan)[1] == "broken"


def test_tour_goes_on_after_a_failure_and_writes_the_index(fast_registry, tmp_path):
    logs = []
    index = tour.run_tour(out=tmp_path, log=logs.append)
    page = index.read_text()
    assert "http-equiv=\"refresh\"" not in page  # finished tours stop reloading
    assert page.count('<article class="card') == len(POSTS)
    for name in ("init-geometry", "ot-duality"):  # every card states its experiment's claim
        assert html.escape(tour.CLAIMS[name].text) in page
    # each done card shows its number large; so does the failed one, from what it recorded before failing
    assert page.count('class="hl-value"') == page.count('data-status="done"') + 1
    assert "status failed" in page and "deliberate failure" in page
    assert page.count("status done") == sum(1 for e in fast_registry.values() if e.headline) - 1
    # Every relative link and image resolves to a file in the tour folder.
    for ref in re.findall(r'(?:href|src)="([^"]+)"', page):
        if not ref.startswith(("http", "data:")):
            assert (index.parent / ref).is_file(), ref
    failed = next(p for p in index.parent.iterdir() if "broken" in p.name)
    status = json.loads((failed / "status.json").read_text())
    assert status["status"] == "failed" and "deliberate failure" in status["error"]
    assert "RuntimeError" in (failed / "error.txt").read_text()
    assert any("failed" in line for line in logs)


def test_only_rejects_unknown_names(fast_registry, tmp_path):
    with pytest.raises(Exception, match="unknown experiment"):
        tour.run_tour(only=["nope"], out=tmp_path)
    assert not any(Path(tmp_path).iterdir())


def test_every_experiment_states_its_claim():
    claims = tour.CLAIMS
    assert set(claims) == set(registry.experiments()), "add the new experiment's one-sentence claim to tour.CLAIMS"
    for name, claim in claims.items():
        assert claim.text.endswith(".") and len(claim.text) < 200 and "\n" not in claim.text, name
