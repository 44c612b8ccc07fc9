"""Resolve an experiment's config and run it into a fresh run directory."""

import json
import os
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kexue.errors import ConfigError
from kexue.eval.report import read_status
from kexue.experiments.config import ExperimentConfig, apply_overrides, validate
from kexue.experiments.registry import Experiment, get
from kexue.experiments.rundir import RankRun, reopen_run, start_run, write_status
from kexue.train import distributed
from kexue.train.checkpoint import list_checkpoints, load_checkpoint
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


def resume_config(run_dir: str | Path, exp: Experiment, overrides: dict[str, Any] | None = None,
                  seed: int | None = None, device: str | None = None) -> ExperimentConfig:
    """The config of an existing run, for ``kexue run NAME --resume RUN_DIR``.

    The run's saved ``config.json`` is authoritative; explicit overrides, seed or device must agree with it.

    Raises:
        ConfigError: the folder does not exist or is not a run of ``exp``, or an override contradicts the run.
    """
    path = Path(run_dir)
    if not path.is_dir():
        raise ConfigError(f"cannot resume: run directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise ConfigError(f"cannot resume: {path} has no config.json (not a kexue run directory)")
    read_status(path)  # a folder that kexue created, or an error
    try:
        saved = json.loads((path / "config.json").read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot resume: {path / 'config.json'} is not valid JSON ({err})") from None
    if not isinstance(saved, dict):
        raise ConfigError(f"cannot resume: {path / 'config.json'} is not a JSON object")
    name = saved.pop("experiment", None)
    if name != exp.name:
        raise ConfigError(f"cannot resume: {path} is a run of {name!r}, not {exp.name!r}")
    cfg = apply_overrides(validate(exp.config()), saved)
    asked = dict(overrides or {})
    asked.update({k: v for k, v in (("seed", seed), ("device", device)) if v is not None})
    if asked:
        wanted = apply_overrides(cfg, asked)
        diff = [f"{k}={getattr(wanted, k)!r} (run has {getattr(cfg, k)!r})" for k in asked
                if getattr(wanted, k) != getattr(cfg, k)]
        if diff:
            raise ConfigError(f"cannot resume {path} with a different config: {', '.join(diff)}; "
                              "drop these options or start a new run")
    return cfg


def check_checkpoints(run_dir: str | Path) -> None:
    """Load the newest checkpoint in every checkpoint folder of a run (``checkpoints/`` and its sub-folders, one
    per model), so that a damaged one is an error before a resume touches the run.

    Raises:
        KexueError: a newest checkpoint is missing files, truncated or corrupt; the message names it.
    """
    for folder, subdirs, _ in os.walk(Path(run_dir) / "checkpoints"):
        subdirs[:] = [d for d in subdirs if not d.startswith(("step-", "."))]  # checkpoints, temp folders
        if found := list_checkpoints(folder):
            load_checkpoint(found[-1][1])


@dataclass
class RunResult:
    path: Path
    status: str  # "done" or "failed"
    metrics: dict
    seconds: float
    error: str | None = None
    is_main: bool = True  # False on DDP ranks other than 0, which write nothing (and print nothing)


def run_experiment(name: str, *, preset: str = "quick", overrides: dict[str, Any] | None = None,
                   seed: int | None = None, device: str | None = None, out: str | Path = "runs",
                   argv: list[str] | None = None, raise_errors: bool = True,
                   resume: str | Path | None = None) -> RunResult:
    """Run experiment ``name`` into a new folder under ``out`` and render its report.

    The run directory records a failure too (``status.json`` with the error, the traceback in ``error.txt``, and a
    report of whatever was written before it failed). With ``raise_errors=False`` the failure is returned instead
    of raised (the tour uses this to go on with the next experiment).

    With ``resume=RUN_DIR`` the existing run directory is reopened with its saved config (see
    :func:`resume_config`) and the experiment continues from its latest checkpoint. Under ``torchrun`` every rank
    runs the experiment; only rank 0 writes (the others get a :class:`RankRun`).
    """
    from kexue.eval.report import render_report

    exp = get(name)
    if resume is not None:
        cfg = resume_config(resume, exp, overrides, seed, device)
        check_checkpoints(resume)
    else:
        cfg = resolve_config(exp, preset, overrides, seed, device)
    label = dict(overrides or {})
    dist = distributed.init_from_env(cfg.device)
    if dist.is_main:
        run = reopen_run(resume, cfg, argv) if resume is not None else start_run(out, exp.name, cfg, label, argv)
    path = distributed.broadcast_object(str(run.path) if dist.is_main else None, dist)
    if not dist.is_main:
        run = RankRun(Path(path), str(dist.device), cfg.seed)
    run.device = dist.device if dist.distributed else run.device
    seed_everything(cfg.seed)
    start = time.time()
    try:
        metrics = exp.run(cfg, run) or {}
    except BaseException as err:
        seconds = time.time() - start
        if not dist.is_main or not run.written:  # a resume that failed before it changed anything: keep the run
            raise
        (run.path / "error.txt").write_text(traceback.format_exc())
        message = f"{type(err).__name__}: {err}"
        write_status(run.path, "failed", seconds=seconds, error=message, preset=preset)
        render_report(run.path)
        if raise_errors or not isinstance(err, Exception):
            raise
        return RunResult(run.path, "failed", {}, seconds, message)
    seconds = time.time() - start
    if not dist.is_main:
        return RunResult(run.path, "done", metrics, seconds, is_main=False)
    run.log(final=True, **metrics)
    write_status(run.path, "done", seconds=seconds, preset=preset)
    render_report(run.path)
    return RunResult(run.path, "done", metrics, seconds)


def dry_run(name: str, **kwargs: Any) -> dict:
    """The resolved config as a dict, without running anything."""
    exp = get(name)
    return {"experiment": exp.name, **asdict(resolve_config(exp, **kwargs))}
