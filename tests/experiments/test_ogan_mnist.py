"""ogan-mnist paths the smoke test does not take: the two-player form with an EMA, and checkpoints per model."""

import json

from kexue.experiments.registry import get
from kexue.experiments.runner import run_experiment


def test_two_player_form_with_ema(tmp_path):
    exp = get("ogan-mnist")
    overrides = {**exp.smoke, "form": "two-player", "norm": "bn", "ablations": ("gan-qp",), "ema_decay": 0.9,
                 "checkpoint_every": 2, "steps": 4}
    result = run_experiment("ogan-mnist", preset="quick", overrides=overrides, out=tmp_path, argv=["test"])
    assert result.status == "done"
    for name in ("o-gan", "gan-qp"):
        assert [p.name for p in (result.path / "checkpoints" / name).iterdir()] == ["step-000000004"]
    lines = [json.loads(line) for line in (result.path / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in lines if r.get("variant") == "o-gan" and "rho" in r and "step" in r]
    assert [r["step"] for r in logged] == [2, 4]
    assert -1 <= result.metrics["rho_o-gan"] <= 1 and "fid_ratio" in result.metrics
