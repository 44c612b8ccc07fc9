"""The run directory: what one experiment run writes, and the :class:`Run` handle an experiment writes through.

Layout (never overwrites: each run gets a new numbered folder)::

    runs/00003-init-geometry-pairs=2000-s0/
        config.json      resolved config (defaults <- preset <- --set <- --seed/--device)
        argv.txt         the command line
        env.json         python / torch / numpy versions, git sha and dirty flag, device, threads, host
        metrics.jsonl    one JSON object per logged step
        report.json      the report's blocks (text, tables, figures), so ``kexue report`` can re-render
        summary.json     headline metrics: {name: {value, bar, direction, paper, met}}
        status.json      running / done / failed, wall time, error message
        figures/*.png
        checkpoints/
        report.md, report.html
"""

import json
import math
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kexue._fs import drop_jsonl_lines, ensure_folder, write_text_atomic
from kexue.errors import ConfigError
from kexue.eval.report import RUN_FORMAT, read_status

_ID = re.compile(r"^(\d{5})-")


def _slug(text: str, limit: int = 48) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.=,-]+", "_", text).strip("_")
    return slug[:limit]


def create_run_dir(out: str | Path, label: str) -> Path:
    """Create ``out/NNNNN-label/`` with the next free id; never reuses an existing folder.

    Raises:
        ConfigError: ``out`` is a file, lies under a file, or cannot be created or written.
    """
    out = ensure_folder(out, "output folder (--out)")
    while True:
        ids = [int(m.group(1)) for p in out.iterdir() if (m := _ID.match(p.name))]
        path = out / f"{(max(ids) + 1) if ids else 0:05d}-{label}"
        try:
            path.mkdir()  # atomic: fails if another process took this id first
        except FileExistsError:
            continue
        return path


def run_label(name: str, overrides: dict[str, Any] | None, seed: int) -> str:
    """``name[-key=value,...]-sSEED``, the readable part of a run directory's name."""
    suffix = ",".join(f"{k}={v}" for k, v in sorted((overrides or {}).items()))
    return f"{name}-{_slug(suffix)}-s{seed}" if suffix else f"{name}-s{seed}"


def _git(*args: str) -> str | None:
    try:
        cwd = Path(__file__).resolve().parent
        res = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


def collect_env(device: str) -> dict[str, Any]:
    """Versions, git state and hardware, for ``env.json`` and the report header."""
    import kexue

    sha = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain") if sha else None
    env = {
        "kexue": kexue.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "git_sha": sha,
        "git_dirty": bool(status) if status is not None else None,
        "device": device,
        "cuda": torch.version.cuda,
        "gpu": torch.cuda.get_device_name(0) if device == "cuda" and torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    return env


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no nan/inf
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (temp file + rename), so a reader never sees half a file."""
    write_text_atomic(path, json.dumps(_jsonable(obj), indent=2) + "\n")


def write_status(run_dir: Path, status: str, **fields: Any) -> None:
    """Write ``status.json`` (``running``, ``done`` or ``failed``) with kexue's run marker (:data:`RUN_FORMAT`)."""
    write_json(Path(run_dir) / "status.json", {"format": RUN_FORMAT, "status": status, **fields})


class Run:
    """The handle an experiment writes its results through.

    Attributes:
        path: the run directory.
        device: ``torch.device`` the experiment should use.
        seed: the seed already applied to every RNG.
    """

    def __init__(self, path: Path, device: str, seed: int, *, on_first_write: Callable[[], None] | None = None
                 ) -> None:
        self.path = Path(path)
        self.device = torch.device(device)
        self.seed = seed
        self.figures = self.path / "figures"
        self.checkpoints = self.path / "checkpoints"
        self._blocks: list[dict] = []
        self._summary: dict[str, dict] = {}
        self._on_first_write = on_first_write

    @property
    def written(self) -> bool:
        """Whether this handle wrote into the run (a reopened run: whether its state changed since it was read)."""
        return self._on_first_write is None

    def _write(self) -> None:
        if self._on_first_write is not None:
            first, self._on_first_write = self._on_first_write, None
            first()

    # --- metrics --------------------------------------------------------------------------------------------

    def log(self, step: int | None = None, **metrics: Any) -> None:
        """Append one JSON line to ``metrics.jsonl`` (values may be floats, tensors, lists)."""
        record = {"step": step, **metrics} if step is not None else metrics
        self._write()
        with open(self.path / "metrics.jsonl", "a") as fh:
            fh.write(json.dumps(_jsonable(record)) + "\n")

    def drop_metrics_after(self, step: int) -> None:
        """Move the lines of ``metrics.jsonl`` logged after ``step`` to ``metrics.dropped.jsonl`` (a resume or a
        NaN-guard rollback replays those steps, and the log should read as one uninterrupted run)."""
        self._drop_metrics(lambda r: r.get("step") is not None and r["step"] > step)

    def _drop_metrics(self, drop: Callable[[dict], bool]) -> None:
        self._write()
        drop_jsonl_lines(self.path / "metrics.jsonl", drop, self.path / "metrics.dropped.jsonl")

    def summary(self, name: str, value: float, *, bar: float | None = None, direction: str = "max",
                paper: float | None = None, note: str = "") -> None:
        """Record a headline metric: its ``value``, the quality ``bar`` it should meet, and the ``paper``'s number.

        Args:
            direction: ``"max"`` if higher is better (met when value >= bar), ``"min"`` if lower is better.
            note: one short phrase shown beside the number (units, what the bar means).
        """
        if direction not in ("max", "min"):
            raise ValueError(f"direction must be 'max' or 'min', got {direction!r}")
        value = float(value)
        met = None
        if bar is not None and math.isfinite(value):
            met = value >= bar if direction == "max" else value <= bar
        elif bar is not None:
            met = False
        self._summary[name] = {"value": value, "bar": bar, "direction": direction, "paper": paper, "met": met,
                               "note": note}
        self._write()
        write_json(self.path / "summary.json", self._summary)

    # --- report blocks --------------------------------------------------------------------------------------

    def _add(self, block: dict) -> None:
        self._blocks.append(block)
        self._write()
        write_json(self.path / "report.json", self._blocks)

    def section(self, title: str) -> None:
        """Start a report section."""
        self._add({"type": "section", "title": title})

    def text(self, markdown: str) -> None:
        """A paragraph (plain text with ``inline code``, *emphasis* and **bold**)."""
        self._add({"type": "text", "text": markdown.strip()})

    def table(self, header: list[str], rows: list[list[Any]], caption: str = "") -> None:
        """A table; floats are shown with 4 significant digits."""
        fmt = [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in row] for row in rows]
        self._add({"type": "table", "header": [str(h) for h in header], "rows": fmt, "caption": caption})

    def figure(self, fig: Any, name: str, caption: str = "", *, headline: bool = False) -> Path:
        """Save a matplotlib figure as ``figures/<name>.png``, close it, and put it in the report.

        Args:
            headline: this is the run's headline figure (the tour's card shows it); default: the first figure.
        """
        import matplotlib.pyplot as plt

        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ValueError(f"figure name must be letters, digits, '_' or '-', got {name!r}")
        path = self.figures / f"{name}.png"
        self._write()
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        self._add({"type": "figure", "path": f"figures/{name}.png", "caption": caption, "headline": headline})
        return path


def start_run(out: str | Path, name: str, cfg: Any, overrides: dict[str, Any], argv: list[str] | None) -> Run:
    """Create the run directory for ``cfg`` and write ``config.json``, ``argv.txt``, ``env.json``, ``status.json``."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda but torch sees no CUDA device (use --device cpu)")
    path = create_run_dir(out, run_label(name, overrides, cfg.seed))
    (path / "figures").mkdir()
    (path / "checkpoints").mkdir()
    write_json(path / "config.json", {"experiment": name, **asdict(cfg)})
    (path / "argv.txt").write_text(" ".join(argv if argv is not None else sys.argv) + "\n")
    write_json(path / "env.json", collect_env(cfg.device))
    write_status(path, "running", started=time.time())
    return Run(path, cfg.device, cfg.seed)


def reopen_run(path: str | Path, cfg: Any, argv: list[str] | None) -> Run:
    """Reopen an existing run directory to resume it (``--resume``).

    Nothing is written until the run's first write (a log line, a summary, a report block, a figure): only then
    are argv appended, the status set back to running, and the lines of ``metrics.jsonl`` that are not JSON (an
    append torn by a crash, said in one line on stderr) or a finished run's ``final`` line moved to
    ``metrics.dropped.jsonl``. So a resume that fails before (a damaged checkpoint, missing data) leaves the run as
    it was. The config must already have been checked against the run's ``config.json``
    (``runner.resume_config``).
    """
    path = Path(path)
    previous = read_status(path)

    def reopen() -> None:
        # A finished run's final line goes (the resumed run writes its own), and so does a torn last line.
        _, torn = drop_jsonl_lines(path / "metrics.jsonl", lambda r: bool(r.get("final")),
                                   path / "metrics.dropped.jsonl")
        if torn:
            print(f"kexue: {path / 'metrics.jsonl'}: moved {torn} torn line(s) (a crash during an append) to "
                  "metrics.dropped.jsonl", file=sys.stderr)
        with open(path / "argv.txt", "a") as fh:
            fh.write(" ".join(argv if argv is not None else sys.argv) + "\n")
        (path / "figures").mkdir(exist_ok=True)
        (path / "checkpoints").mkdir(exist_ok=True)
        write_status(path, "running", started=time.time(), resumed=int(previous.get("resumed", 0)) + 1)

    return Run(path, cfg.device, cfg.seed, on_first_write=reopen)


class ModelRun:
    """One of several models trained in one run, as :class:`~kexue.train.runtime.Runtime` sees it.

    Its checkpoints go to ``checkpoints/<name>/`` and its log lines are tagged ``{key: name}``, so resuming or
    rolling back one model drops only this model's lines logged after the step it goes back to.
    """

    def __init__(self, run: Run, name: str, key: str = "model") -> None:
        self.run, self.name, self.key = run, name, key
        self.checkpoints = self.path = run.checkpoints / name

    def log(self, step: int | None = None, **metrics: Any) -> None:
        self.run.log(step, **{self.key: self.name}, **metrics)

    def drop_metrics_after(self, step: int) -> None:
        """:meth:`Run.drop_metrics_after` for this model's lines only."""
        self.run._drop_metrics(lambda r: r.get(self.key) == self.name and r.get("step") is not None
                               and r["step"] > step)


class RankRun(Run):
    """The run handle of DDP ranks other than 0: the same interface, and it writes nothing."""

    def log(self, step: int | None = None, **metrics: Any) -> None:
        pass

    def _drop_metrics(self, drop: Callable[[dict], bool]) -> None:
        pass

    def summary(self, name: str, value: float, **kwargs: Any) -> None:
        pass

    def _add(self, block: dict) -> None:
        pass

    def figure(self, fig: Any, name: str, caption: str = "", *, headline: bool = False) -> Path:
        import matplotlib.pyplot as plt

        plt.close(fig)
        return self.figures / f"{name}.png"
