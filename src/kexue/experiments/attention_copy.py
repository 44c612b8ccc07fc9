"""attention-copy: the copy task of "Transformers are RNNs" (arXiv 2006.16236, section 4.1, Fig. 2), scaled down.

Claim: on a synthetic copy task (a random symbol sequence, a separator, then the same sequence again) causal linear
attention converges to the same loss as softmax attention. We train the same decoder-only Transformer with softmax
attention and with linear attention under three feature maps (elu+1, Su's 1+cos, FAVOR+ with its random features
redrawn periodically as in Performer), on the same batches, and report the loss curves and the final accuracy on
the copied half: per symbol with teacher forcing, and for whole sequences decoded greedily by ``generate()`` (the
linear models decode as RNNs, softmax with a KV cache).
"""

import math
from dataclasses import asdict, dataclass

import torch

from kexue.eval.plots import subplots
from kexue.experiments._transformer_training import train_transformer
from kexue.experiments.config import ExperimentConfig, check_divisible, param
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
    length: int = param(64, "symbols to copy (sequence = BOS + symbols + SEP + symbols: 2L+1 inputs, paper: <= 128)",
                        min=1)
    dim: int = param(128, "model width", min=8)
    depth: int = param(4, "Transformer blocks (paper: 4)", min=1)
    heads: int = param(8, "attention heads (paper: 8)", min=1)
    steps: int = param(6000, "training steps per model", min=1)
    batch: int = param(64, "sequences per step (paper: 64)", min=1)
    optimizer: str = param("radam", "optimiser (paper: RAdam)", choices=("adam", "radam"))
    lr: float = param(1e-3, "learning rate (paper: 1e-3)", min=1e-6, max=1.0)
    lr_drop_step: int = param(3000, "step at which the learning rate drops 10x (paper: 3000; 0 = never)", min=0)
    redraw_every: int = param(1000, "steps between FAVOR+ feature redraws (Performer's default 1000; 0 = never)",
                              min=0)
    eval_batch: int = param(512, "sequences for the final accuracies", min=1)
    checkpoint_every: int = param(1000, "steps between checkpoints (0 = only the start)", min=0)
    log_every: int = param(50, "steps between logged losses", min=1)

    def check(self) -> None:
        check_divisible(self, "dim", "heads")


def _batch(cfg: Config, n: int, gen: torch.Generator, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``[n, 2L+1]`` and targets ``[n, 2L+1]`` (-100 = not scored: only the copied half is)."""
    sym = torch.randint(1, 11, (n, cfg.length), generator=gen)
    full = torch.cat([torch.full((n, 1), BOS), sym, torch.full((n, 1), SEP), sym], 1)  # [n, 2L+2]
    inp, tgt = full[:, :-1].clone(), full[:, 1:].clone()
    tgt[:, : cfg.length] = -100  # the first half is random: nothing to learn
    return inp.to(device), tgt.to(device)


@torch.no_grad()
def _accuracies(cfg: Config, model: Transformer, device: torch.device) -> tuple[float, float, float]:
    """Per-symbol accuracy on the copied half with teacher forcing, and per-symbol and whole-sequence accuracy of a
    greedy ``generate()`` from BOS + symbols + SEP (the model's own outputs fed back)."""
    inp, tgt = _batch(cfg, cfg.eval_batch, torch.Generator().manual_seed(cfg.seed + 1), device)
    scored = tgt != -100
    forced = (model(inp).argmax(-1)[scored] == tgt[scored]).float().mean().item()
    prompt = inp[:, : cfg.length + 2]  # BOS, the L symbols, SEP
    decoded = model.generate(prompt, cfg.length, temperature=0)[:, cfg.length + 2 :]  # [n, L]
    target = inp[:, 1 : cfg.length + 1]
    return forced, (decoded == target).float().mean().item(), (decoded == target).all(1).float().mean().item()


def run(cfg: Config, run: Run) -> dict:
    curves, acc = {}, {}
    for name, (attention, fmap) in VARIANTS.items():
        torch.manual_seed(cfg.seed)
        # max_len 2L + 2: generate() may emit the last copied symbol at position 2L + 1 (never fed back as input).
        model = Transformer(TransformerConfig(vocab_size=12, max_len=2 * cfg.length + 2, dim=cfg.dim, depth=cfg.depth,
                                              heads=cfg.heads, attention=attention, feature_map=fmap),
                            generator=torch.Generator().manual_seed(cfg.seed)).to(run.device)
        # The batch is a function of the step: every variant sees the same sequences, and a resume replays them.
        curves[name] = train_transformer(
            model, run, KEYS[name], {**asdict(cfg), "model": name}, steps=cfg.steps, optimizer=cfg.optimizer, lr=cfg.lr,
            schedule=lambda opt: torch.optim.lr_scheduler.MultiStepLR(
                opt, [cfg.lr_drop_step] if cfg.lr_drop_step else [], gamma=0.1),
            batch=lambda i: _batch(cfg, cfg.batch, torch.Generator().manual_seed(cfg.seed * 1_000_003 + i), run.device),
            checkpoint_every=cfg.checkpoint_every, log_every=cfg.log_every, redraw_every=cfg.redraw_every,
            seed=cfg.seed, desc=name)
        acc[name] = _accuracies(cfg, model, run.device)
        run.log(model=KEYS[name], accuracy=acc[name][0], decoded_accuracy=acc[name][1],
                sequence_accuracy=acc[name][2])

    for name, (forced, decoded, _) in acc.items():
        run.summary(f"accuracy_{KEYS[name]}", forced, bar=0.9 if name in ("softmax", "linear elu+1") else None,
                    note="copied half, per symbol, teacher-forced")
        run.summary(f"decoded_accuracy_{KEYS[name]}", decoded, note="copied half, per symbol, greedy generate()")
    chance = 0.1
    run.section("Claim")
    run.text("On the copy task, linear attention converges to the loss of softmax attention (paper Fig. 2: 4 layers, "
             "8 heads, sequences up to 128, RAdam 1e-3 then 1e-4 after 3000 updates).")
    run.section("Results")
    run.table(["model", "final train loss (nats)", "per-symbol accuracy (teacher-forced)",
               "per-symbol accuracy (greedy decode)", "whole sequences copied"],
              [[n, curves[n][-1][1], *acc[n]] for n in VARIANTS],
              caption=f"{cfg.length} symbols from 10, {cfg.depth} layers, width {cfg.dim}, {cfg.heads} heads, "
              f"{cfg.steps} steps of {cfg.batch} ({cfg.optimizer}, lr {cfg.lr}"
              + (f", x0.1 from step {cfg.lr_drop_step}" if cfg.lr_drop_step else "")
              + (f"; FAVOR+ features redrawn every {cfg.redraw_every} steps" if cfg.redraw_every else "")
              + f"); {cfg.eval_batch} held-out sequences; chance accuracy {chance:.0%}, chance loss ln 10 = "
              f"{math.log(10):.2f}.")
    final = {n: curves[n][-1][1] for n in VARIANTS}
    run.text("Measured: final training loss " + ", ".join(f"{n} {final[n]:.3g}" for n in VARIANTS)
             + f" nats (the last {cfg.log_every} steps averaged); "
             + ", ".join(f"{n} {final[n] / final['softmax']:.3g}x" for n in VARIANTS if n != "softmax")
             + " the softmax loss.")
    fig, axes = subplots(1, 2, width=4.6, height=3.4)
    for name, curve in curves.items():
        axes[0, 0].plot([s for s, _ in curve], [v for _, v in curve], label=name)
    axes[0, 0].axhline(math.log(10), color="gray", ls=":", lw=0.8)
    if cfg.redraw_every:
        for step in range(cfg.redraw_every, cfg.steps, cfg.redraw_every):
            axes[0, 0].axvline(step, color="C3", lw=0.4, alpha=0.5)
    axes[0, 0].set_yscale("log")
    axes[0, 0].set_xlabel("step")
    axes[0, 0].set_ylabel("cross-entropy on the copied half (nats)")
    axes[0, 0].legend(fontsize=8)
    names = list(acc)
    x = torch.arange(len(names)).float()
    axes[0, 1].bar(x - 0.2, [acc[n][0] for n in names], 0.4, label="teacher-forced")
    axes[0, 1].bar(x + 0.2, [acc[n][1] for n in names], 0.4, label="greedy decode")
    axes[0, 1].set_xticks(x.tolist(), names, rotation=20, fontsize=8)
    axes[0, 1].axhline(chance, color="gray", ls=":", lw=0.8)
    axes[0, 1].set_ylim(0, 1)
    axes[0, 1].set_ylabel("per-symbol accuracy on the copied half")
    axes[0, 1].legend(fontsize=8)
    redraws = (f" Thin red lines: FAVOR+ feature redraws (every {cfg.redraw_every} steps)."
               if cfg.redraw_every and cfg.redraw_every < cfg.steps else "")
    run.figure(fig, "copy_task", "Copy task: training loss (log scale; dotted = chance, ln 10) and final accuracy "
               f"of each attention variant, trained on the same batches.{redraws}", headline=True)
    return {f"accuracy_{KEYS[k]}": v[0] for k, v in acc.items()} | {
        f"decoded_accuracy_{KEYS[k]}": v[1] for k, v in acc.items()}


EXPERIMENT = Experiment(
    name="attention-copy",
    post=6,
    description="the paper's copy task: softmax vs linear attention (elu+1, 1+cos, FAVOR+) loss curves and accuracy",
    config=Config,
    run=run,
    presets={"quick": {"length": 16, "dim": 64, "depth": 2, "heads": 4, "steps": 400, "batch": 32, "optimizer": "adam",
                       "lr": 3e-3, "lr_drop_step": 240, "redraw_every": 100, "eval_batch": 256,
                       "checkpoint_every": 0, "log_every": 20},
             "full": {}},
    smoke={"length": 4, "dim": 16, "depth": 1, "heads": 2, "steps": 3, "batch": 4, "eval_batch": 8, "log_every": 1},
)
