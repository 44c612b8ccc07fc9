"""The training runtime every kexue trainer uses: checkpoints and resume, a NaN/Inf guard, DDP-aware logging.

A trainer keeps its step readable and asks the runtime for the rest::

    rt = Runtime(run, config=asdict(cfg), model=model, optimizer=opt, ema=ema, every=200)
    rt.resume()                              # continue from the latest checkpoint in run.checkpoints, if any
    for step in rt.steps(cfg.steps, desc="train", log_every=50):
        loss = loss_fn(model, batch_for(step.index))   # data chosen by the step, so resume/rollback replay it
        opt.zero_grad(); loss.backward()
        if rt.check(loss):                   # finite loss and gradients (agreed across ranks)?
            opt.step(); ema.update(model)
        step.mean(loss=loss)                 # averaged over the 50 steps, logged on rank 0 at the 50th

:meth:`Runtime.steps` is the one training loop: it owns the progress bar, the running means, the periodic log row
and the periodic checkpoints (through :meth:`Runtime.end_step`, which a hand-written loop may still call itself).

What it guarantees:

- **Checkpoints** hold the model, EMAs, optimizers, schedulers, step, the running means of the current log
  interval, every RNG state (Python, NumPy, torch CPU and CUDA), the trainer's own ``extra`` state and the config;
  they are written atomically (temp folder + rename, :func:`kexue.train.checkpoint.save_checkpoint`), stored
  without pickle (safetensors and JSON), and only the newest ``keep_last`` are kept. A checkpoint from a
  different config is refused with the keys that differ.
- **Resume** restores all of that, so a run killed and resumed logs the same numbers as one never interrupted.
- **NaN guard**: a step whose loss or gradients are not finite is skipped (gradients zeroed) and counted; after
  ``max_bad_steps`` consecutive bad steps the runtime rolls back to the last good checkpoint and multiplies the
  learning rate by ``lr_factor``; the log lines of the steps it will replay move to ``metrics.dropped.jsonl``, as
  on resume. After ``max_rollbacks`` rollbacks (the config key of that name, else 5) the next one stops the run
  with a :class:`~kexue.errors.KexueError` naming the step and the last finite loss, so a loss that stays NaN
  cannot loop forever. Every action is logged (``event`` lines in ``metrics.jsonl``).
- **DDP**: logging and writing happen on rank 0 only; the guard's decision is all-reduced so ranks stay in step.
"""

import json
import math
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from kexue._progress import progress
from kexue.errors import KexueError
from kexue.train.checkpoint import list_checkpoints, load_checkpoint, prune_checkpoints, save_checkpoint
from kexue.train.distributed import DistInfo, any_true, barrier
from kexue.train.ema import EMA, unwrap

MAX_ROLLBACKS = 5  # NaN-guard rollbacks before a run stops, unless the config or the caller says otherwise

# --- RNG state ------------------------------------------------------------------------------------------------------


def rng_state() -> dict:
    """Every global RNG's state as tensors, numbers and tuples (what a checkpoint's state may hold)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _named(obj: Any) -> dict[str, Any]:
    """None -> {}, a dict -> itself, one object -> {"": object} (the key under which it is checkpointed)."""
    if obj is None:
        return {}
    return dict(obj) if isinstance(obj, dict) else {"": obj}


def _ema_prefix(name: str) -> str:
    """Where an EMA's tensors sit in a checkpoint: ``ema.`` for a lone EMA, ``ema.<name>.`` for one of a dict."""
    return f"ema.{name}." if name else "ema."


# --- the runtime ----------------------------------------------------------------------------------------------------


class Runtime:
    """Checkpointing, resume, NaN guard and rank-0 logging around a training loop (see the module docstring).

    Args:
        run: the experiment's :class:`~kexue.experiments.rundir.Run` (its ``checkpoints`` folder and ``log``), or
            None with ``directory`` for use outside experiments.
        config: the resolved config as a dict; checkpoints of another config are refused.
        model: the model (wrapped or not; the unwrapped module's ``state_dict`` is saved).
        optimizer, scheduler, ema: saved and restored when given; each may be a dict of name -> object for trainers
            with several (a GAN's generator and critic optimizers, EMAs of several decays). One EMA is checkpointed
            under ``ema.<key>``, a dict's under ``ema.<name>.<key>``.
        every: checkpoint every this many steps (0: only when :meth:`save` is called).
        keep_last: how many checkpoint folders to keep.
        max_bad_steps: consecutive non-finite steps before a rollback.
        lr_factor: learning-rate multiplier applied at each rollback.
        max_rollbacks: rollbacks allowed before the run stops with an error; default: ``config["max_rollbacks"]``
            if the config has that key, else :data:`MAX_ROLLBACKS`.
        check_grads: also require finite gradients (not only a finite loss).
        dist: this process's place under DDP; only rank 0 logs and writes.
        directory: checkpoint folder when ``run`` is None.
    """

    def __init__(self, run: Any = None, *, config: dict | None = None, model: nn.Module,
                 optimizer: torch.optim.Optimizer | dict[str, torch.optim.Optimizer] | None = None,
                 scheduler: Any = None, ema: EMA | dict[str, EMA] | None = None,
                 every: int = 0, keep_last: int = 3, max_bad_steps: int = 3, lr_factor: float = 0.5,
                 max_rollbacks: int | None = None, check_grads: bool = True, dist: DistInfo | None = None,
                 directory: str | Path | None = None) -> None:
        if run is None and directory is None:
            raise KexueError("Runtime needs a run or a checkpoint directory")
        if max_rollbacks is None:
            max_rollbacks = (config or {}).get("max_rollbacks", MAX_ROLLBACKS)
        if keep_last < 1 or max_bad_steps < 1 or every < 0 or not 0 < lr_factor <= 1 or max_rollbacks < 0:
            raise KexueError(f"Runtime: need keep_last >= 1, max_bad_steps >= 1, every >= 0, 0 < lr_factor <= 1, "
                             f"max_rollbacks >= 0 (got {keep_last}, {max_bad_steps}, {every}, {lr_factor}, "
                             f"{max_rollbacks})")
        self.max_rollbacks = max_rollbacks
        self.run, self.config = run, config
        self.directory = Path(directory) if directory is not None else run.checkpoints
        self.model, self.optimizer, self.scheduler, self.ema = model, optimizer, scheduler, ema
        self._optimizers = _named(optimizer)
        self._schedulers = _named(scheduler)
        self._emas = _named(ema)
        self.every, self.keep_last, self.max_bad_steps, self.lr_factor = every, keep_last, max_bad_steps, lr_factor
        self.check_grads = check_grads
        self.dist = dist or DistInfo()
        self.step = 0
        self.extra: dict = {}  # the trainer's own JSON-able state (histories for figures, counters)
        self.means: dict[str, list[float]] = {}  # name -> [sum, count] of the finite values since the last log row
        self.bad_steps = 0  # non-finite steps skipped in total
        self.bad_streak = 0
        self.rollbacks = 0
        self.lr_scale = 1.0
        self.last_finite: tuple[int, torch.Tensor | float] | None = None  # (step, loss) of the last finite step
        self._undone = False  # a rollback undid the current step: its end_step neither advances nor logs
        self.last_checkpoint: Path | None = None
        self.resumed_from: int | None = None

    # --- logging (rank 0 only) ----------------------------------------------------------------------------------

    def log(self, **metrics: Any) -> None:
        """``run.log(step, ...)`` on rank 0."""
        if self.run is not None and self.dist.is_main:
            self.run.log(self.step, **metrics)

    def _event(self, event: str, **fields: Any) -> None:
        self.log(event=event, **fields)

    # --- checkpoints -----------------------------------------------------------------------------------------------

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        tensors = {f"model.{k}": v for k, v in unwrap(self.model).state_dict().items()}
        for name, ema in self._emas.items():
            tensors.update({f"{_ema_prefix(name)}{k}": v for k, v in ema.state_dict().items()})
        state = {
            "optimizers": {name: opt.state_dict() for name, opt in self._optimizers.items()},
            "schedulers": {name: sched.state_dict() for name, sched in self._schedulers.items()},
            "rng": rng_state(),
            "extra_json": json.dumps(self.extra),
            "means_json": json.dumps(self.means),
            "counters": {"bad_steps": self.bad_steps, "rollbacks": self.rollbacks, "lr_scale": self.lr_scale},
        }
        return tensors, state

    def save(self) -> Path | None:
        """Checkpoint the current step (rank 0 writes; every rank waits for it). Returns the folder on rank 0."""
        path = None
        if self.dist.is_main:
            existing = dict(list_checkpoints(self.directory))
            if self.step in existing:  # e.g. the step a resume started from: identical content, keep it
                path = existing[self.step]
            else:
                tensors, state = self.state()
                path = save_checkpoint(self.directory, self.step, tensors, state, self.config)
                prune_checkpoints(self.directory, self.keep_last)
                self._event("checkpoint", path=path.name)
        self.last_checkpoint = path
        barrier(self.dist)
        return path

    def load(self, path: str | Path) -> None:
        """Restore everything from checkpoint folder ``path`` (refused if its config differs)."""
        device = next(iter(self.model.parameters())).device
        tensors, state = load_checkpoint(path, self.config, device=device)
        model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        try:
            unwrap(self.model).load_state_dict(model_state)
        except RuntimeError as err:
            raise KexueError(f"checkpoint {path} does not fit this model: {str(err)[:300]}") from None
        for name, ema in self._emas.items():
            prefix = _ema_prefix(name)
            ema.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
        for name, opt in self._optimizers.items():
            opt.load_state_dict(state["optimizers"][name])
        for name, sched in self._schedulers.items():
            sched.load_state_dict(state["schedulers"][name])
        set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.extra = json.loads(state["extra_json"])
        self.means = json.loads(state.get("means_json", "{}"))  # checkpoints written before the means were kept
        counters = state["counters"]
        self.bad_steps, self.rollbacks, self.lr_scale = (counters["bad_steps"], counters["rollbacks"],
                                                         counters["lr_scale"])
        self.bad_streak = 0

    def latest(self) -> Path | None:
        """The newest complete checkpoint folder, or None."""
        found = list_checkpoints(self.directory)
        return found[-1][1] if found else None

    def resume(self) -> bool:
        """Continue from the newest checkpoint if there is one (else save step 0, the rollback point).

        A damaged newest checkpoint is an error naming it, never silently skipped. On resume, lines of
        ``metrics.jsonl`` logged after the checkpoint's step (work the kill threw away) move to
        ``metrics.dropped.jsonl``, so the log reads as one uninterrupted run.

        Returns:
            True if state was restored from a checkpoint.
        """
        latest = self.latest()
        if latest is None:
            self.save()
            return False
        self.load(latest)
        self.resumed_from = self.step
        self.last_checkpoint = latest
        self._drop_metrics_after()
        self._event("resume", path=latest.name)
        barrier(self.dist)
        return True

    def _drop_metrics_after(self) -> None:
        """Move the lines logged after the current step (work about to be replayed) out of ``metrics.jsonl``."""
        if self.run is not None and self.dist.is_main:
            self.run.drop_metrics_after(self.step)

    # --- the NaN guard -------------------------------------------------------------------------------------------

    def _finite(self, loss: torch.Tensor | float) -> bool:
        ok = bool(torch.isfinite(torch.as_tensor(loss)).all())
        if ok and self.check_grads:
            grads = [p.grad for p in self.model.parameters() if p.grad is not None]
            if grads:
                # max-abs cannot overflow (unlike a 2-norm of large finite gradients); NaN and Inf propagate
                ok = bool(torch.isfinite(torch.stack(torch._foreach_norm(grads, float("inf")))).all())
        return ok

    def check(self, loss: torch.Tensor | float) -> bool:
        """Call after ``backward()``: True if the optimiser may step.

        A non-finite loss or gradient (on any rank) skips the step: gradients are zeroed and the step is counted.
        After ``max_bad_steps`` consecutive bad steps, :meth:`rollback`.
        """
        bad = any_true(not self._finite(loss), self.dist)
        if not bad:
            self.bad_streak = 0
            self.last_finite = (self.step, loss.detach() if isinstance(loss, torch.Tensor) else loss)
            return True
        self.bad_steps += 1
        self.bad_streak += 1
        for opt in self._optimizers.values():
            opt.zero_grad(set_to_none=True)
        self._event("nan_skip", bad_steps=self.bad_steps, streak=self.bad_streak)
        if self.bad_streak >= self.max_bad_steps:
            self.rollback()
        return False

    def rollback(self) -> None:
        """Reload the last good checkpoint and multiply the learning rate by ``lr_factor``.

        Raises:
            KexueError: ``max_rollbacks`` rollbacks were done already; the message names the step and the last
                finite loss.
        """
        if self.rollbacks >= self.max_rollbacks:
            if self.last_finite is None:
                last = "no finite loss since the run (re)started"
            else:
                at, loss = self.last_finite
                last = f"last finite loss {float(torch.as_tensor(loss).float().mean()):.6g} at step {at}"
            raise KexueError(f"NaN guard: non-finite loss or gradients at step {self.step} after "
                             f"{self.rollbacks} rollback(s) (max_rollbacks={self.max_rollbacks}); {last}. Lower the "
                             "learning rate or raise max_rollbacks")
        barrier(self.dist)
        latest = self.latest() if self.dist.is_main else None
        from kexue.train.distributed import broadcast_object

        latest = broadcast_object(str(latest) if latest is not None else None, self.dist)
        if latest is None:
            raise KexueError(f"NaN guard: {self.bad_streak} consecutive non-finite steps and no checkpoint to roll "
                             "back to (call resume() before the loop: it saves step 0)")
        bad_from, counters = self.step, (self.bad_steps, self.rollbacks + 1)
        scale = self.lr_scale * self.lr_factor
        self.load(latest)
        self.bad_steps, self.rollbacks = counters
        self._set_lr_scale(scale)
        self._drop_metrics_after()
        self._undone = True
        self._event("rollback", to_step=self.step, from_step=bad_from, lr_scale=self.lr_scale,
                    rollbacks=self.rollbacks)

    def _set_lr_scale(self, scale: float) -> None:
        ratio = scale / self.lr_scale
        for opt in self._optimizers.values():
            for group in opt.param_groups:
                group["lr"] *= ratio
                if "initial_lr" in group:
                    group["initial_lr"] *= ratio
        for sched in self._schedulers.values():
            if hasattr(sched, "base_lrs"):
                sched.base_lrs = [lr * ratio for lr in sched.base_lrs]
        self.lr_scale = scale

    # --- the loop -----------------------------------------------------------------------------------------------------

    def steps(self, total: int, *, desc: str | None = None, log_every: int = 0, bar: Any = None,
              prefix: str = "") -> Iterator["Step"]:
        """The training loop: one :class:`Step` per step, from the current step (after a resume, where the run left
        off) until ``self.step`` reaches ``total``.

        The body of the loop does the work of one step and hands the runtime what to report: values to average
        over the log interval (:meth:`Step.mean`) and fields of the step's log row (:meth:`Step.log`). After the
        body the runtime logs the row on rank 0 (the interval's means, named ``prefix + name``, then the fields)
        when the step ends a log interval (every ``log_every`` steps, and the last step) or has fields, resets the
        means, and calls :meth:`end_step` (step += 1, checkpoint every ``every`` steps). The means are part of
        the checkpoint, so a resumed or rolled-back run averages exactly what an uninterrupted one does. A step
        undone by a rollback (in one of its :meth:`check` calls) reports nothing: its ``logging`` is False from
        then on, and the runtime is back at the checkpoint, whose means it restored.

        Args:
            total: the number of steps of the whole run.
            desc: label of a progress bar for this loop (it shows the last row's first numbers); None: no bar of
                its own.
            log_every: steps per log interval (0: the last step only).
            bar: an outer progress bar (one over several models) to advance by one per step instead.
            prefix: prepended to the means' names in the log row (e.g. ``"train_"``).

        Yields:
            The :class:`Step` about to be taken.
        """
        own = bar is None and desc is not None
        if own:
            bar = progress(total=total, desc=desc, unit="step")
        if bar is not None:
            bar.update(self.step)  # the steps a resume skips
        try:
            while self.step < total:
                step = Step(self, self.step, total, log_every)
                yield step
                undone = self._undone  # end_step clears it
                row: dict[str, Any] = {}
                if step.logging:
                    row = {prefix + name: value for name, value in step.means.items()}
                    self.means = {}  # before end_step, which may checkpoint
                if not undone:
                    row.update(step.fields)
                self.end_step(**row)
                if bar is not None and not undone:
                    bar.update(1)
                    shown = [(k, v) for k, v in row.items() if isinstance(v, float | int) and not isinstance(v, bool)]
                    if shown:
                        bar.set_postfix({k: f"{v:.3g}" for k, v in shown[:3]})
        finally:
            if own:
                bar.close()

    def end_step(self, **metrics: Any) -> None:
        """Advance the step counter, log ``metrics`` (rank 0), and checkpoint every ``every`` steps.

        After a rollback (in this step's :meth:`check`) it does nothing: the step counter is the checkpoint's, and
        the next step is the first one it replays.
        """
        if self._undone:
            self._undone = False
            return
        self.step += 1
        if metrics:
            self.log(**{k: (v.item() if isinstance(v, torch.Tensor) and v.numel() == 1 else v)
                        for k, v in metrics.items()})
        if self.every and self.step % self.every == 0:
            self.save()


class Step:
    """One step of :meth:`Runtime.steps`: where it is, and what it reports.

    Attributes:
        index: the step being taken (0-based; ``rt.step`` when it started): choose its data from this, so that a
            resume or a rollback replays the same batches.
        number: ``index + 1``, the steps done once this one ends (the ``step`` of its log row).
        total: the run's number of steps.
        fields: what :meth:`log` was given.
    """

    def __init__(self, runtime: Runtime, index: int, total: int, log_every: int) -> None:
        self._rt = runtime
        self.index, self.number, self.total = index, index + 1, total
        self._log_every = log_every
        self.fields: dict[str, Any] = {}

    def every(self, n: int) -> bool:
        """True if this step ends an interval of ``n`` steps (``n`` = 0: none) or the run, and no rollback undid it
        (for work on another cadence than the log's, e.g. an evaluation)."""
        if self._rt._undone:
            return False
        return self.number == self.total or bool(n and self.number % n == 0)

    @property
    def logging(self) -> bool:
        """True if this step ends a log interval (and no rollback undid it): compute costly log fields only then."""
        return self.every(self._log_every)

    def mean(self, **values: torch.Tensor | float) -> None:
        """Add scalars to the running means of the log interval (a non-finite value is left out of its mean)."""
        if self._rt._undone:
            return
        for name, value in values.items():
            value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
            if math.isfinite(value):
                total, count = self._rt.means.get(name, (0.0, 0))
                self._rt.means[name] = [total + value, count + 1]

    @property
    def means(self) -> dict[str, float]:
        """The interval's means so far, this step's values included (name -> mean)."""
        return {name: total / count for name, (total, count) in self._rt.means.items()}

    def log(self, **fields: Any) -> None:
        """Fields of this step's log row; a step off the log interval that has fields logs them too."""
        if not self._rt._undone:
            self.fields.update(fields)
