"""attention-copy: the copy task of "Transformers are RNNs" (arXiv 2006.16236, section 4.1, Fig. 2), scaled down.

Claim: on a synthetic copy task (a random symbol sequence, a separator, then the same sequence again) causal linear
attention converges to the same loss as softmax attention. We train the same small decoder-only Transformer with
softmax attention and with linear attention under three feature maps (elu+1, Su's 1+cos, FAVOR+), and report the
loss curves and the final per-symbol accuracy on the copied half (greedy, teacher-forced).
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kexue._progress import progress
from kexue.eval.plots import subplots
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.models.transformer import Transformer, TransformerConfig

VARIANTS = {"softmax": ("softmax", "elu"), "linear elu+1": ("linear", "elu"), "linear 1+cos": ("linear", "cos"),
            "linear FAVOR+": ("linear", "favor")}
KEYS = {"softmax": "softmax", "linear elu+1": "linear_elu", "linear 1+cos": "linear_cos",
        "linear FAVOR+": "linear_favor"}  # summary names
BOS, SEP = 0, 11  # symbols are 1..10


@dataclass
class Config(ExperimentConfig):
    length: int = param(64, "symbols to copy (sequence = BOS + symbols + SEP + symbols, 2L+1 inputs)", min=1)
    dim: int = param(128, "model width", min=8)
    depth: int = param(4, "Transformer blocks (paper: 4)", min=1)
    heads: int = param(8, "attention heads (paper: 8)", min=1)
    steps: int = param(6000, "training steps per model", min=1)
    batch: int = param(64, "sequences per step (paper: 64)", min=1)
    lr: float = param(1e-3, "Adam learning rate, x0.1 after 60% of the steps (paper: RAdam 1e-3 -> 1e-4)",
                      min=1e-6, max=1.0)
    eval_batch: int = param(512, "sequences for the final accuracy", min=1)
    log_every: int = param(50, "steps between logged losses", min=1)


def _batch(cfg: Config, n: int, gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[n, 2L+1]`` and targets ``[n, 2L+1]`` (-100 = not scored: only the copied half is)."""
    sym = torch.randint(1, 11, (n, cfg.length), generator=gen)
    full = torch.cat([torch.full((n, 1), BOS), sym, torch.full((n, 1), SEP), sym], 1)  # [n, 2L+2]
    inp, tgt = full[:, :-1].clone(), full[:, 1:].clone()
    tgt[:, : cfg.length] = -100  # the first half is random: nothing to learn
    return inp.to(device), tgt.to(device)


def run(cfg: Config, run: Run) -> dict:
    curves, acc = {}, {}
    for name, (attention, fmap) in VARIANTS.items():
        torch.manual_seed(cfg.seed)
        model = Transformer(TransformerConfig(vocab_size=12, max_len=2 * cfg.length + 1, dim=cfg.dim, depth=cfg.depth,
                                              heads=cfg.heads, attention=attention, feature_map=fmap),
                            generator=torch.Generator().manual_seed(cfg.seed)).to(run.device)
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.6 * cfg.steps)], gamma=0.1)
        gen = torch.Generator().manual_seed(cfg.seed)  # the same batches for every variant
        curve, running = [], []
        bar = progress(range(cfg.steps), total=cfg.steps, desc=name, unit="step")
        for step in bar:
            inp, tgt = _batch(cfg, cfg.batch, gen, run.device)
            loss = F.cross_entropy(model(inp).flatten(0, 1), tgt.flatten(), ignore_index=-100)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            running.append(loss.item())
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                value = sum(running) / len(running)
                curve.append((step + 1, value))
                run.log(step + 1, model=name, loss=value)
                bar.set_postfix(loss=f"{value:.3f}")
                running = []
        model.eval()
        with torch.no_grad():
            inp, tgt = _batch(cfg, cfg.eval_batch, torch.Generator().manual_seed(cfg.seed + 1), run.device)
            pred = model(inp).argmax(-1)
            scored = tgt != -100
            acc[name] = (pred[scored] == tgt[scored]).float().mean().item()
        run.log(model=name, accuracy=acc[name])
        curves[name] = curve

    for name, value in acc.items():
        run.summary(f"accuracy_{KEYS[name]}", value, bar=0.9 if name in ("softmax", "linear elu+1") else None,
                    note="copied half, teacher-forced, greedy")
    chance = 0.1
    run.section("Claim")
    run.text("On the copy task, linear attention converges to the loss of softmax attention (paper Fig. 2).")
    run.section("Results")
    run.table(["model", "final train loss (nats)", "accuracy on the copied half"],
              [[n, curves[n][-1][1], acc[n]] for n in VARIANTS],
              caption=f"{cfg.length} symbols from 10, {cfg.depth} layers, width {cfg.dim}, {cfg.heads} heads, "
              f"{cfg.steps} steps of {cfg.batch}; chance accuracy {chance:.0%}, chance loss ln 10 = "
              f"{math.log(10):.2f}.")
    fig, axes = subplots(1, 2, width=4.6, height=3.4)
    for name, curve in curves.items():
        axes[0, 0].plot([s for s, _ in curve], [v for _, v in curve], label=name)
    axes[0, 0].axhline(math.log(10), color="gray", ls=":", lw=0.8)
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_xlabel("step")
    axes[0, 0].set_ylabel("cross-entropy on the copied half (nats)")
    axes[0, 0].legend(fontsize=8)
    names = list(acc)
    axes[0, 1].bar(range(len(names)), [acc[n] for n in names], color=[f"C{i}" for i in range(len(names))])
    axes[0, 1].set_xticks(range(len(names)), names, rotation=20, fontsize=8)
    axes[0, 1].axhline(chance, color="gray", ls=":", lw=0.8)
    axes[0, 1].set_ylim(0, 1)
    axes[0, 1].set_ylabel("accuracy on the copied half")
    run.figure(fig, "copy_task", "Copy task: training loss (log scale; dotted = chance, ln 10) and final accuracy "
               "of each attention variant on the same batches.")
    return {f"accuracy_{KEYS[k]}": v for k, v in acc.items()}


EXPERIMENT = Experiment(
    name="attention-copy",
    post=6,
    description="the paper's copy task: softmax vs linear attention (elu+1, 1+cos, FAVOR+) loss curves and accuracy",
    config=Config,
    run=run,
    presets={"quick": {"length": 16, "dim": 64, "depth": 2, "heads": 4, "steps": 400, "batch": 32, "lr": 3e-3,
                       "eval_batch": 256, "log_every": 20},
             "full": {}},
    smoke={"length": 4, "dim": 16, "depth": 1, "heads": 2, "steps": 3, "batch": 4, "eval_batch": 8, "log_every": 1},
)
