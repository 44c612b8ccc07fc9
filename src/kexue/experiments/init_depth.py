"""init-depth: which initialisations carry a signal through 50 plain layers (post 5; kexue.fm/archives/7180, 8725).

Claim (7180, 8620): weights with variance 1/n (times the activation's gain) keep activation norms fixed through depth,
because such a matrix nearly preserves the norm of a fixed vector; PyTorch's default ``kaiming_uniform_(a=sqrt 5)``
has a third of that variance, so deep plain stacks shrink geometrically. 8725: for non-square layers the way fan_in
and fan_out are averaged matters, and only the geometric mean preserves x W1 W2 end to end.

Three measurements, all on plain stacks without normalisation or residual connections:

1. log-RMS of the activations against depth (width 256, depth 50) for linear, tanh and ReLU MLPs, a ReLU CNN and a
   linear stack of alternating widths, under each scheme of ``kexue.nn.init`` and PyTorch's default;
2. singular values of the input-output Jacobian at depth 50 under Gaussian 1/n versus exact orthogonal weights: the
   forward norm is preserved by both, the Jacobian's spread (the quarter-circle caveat) only by the orthogonal one;
3. a few hundred SGD steps on MNIST with 50-layer MLPs, to see which of these initialisations actually train.

The sweeps live in :mod:`kexue.experiments._init_depth_sweeps`, the report built from them in
:mod:`kexue.experiments._init_depth_report`; this file holds the config and the recipe.
"""

from dataclasses import dataclass

import torch

from kexue.experiments._init_depth_report import report_jacobian, report_signal, report_training
from kexue.experiments._init_depth_sweeps import (  # noqa: F401 (re-exported: their import path before the split)
    JACOBIAN_JOBS,
    SIGNAL_SCHEMES,
    STACK_TITLES,
    STACKS,
    build_mlp,
    build_stack,
    jacobian_sweep,
    parse_init,
    predicted_drift,
    signal_sweep,
    train_sweep,
)
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run


@dataclass
class Config(ExperimentConfig):
    width: int = param(256, "width of the MLP stacks", min=4)
    depth: int = param(50, "number of weight layers in every stack", min=2)
    batch: int = param(512, "inputs per batch for the second moments", min=2)
    gain: str = param("calibrated", "activation gain: 1/sqrt(E f(z)^2), 1, or torch's calculate_gain",
                      choices=("calibrated", "one", "torch"))
    schemes: tuple[str, ...] = param(SIGNAL_SCHEMES, "schemes for the depth sweep", choices=SIGNAL_SCHEMES)
    stacks: tuple[str, ...] = param(STACKS, "stacks for the depth sweep", choices=STACKS)
    conv_channels: int = param(32, "channels of the CNN", min=1)
    conv_size: int = param(16, "image side of the CNN's random inputs (circular padding)", min=3)
    conv_batch: int = param(32, "images per batch for the CNN's second moments", min=1)
    narrow: int = param(64, "the narrow width of the alternating stack", min=1)
    jacobian_inputs: int = param(8, "inputs whose Jacobian spectrum is computed", min=1)
    train_steps: int = param(600, "SGD steps per MNIST run (0 = skip training)", min=0)
    train_inits: tuple[str, ...] = param(("torch_default", "lecun:1", "lecun:calibrated", "orthogonal:1",
                                          "orthogonal:calibrated"),
                                         "inits trained, as scheme:gain (gain: 1, calibrated, torch or a number)")
    train_acts: tuple[str, ...] = param(("tanh", "relu"), "activations of the trained MLPs", choices=("tanh", "relu"))
    train_batch: int = param(128, "MNIST batch size", min=1)
    lr: float = param(0.002, "SGD learning rate (0.01 already destabilises the 50-layer ReLU stacks)", min=0)
    momentum: float = param(0.9, "SGD momentum", min=0, max=0.999)
    eval_size: int = param(10_000, "test images used for accuracy", min=100, max=10_000)
    data: str = param("mnist", "training data: MNIST, or a synthetic stand-in (no data cache needed)",
                      choices=("mnist", "synthetic"))


# --------------------------------------------------------------------------------------------------------------
# Recipe
# --------------------------------------------------------------------------------------------------------------

def run(cfg: Config, run: Run) -> dict:
    for text in cfg.train_inits:
        parse_init(text)  # fail before any work on a bad spelling
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # the default init draws from the global RNG
    metrics: dict = {}

    run.section("Claim")
    run.text("Weights with variance 1/n (times the activation's gain) keep the activation norm of a deep plain "
             "stack fixed, because a random matrix of that variance nearly preserves the norm of a fixed vector "
             "(post 7180); PyTorch's default `kaiming_uniform_(a=√5)` has variance 1/(3 fan_in), a third of LeCun, "
             "so plain stacks shrink with depth. For non-square layers, averaging fan_in and fan_out by the "
             "geometric mean preserves x W₁ W₂ end to end; the arithmetic (Xavier) and quadratic means do not "
             "(post 8725).")

    signal = signal_sweep(cfg, run, gen)
    report_signal(cfg, run, signal, metrics)
    spectra = jacobian_sweep(cfg, run, gen)
    report_jacobian(cfg, run, spectra, gen, metrics)
    if cfg.train_steps > 0 and cfg.train_inits and cfg.train_acts:
        # Under torch's default the backward signal of a 50-layer stack falls to ~1e-40: subnormal floats, which
        # run 10-100x slower on CPUs. Flushing them to zero changes no result that matters and keeps arms comparable.
        flushed = torch.set_flush_denormal(True)
        try:
            results = train_sweep(cfg, run, gen)
        finally:
            if flushed:
                torch.set_flush_denormal(False)
        report_training(cfg, run, results, metrics)
    return metrics


EXPERIMENT = Experiment(
    name="init-depth",
    post=5,
    description="signal norm and Jacobian spectrum through 50 plain layers per init scheme; which inits train",
    config=Config,
    run=run,
    presets={"quick": {"batch": 256, "jacobian_inputs": 2, "train_steps": 300, "train_batch": 32, "eval_size": 2000},
             "full": {}},
    smoke={"width": 16, "depth": 4, "batch": 8, "conv_channels": 2, "conv_size": 4, "narrow": 4,
           "jacobian_inputs": 1, "train_steps": 3, "eval_size": 100, "train_acts": ("relu",),
           "train_inits": ("torch_default", "lecun:calibrated")},
    headline=False,
)
