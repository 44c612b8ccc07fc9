"""The three measurements of ``init-depth`` (:mod:`kexue.experiments.init_depth`): the stacks it builds, the
activation-norm sweep through depth, the Jacobian spectra, and the MNIST training runs. Each sweep logs its raw
numbers and returns them; :mod:`kexue.experiments._init_depth_report` turns them into the report.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from kexue._progress import progress
from kexue.errors import ConfigError
from kexue.eval.signal import activation_second_moments, jacobian_singular_values, log_spread
from kexue.experiments.rundir import Run
from kexue.nn.init import calibrated_gain, init_, scheme_variance

if TYPE_CHECKING:  # the recipe's config; the recipe imports this module
    from kexue.experiments.init_depth import Config

SIGNAL_SCHEMES = ("torch_default", "torch_default_nobias", "lecun", "su_fan_out", "xavier", "geometric_mean",
                  "quadratic", "orthogonal", "delta_orthogonal")
STACKS = ("linear", "tanh", "relu", "conv_relu", "alternating")
STACK_TITLES = {"linear": "linear MLP", "tanh": "tanh MLP", "relu": "ReLU MLP", "conv_relu": "ReLU CNN (3x3)",
                "alternating": "linear, widths {w} / {n}"}


# --------------------------------------------------------------------------------------------------------------
# Stacks
# --------------------------------------------------------------------------------------------------------------

def stack_gain(cfg: Config, act: str) -> float:
    if cfg.gain == "one" or act == "linear":
        return 1.0
    if cfg.gain == "torch":
        return nn.init.calculate_gain(act)
    return calibrated_gain(act)


def build_stack(kind: str, cfg: Config) -> nn.Sequential:
    """``depth`` blocks ``Sequential(layer, activation)``; block i's output is named ``str(i)``."""
    blocks = []
    for i in range(cfg.depth):
        if kind == "conv_relu":
            # Circular padding: every output pixel sees a full 3x3 window, so fan_in is exact at the border
            # too (zero padding loses ~8% of the second moment per layer on a 16x16 image, a drift of its own).
            layer = nn.Conv2d(cfg.conv_channels, cfg.conv_channels, 3, padding=1, padding_mode="circular")
        elif kind == "alternating":  # width -> narrow -> width -> ...
            dims = (cfg.width, cfg.narrow) if i % 2 == 0 else (cfg.narrow, cfg.width)
            layer = nn.Linear(*dims)
        else:
            layer = nn.Linear(cfg.width, cfg.width)
        act = {"tanh": nn.Tanh(), "relu": nn.ReLU(), "conv_relu": nn.ReLU()}.get(kind, nn.Identity())
        blocks.append(nn.Sequential(layer, act))
    return nn.Sequential(*blocks)


def stack_activation(kind: str) -> str:
    return {"tanh": "tanh", "relu": "relu", "conv_relu": "relu"}.get(kind, "linear")


def _apply(model: nn.Module, scheme: str, gain: float, gen: torch.Generator) -> nn.Module:
    if scheme == "torch_default_nobias":  # torch's default weights alone: the drift the variance 1/(3 fan_in) makes
        for m in model.modules():
            if isinstance(m, nn.Linear | nn.Conv2d):
                nn.init.zeros_(m.bias)
    elif scheme != "torch_default":  # else: the modules' own reset_parameters() at construction
        init_(model, scheme, gain, generator=gen)
    return model


def _inputs(kind: str, cfg: Config, n: int, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    shape = (n, cfg.conv_channels, cfg.conv_size, cfg.conv_size) if kind == "conv_relu" else (n, cfg.width)
    return torch.randn(shape, generator=gen).to(device)


def _schemes_for(kind: str, cfg: Config) -> list[str]:
    # delta-orthogonal differs from orthogonal only for convolutions; drawing it twice on MLPs adds nothing.
    return [s for s in cfg.schemes if s != "delta_orthogonal" or kind == "conv_relu"]


# --------------------------------------------------------------------------------------------------------------
# 1. Second moments through depth
# --------------------------------------------------------------------------------------------------------------

def signal_sweep(cfg: Config, run: Run, gen: torch.Generator) -> dict[str, dict[str, np.ndarray]]:
    """log-RMS drift (nats, relative to block 1) after blocks 1..depth, per stack and scheme."""
    out: dict[str, dict[str, np.ndarray]] = {}
    jobs = [(kind, s) for kind in cfg.stacks for s in _schemes_for(kind, cfg)]
    bar = progress(jobs, desc="init-depth: signal", unit="stack")
    for kind, scheme in bar:
        model = _apply(build_stack(kind, cfg), scheme, stack_gain(cfg, stack_activation(kind)), gen).to(run.device)
        x = _inputs(kind, cfg, cfg.conv_batch if kind == "conv_relu" else cfg.batch, gen, run.device)
        trace = activation_second_moments(model, x, modules=[str(i) for i in range(cfg.depth)])
        # Relative to the first block's output: the step from raw input to first activation is a fixed change of
        # scale (E f(z)^2), not drift. drift[i] belongs to block i + 1.
        drift = trace.drift(reference=1)[1:].numpy()
        out.setdefault(kind, {})[scheme] = drift
        run.log(stack=kind, scheme=scheme, drift_final=float(drift[-1]), drift=drift.tolist(),
                log_rms_final=float(trace.log_rms()[-1]))
        bar.set_postfix(stack=kind, scheme=scheme)
    return out


def predicted_drift(kind: str, scheme: str, cfg: Config) -> tuple[float, float, float] | None:
    """Drift (nats) from block 1 to block ``depth`` that the variances predict, where they predict one.

    Returns ``(infinite_width, finite_width_mean, finite_width_sd)`` or ``None``:

    - ``infinite_width``: each linear layer multiplies the second moment by fan_in * variance (orthogonal: by
      min(1, in / out): a projection keeps the per-coordinate moment, an embedding spreads it over more
      coordinates); ReLU halves it. torch's default variance is 1/(3 fan_in); with its non-zero biases the signal
      sinks to the bias floor instead, so only the zero-bias variant gets a prediction. tanh is not linear: none.
    - finite width (inferred, for one input): a layer with n random output rows multiplies the second moment by
      1 + eps, Var(eps) = v / n, so the log-RMS gains E[0.5 log(1 + eps)] ~ -v / (4 n) and a random walk of
      standard deviation sqrt(v / n) / 2 per layer. v = 2 for a linear Gaussian-like layer (chi^2_n / n), 5 for
      ReLU after one (Var(relu(g)^2) / E[relu(g)^2]^2 = (5/4) / (1/4)), 0 and 3 for an exact isometry without and
      with ReLU (the ReLU keeps a fluctuating share of an exactly preserved norm). For the CNN n is the channel
      count (weights are shared across pixels); a batch average fluctuates less than one input, so these are
      upper bounds on the spread at shallow depth and become accurate as depth makes the activations low-rank.
    """
    if kind not in ("linear", "relu", "conv_relu", "alternating") or scheme == "torch_default":
        return None
    relu = kind in ("relu", "conv_relu")
    gain_sq = stack_gain(cfg, stack_activation(kind)) ** 2 * (0.5 if relu else 1.0)
    total = bias = var = 0.0
    for i in range(1, cfg.depth):  # the layers after block 1
        fan_in, fan_out = (cfg.width, cfg.width)
        rows = cfg.width
        if kind == "alternating":
            fan_in, fan_out = (cfg.width, cfg.narrow) if i % 2 == 0 else (cfg.narrow, cfg.width)
            rows = fan_out
        elif kind == "conv_relu":
            fan_in = fan_out = 9 * cfg.conv_channels
            rows = cfg.conv_channels
        if scheme == "torch_default_nobias":
            factor = 1 / 3 * (0.5 if relu else 1.0)  # no gain: torch's own choice
        elif scheme in ("orthogonal", "delta_orthogonal"):
            factor = gain_sq * (min(1.0, fan_in / fan_out) if kind == "alternating" else 1.0)
        else:
            factor = gain_sq * fan_in * scheme_variance(scheme, fan_in, fan_out)
        total += 0.5 * math.log(factor)
        # Exact isometries: orthogonal Linear layers that are square or expanding, delta-orthogonal convolutions.
        isometry = (scheme == "orthogonal" and kind != "conv_relu" and fan_out >= fan_in) or \
            (scheme == "delta_orthogonal" and kind == "conv_relu")
        v = (3.0 if isometry else 5.0) if relu else (0.0 if isometry else 2.0)
        bias -= v / (4 * rows)
        var += v / (4 * rows)
    return total, total + bias, math.sqrt(var)


# --------------------------------------------------------------------------------------------------------------
# 2. Jacobian spectra
# --------------------------------------------------------------------------------------------------------------

# (stack, label, scheme, gain rule): Gaussian 1/n vs orthogonal at the activation's gain, torch's default, and for
# tanh also orthogonal at gain 1 (Su's "tanh needs no correction"), the critical point of dynamical isometry.
JACOBIAN_JOBS = (
    ("linear", "torch_default", "torch_default", None), ("linear", "lecun", "lecun", None),
    ("linear", "orthogonal", "orthogonal", None),
    ("tanh", "torch_default", "torch_default", None), ("tanh", "lecun", "lecun", None),
    ("tanh", "orthogonal", "orthogonal", None), ("tanh", "orthogonal, gain 1", "orthogonal", 1.0),
    ("relu", "torch_default", "torch_default", None), ("relu", "lecun", "lecun", None),
    ("relu", "orthogonal", "orthogonal", None),
)


def jacobian_sweep(cfg: Config, run: Run, gen: torch.Generator) -> dict[str, dict[str, np.ndarray]]:
    """Singular values ``[inputs, width]`` of each stack's input-output Jacobian, computed in float64."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for kind, label, scheme, gain in progress(JACOBIAN_JOBS, desc="init-depth: jacobian", unit="stack"):
        g = stack_gain(cfg, stack_activation(kind)) if gain is None else gain
        # float64: the smallest singular values of a 50-fold product are far below float32's resolution.
        model = _apply(build_stack(kind, cfg), scheme, g, gen).double().to(run.device)
        x = _inputs(kind, cfg, cfg.jacobian_inputs, gen, run.device).double()
        s = jacobian_singular_values(model, x).numpy()
        out.setdefault(kind, {})[label] = s
        run.log(stack=kind, init=label, gain=g, jacobian_log10_spread=log_spread(torch.from_numpy(s)),
                jacobian_rms=float(np.sqrt((s**2).mean())))
    return out


# --------------------------------------------------------------------------------------------------------------
# 3. Training on MNIST
# --------------------------------------------------------------------------------------------------------------

def _load(cfg: Config, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flattened inputs standardised to mean 0 and second moment 1 per coordinate on average, and labels."""
    if cfg.data == "mnist":
        from kexue.data import load_mnist

        xtr, ytr = load_mnist("train")
        xte, yte = load_mnist("test")
        xtr, xte = (torch.from_numpy(a.reshape(len(a), -1)).float() / 255 for a in (xtr, xte))
        ytr, yte = torch.from_numpy(ytr).long(), torch.from_numpy(yte).long()
    else:  # a labelled stand-in with MNIST's shapes: a random linear teacher on Gaussian inputs
        teacher = torch.randn(784, 10, generator=gen)
        xtr, xte = torch.randn(60_000, 784, generator=gen), torch.randn(10_000, 784, generator=gen)
        ytr, yte = (xtr @ teacher).argmax(1), (xte @ teacher).argmax(1)
    mean, std = xtr.mean(), xtr.std()
    return (xtr - mean) / std, ytr, (xte - mean) / std, yte


def parse_init(text: str) -> tuple[str, str]:
    scheme, _, gain = text.partition(":")
    if scheme == "torch_default":
        return scheme, ""
    if scheme not in SIGNAL_SCHEMES:
        raise ConfigError(f"train_inits: unknown scheme {scheme!r} in {text!r}; expected scheme:gain with scheme "
                          f"one of {', '.join(SIGNAL_SCHEMES)}")
    if gain not in ("1", "calibrated", "torch"):
        try:
            float(gain)
        except ValueError:
            raise ConfigError(f"train_inits: gain {gain!r} in {text!r} must be 1, calibrated, torch or a number "
                              f"(e.g. lecun:calibrated)") from None
    return scheme, gain


def _train_gain(gain: str, act: str) -> float:
    if gain == "calibrated":
        return calibrated_gain(act)
    if gain == "torch":
        return nn.init.calculate_gain(act)
    return float(gain)


def build_mlp(act: str, cfg: Config) -> nn.Sequential:
    """784 -> width -> ... -> 10 with ``depth`` Linear layers and ``act`` after all but the last."""
    dims = [784] + [cfg.width] * (cfg.depth - 1) + [10]
    layers: list[nn.Module] = []
    for i in range(cfg.depth):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < cfg.depth - 1:
            layers.append(nn.Tanh() if act == "tanh" else nn.ReLU())
    return nn.Sequential(*layers)


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    correct = sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in zip(x.split(2000), y.split(2000), strict=True))
    return correct / len(y)


def train_sweep(cfg: Config, run: Run, gen: torch.Generator) -> list[dict]:
    xtr, ytr, xte, yte = _load(cfg, gen)
    xte, yte = xte[: cfg.eval_size].to(run.device), yte[: cfg.eval_size].to(run.device)
    inits = [parse_init(t) for t in cfg.train_inits]
    results = []
    for act in cfg.train_acts:
        for (scheme, gain), label in zip(inits, cfg.train_inits, strict=True):
            model = build_mlp(act, cfg)
            g = None
            if scheme != "torch_default":
                g = _train_gain(gain, act)
                init_(model[:-1], scheme, g, generator=gen)
                init_(model[-1], scheme, 1.0, generator=gen)  # the linear read-out gets no activation gain
            model.to(run.device)
            opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
            order = torch.randint(0, len(xtr), (cfg.train_steps, cfg.train_batch), generator=gen)
            losses = []
            bar = progress(range(cfg.train_steps), desc=f"init-depth: {act} {label}", unit="step")
            for step in bar:
                xb, yb = xtr[order[step]].to(run.device), ytr[order[step]].to(run.device)
                loss = nn.functional.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                if step % 50 == 0 or step == cfg.train_steps - 1:
                    run.log(step=step, act=act, init=label, loss=losses[-1])
                    bar.set_postfix(loss=f"{losses[-1]:.3f}")
            acc = _accuracy(model.eval(), xte, yte) if math.isfinite(losses[-1]) else float("nan")
            tail = float(np.mean(losses[-max(1, len(losses) // 10):]))
            results.append({"act": act, "init": label, "gain": g, "losses": np.array(losses), "test_acc": acc,
                            "final_loss": tail})
            run.log(act=act, init=label, test_acc=acc, final_loss=tail)
    return results
