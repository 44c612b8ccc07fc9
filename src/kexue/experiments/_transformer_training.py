"""The training loop of the attention experiments (``attention-copy``, ``attention-mnist``): a decoder-only
Transformer trained by next-token cross-entropy under the runtime, shared so that neither experiment imports the
other."""

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from kexue.experiments.rundir import ModelRun, Run
from kexue.models.transformer import Transformer
from kexue.train.runtime import Runtime


def train_transformer(model: Transformer, run: Run, folder: str, config: dict, *, steps: int, optimizer: str,
                      lr: float, schedule: Callable[[torch.optim.Optimizer], Any],
                      batch: Callable[[int], tuple[torch.Tensor, torch.Tensor]], metric: str = "loss",
                      unit: float = 1.0, checkpoint_every: int = 0, log_every: int = 50, redraw_every: int = 0,
                      seed: int = 0, desc: str | None = None) -> list[tuple[int, float]]:
    """Train a decoder-only Transformer by next-token cross-entropy under a :class:`Runtime` (checkpoints in
    ``checkpoints/<folder>``, log lines tagged ``model=folder``); the training loop of the attention experiments.

    Args:
        config: the resolved experiment config with the model's name (checkpoints of another config are refused).
        optimizer, lr: ``"adam"`` or ``"radam"``, and its learning rate; schedule: ``(optimizer) -> LR scheduler``,
            stepped once per step.
        batch: ``(step) -> (inputs [B, T], targets [B, T])`` (target -100: not scored): the batch as a function
            of the step, so every model sees the same sequences and a resume replays them.
        metric, unit: the logged mean is ``metric`` = cross-entropy / ``unit`` (``math.log(2)``: bits).
        redraw_every: redraw FAVOR+ features every this many steps (Performer's schedule; 0: never).
        seed: seeds the redraws.

    Returns:
        ``(step, mean of metric over the log interval)`` at every log interval.
    """
    optim = torch.optim.RAdam if optimizer == "radam" else torch.optim.Adam
    opt = optim(model.parameters(), lr=lr)
    sched = schedule(opt)
    rt = Runtime(ModelRun(run, folder), config=config, model=model, optimizer=opt, scheduler=sched,
                 every=checkpoint_every, keep_last=1)
    rt.resume()
    model.train()
    for step in rt.steps(steps, desc=desc or folder, log_every=log_every):
        if redraw_every and step.index and step.index % redraw_every == 0:
            model.redraw_features(torch.Generator().manual_seed(seed + step.index))  # FAVOR+ only; else a no-op
        inp, tgt = batch(step.index)
        loss = F.cross_entropy(model(inp).flatten(0, 1), tgt.flatten(), ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if rt.check(loss):
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
        sched.step()
        step.mean(**{metric: loss.item() / unit})
        if step.logging:  # looked up here: a NaN-guard rollback replaces rt.extra with the checkpoint's
            rt.extra.setdefault("curve", []).append((step.number, step.means[metric]))
    model.eval()
    return [tuple(c) for c in rt.extra.get("curve", [])]
