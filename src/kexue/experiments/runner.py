"""Resolve an experiment's config and run it into a fresh run directory."""

import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kexue.errors import ConfigError
from kexue.experiments.config import ExperimentConfig, apply_overrides, validate
from kexue.experiments.registry import Experiment, get
from kexue.experiments.rundir import start_run, write_json
from kexue.train.seed import seed_everything


def resolve_config(exp: Experiment, preset: str = "quick", overrides: dict[str, Any] | None = None,
                   seed: int | None = None, device: str | None = None) -> ExperimentConfig:
    """Defaults <- preset <- overrides <- seed/device, validated."""
    if preset not in exp.presets:
        raise ConfigError(f"unknown preset {preset!r} for {exp.name}; choose one of: {', '.join(exp.presets)}")
    cfg = validate(exp.config())
    cfg = apply_overrides(cfg, exp.presets[preset])
    cfg = apply_overrides(cfg, overrides or {})
    extra = {k: v for k, v in (("seed", seed), ("device", device)) if v is not None}
    return apply_overrides(cfg, extra)


@dataclass
class RunResult:
    path: Path
    status: str  # "done" or "failed"
    metrics: dict
    seconds: float
    error: str | None = None


def run_experiment(name: str, *, preset: str = "quick", overrides: dict[str, Any] | None = None,
                   seed: int | None = None, device: str | None = None, out: str | Path = "runs",
                   argv: list[str] | None = None, raise_errors: bool = True) -> RunResult:
    """Run experiment ``name`` into a new folder under ``out`` and render its report.

    The run directory records a failure too (``status.json`` with the error, the traceback in ``error.txt``, and a
    report of whatever was written before it failed). With ``raise_errors=False`` the failure is returned instead
    of raised (the tour uses this to go on with the next experiment).
    """
    from kexue.eval.report import render_report

    exp = get(name)
    cfg = resolve_config(exp, preset, overrides, seed, device)
    label = dict(overrides or {})
    run = start_run(out, exp.name, cfg, label, argv)
    seed_everything(cfg.seed)
    start = time.time()
    try:
        metrics = exp.run(cfg, run) or {}
    except BaseException as err:
        seconds = time.time() - start
        (run.path / "error.txt").write_text(traceback.format_exc())
        message = f"{type(err).__name__}: {err}"
        write_json(run.path / "status.json", {"status": "failed", "seconds": seconds, "error": message,
                                              "preset": preset})
        render_report(run.path)
        if raise_errors or not isinstance(err, Exception):
            raise
        return RunResult(run.path, "failed", {}, seconds, message)
    seconds = time.time() - start
    run.log(final=True, **metrics)
    write_json(run.path / "status.json", {"status": "done", "seconds": seconds, "preset": preset})
    render_report(run.path)
    return RunResult(run.path, "done", metrics, seconds)


def dry_run(name: str, **kwargs: Any) -> dict:
    """The resolved config as a dict, without running anything."""
    exp = get(name)
    return {"experiment": exp.name, **asdict(resolve_config(exp, **kwargs))}
