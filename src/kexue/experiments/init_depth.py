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
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from kexue._progress import progress
from kexue.errors import ConfigError
from kexue.eval.plots import subplots
from kexue.eval.signal import activation_second_moments, jacobian_singular_values, log_spread, quarter_circle_density
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.nn.init import calibrated_gain, init_, scheme_variance

SIGNAL_SCHEMES = ("torch_default", "torch_default_nobias", "lecun", "su_fan_out", "xavier", "geometric_mean",
                  "quadratic", "orthogonal", "delta_orthogonal")
STACKS = ("linear", "tanh", "relu", "conv_relu", "alternating")
STACK_TITLES = {"linear": "linear MLP", "tanh": "tanh MLP", "relu": "ReLU MLP", "conv_relu": "ReLU CNN (3x3)",
                "alternating": "linear, widths {w} / {n}"}
STYLE = {  # one colour per scheme; line styles so that schemes that coincide (square layers) stay visible
    "torch_default": dict(color="C3", ls="-", lw=2.2),
    "torch_default_nobias": dict(color="C3", ls=":", lw=1.6),
    "lecun": dict(color="C0", ls="-", lw=2.2),
    "su_fan_out": dict(color="C1", ls="--", lw=1.8),
    "xavier": dict(color="C2", ls="-.", lw=1.8),
    "geometric_mean": dict(color="C4", ls=":", lw=2.2),
    "quadratic": dict(color="C5", ls=(0, (5, 1, 1, 1, 1, 1)), lw=1.6),
    "orthogonal": dict(color="k", ls="-", lw=1.0),
    "delta_orthogonal": dict(color="C7", ls="--", lw=1.2),
}


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
# Stacks
# --------------------------------------------------------------------------------------------------------------

def _gain(cfg: Config, act: str) -> float:
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


def _activation(kind: str) -> str:
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
        model = _apply(build_stack(kind, cfg), scheme, _gain(cfg, _activation(kind)), gen).to(run.device)
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
    gain_sq = _gain(cfg, _activation(kind)) ** 2 * (0.5 if relu else 1.0)
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
        g = _gain(cfg, _activation(kind)) if gain is None else gain
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


def _parse_init(text: str) -> tuple[str, str]:
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
    inits = [_parse_init(t) for t in cfg.train_inits]
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


# --------------------------------------------------------------------------------------------------------------
# Recipe
# --------------------------------------------------------------------------------------------------------------

def run(cfg: Config, run: Run) -> dict:
    for text in cfg.train_inits:
        _parse_init(text)  # fail before any work on a bad spelling
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
    _report_signal(cfg, run, signal, metrics)
    spectra = jacobian_sweep(cfg, run, gen)
    _report_jacobian(cfg, run, spectra, gen, metrics)
    if cfg.train_steps > 0 and cfg.train_inits and cfg.train_acts:
        # Under torch's default the backward signal of a 50-layer stack falls to ~1e-40: subnormal floats, which
        # run 10-100x slower on CPUs. Flushing them to zero changes no result that matters and keeps arms comparable.
        flushed = torch.set_flush_denormal(True)
        try:
            results = train_sweep(cfg, run, gen)
        finally:
            if flushed:
                torch.set_flush_denormal(False)
        _report_training(cfg, run, results, metrics)
    return metrics


def _title(kind: str, cfg: Config) -> str:
    return STACK_TITLES[kind].format(w=cfg.width, n=cfg.narrow)


def _report_signal(cfg: Config, run: Run, signal: dict, metrics: dict) -> None:
    run.section("Activation norm through depth")
    gains = {k: _gain(cfg, _activation(k)) for k in signal}
    rows = []
    for kind, by_scheme in signal.items():
        for scheme, drift in by_scheme.items():
            pred = predicted_drift(kind, scheme, cfg)
            rows.append([_title(kind, cfg), scheme, float(drift[-1]), "–" if pred is None else f"{pred[0]:+.2f}",
                         "–" if pred is None else f"{pred[1]:+.2f} ± {pred[2]:.2f}"])
    run.table(["stack", "scheme", f"log-RMS drift, block 1 → {cfg.depth} (nats)", "predicted (n → ∞)",
               "predicted at this width (± 1 sd)"], rows,
              caption=f"Width {cfg.width}, depth {cfg.depth}, {cfg.batch} N(0, 1) inputs ({cfg.conv_batch} images of "
                      f"{cfg.conv_channels}×{cfg.conv_size}×{cfg.conv_size} for the CNN); gain rule '{cfg.gain}' "
                      f"({', '.join(f'{k}: {g:.4g}' for k, g in gains.items())}). Drift = log RMS after the last "
                      "block minus log RMS after the first; 0 is perfect preservation. 'predicted (n → ∞)' "
                      "multiplies the per-layer second-moment factors of the variances; the last column adds the "
                      "finite-width bias and random walk explained below.")
    mlps = [k for k in ("linear", "tanh", "relu") if k in signal]
    matched = [(abs(float(d[-1])), k, s) for k in mlps for s, d in signal[k].items() if not s.startswith("torch")]
    if matched:
        worst = max(matched)
        metrics["max_abs_drift_matched"] = worst[0]
        # Bar: a variance off by 10% drifts by (depth - 1) * ln(1.1) / 2 = 2.3 nats; finite width alone leaves a
        # random walk of a few tenths of a nat.
        run.summary("max_abs_drift_matched", worst[0], bar=1.0, direction="min",
                    note=f"nats over {cfg.depth} layers, every scheme at the activation's gain, square MLPs "
                         f"(worst: {worst[2]}, {worst[1]})")
    for kind in ("linear", "relu"):
        if kind in signal and "torch_default_nobias" in signal[kind]:
            value = float(signal[kind]["torch_default_nobias"][-1])
            metrics[f"drift_torch_default_{kind}"] = value
            run.summary(f"drift_torch_default_{kind}", value, direction="max",
                        note=f"nats over {cfg.depth} layers, torch's default weights with zero bias; predicted "
                             f"{predicted_drift(kind, 'torch_default_nobias', cfg)[1]:+.1f}")
    checked = [(float(d[-1]), predicted_drift(k, s, cfg)) for k, by in signal.items() for s, d in by.items()]
    checked = [(d, p) for d, p in checked if p is not None]
    layers = cfg.depth - 1
    if checked:
        inside = sum(abs(d - p[1]) <= 2 * p[2] + 0.05 for d, p in checked) / len(checked)
        metrics["drift_within_2sd_of_prediction"] = inside
        run.summary("drift_within_2sd_of_prediction", inside, bar=0.9, direction="max",
                    note=f"share of the {len(checked)} (stack, scheme) rows with a prediction whose drift lies within "
                         "2 sd (+0.05 nats) of the finite-width prediction")
    run.text("Finite width: a layer with n random output rows (the channels, for the CNN) multiplies the second "
             "moment by 1 + ε with Var ε = v/n (v = 2 for a Gaussian-like linear layer, 5 with a ReLU after it, 0 "
             "and 3 for an exact isometry), so the log-RMS picks up a bias of about −v/(4n) and a random walk of "
             f"√(v/n)/2 per layer. Over {layers} layers that is small for the {cfg.width}-wide MLPs (ReLU: "
             f"{-layers * 5 / (4 * cfg.width):+.2f} ± {math.sqrt(layers * 5 / (4 * cfg.width)):.2f} nats) but not for "
             f"a CNN with {cfg.conv_channels} channels, whose Gaussian schemes sink by about "
             f"{layers * 5 / (4 * cfg.conv_channels):.1f} nats: the variance is right, the width is small. The last "
             "column adds this to the infinite-width prediction.")
    if "alternating" in signal:
        m, n = cfg.width, cfg.narrow
        run.text(f"Alternating widths {m} → {n} → {m}: over one pair of layers the second moment is multiplied by "
                 f"m·n·v₁·v₂. That is 1 for LeCun, Su's fan-out rule and the geometric mean (8725's \"global\" "
                 f"rule), {4 * m * n / (m + n) ** 2:.3f} = 4mn/(m+n)² for Xavier and "
                 f"{m * n * (m + n) ** 2 / (m * m + n * n) ** 2:.3f} = mn(m+n)²/(m²+n²)² for the quadratic mean "
                 "(the means of the dimensions are ordered quadratic ≥ arithmetic ≥ geometric, so their variances "
                 f"the other way). Exact orthogonal weights keep the whole-vector norm when expanding {n} → {m}, "
                 f"which spreads it over {m / n:g}× more coordinates: a factor {n / m:g} per pair.")
    run.text("PyTorch's default `nn.Linear` / `nn.Conv2d` (variance 1/(3 fan_in), plus biases drawn from "
             "U(±1/√fan_in)): with zero biases the RMS shrinks geometrically, exactly as the variance predicts; with "
             "its own biases it sinks instead to the floor the biases maintain (second moment 1/(2n) for the linear "
             "stack), where the activations no longer depend on the input: see the Jacobian below.")
    _figure_signal(cfg, run, signal)


def _figure_signal(cfg: Config, run: Run, signal: dict) -> None:
    kinds = list(signal)
    fig, axes = subplots(2, len(kinds), width=3.3, height=2.7, sharex=True)
    layers = np.arange(1, cfg.depth + 1)
    for col, kind in enumerate(kinds):
        for row in range(2):
            ax = axes[row, col]
            for scheme, drift in signal[kind].items():
                if row == 1 and scheme.startswith("torch"):
                    continue
                ax.plot(layers, drift / math.log(10), label=scheme, **STYLE[scheme])
            ax.axhline(0, color="gray", lw=0.6, zorder=0)
            ax.grid(alpha=0.25)
            if row == 0:
                ax.set_title(_title(kind, cfg), fontsize=10)
            else:
                ax.set_xlabel("layer")
    axes[0, 0].set_ylabel("log₁₀ RMS / RMS₁")
    axes[1, 0].set_ylabel("log₁₀ RMS / RMS₁ (zoom)")
    handles, labels = [], []
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8, frameon=False)
    run.figure(fig, "log_norm_depth", f"Activation RMS through {cfg.depth} plain layers, relative to layer 1 (top: "
               "every scheme; bottom: without PyTorch's default, zoomed). On square layers LeCun, Su's fan-out, "
               "Xavier, geometric and quadratic means are the same variance and their curves differ only by sampling "
               f"noise; they separate on the alternating {cfg.width}/{cfg.narrow} stack. PyTorch's default with "
               "zero biases drifts linearly; with its biases it stops at the biases' floor.", headline=True)


def _report_jacobian(cfg: Config, run: Run, spectra: dict, gen: torch.Generator, metrics: dict) -> None:
    run.section("Jacobian singular values: Gaussian 1/n versus orthogonal")
    rows = []
    for kind, by_init in spectra.items():
        for label, s in by_init.items():
            rows.append([kind, label, float(np.sqrt((s**2).mean())), float(np.median(s)),
                         float(((s > 0.1) & (s < 10)).mean()), log_spread(torch.from_numpy(s))])
    run.table(["stack", "init", "RMS singular value", "median", "share in [0.1, 10]", "log₁₀(q90 / q10)"], rows,
              caption=f"Input-output Jacobian of {cfg.depth}-layer, width-{cfg.width} stacks at "
                      f"{cfg.jacobian_inputs} N(0, 1) inputs, float64, all singular values pooled.")
    for label in ("lecun", "orthogonal"):
        if label in spectra.get("linear", {}):
            value = log_spread(torch.from_numpy(spectra["linear"][label]))
            metrics[f"jacobian_spread_linear_{label}"] = value
            run.summary(f"jacobian_spread_linear_{label}", value, direction="min",
                        note="decades between the 90th and 10th percentile singular value, linear stack")
    run.text("Gaussian and orthogonal weights both keep the *mean square* singular value near 1 for the linear stack "
             "(that is all the forward second moment sees), but the Gaussian product spreads its singular values "
             "over tens of decades: each factor's singular values already fill [0, 2] (quarter-circle law). The "
             "orthogonal linear stack is an exact isometry. ReLU stacks lose rank whatever the weights, since every "
             "ReLU zeroes about half of the coordinates.")
    tanh = spectra.get("tanh", {})
    if "orthogonal" in tanh and "orthogonal, gain 1" in tanh:
        hot, cold = tanh["orthogonal"], tanh["orthogonal, gain 1"]
        run.text(f"tanh, orthogonal weights: at the calibrated gain the RMS singular value is "
                 f"{np.sqrt((hot**2).mean()):.3g} and the spread {log_spread(torch.from_numpy(hot)):.1f} decades "
                 "(gradients of some directions explode: the chaotic phase, although the forward second moment is "
                 f"kept); at gain 1 they are {np.sqrt((cold**2).mean()):.3g} and "
                 f"{log_spread(torch.from_numpy(cold)):.1f} decades, close to the critical point of dynamical "
                 "isometry, while the forward signal slowly decays.")

    n = cfg.width
    w_gauss = torch.randn(n, n, generator=gen, dtype=torch.float64) / math.sqrt(n)
    w_orth = nn.init.orthogonal_(torch.empty(n, n, dtype=torch.float64), generator=gen)
    s_gauss, s_orth = torch.linalg.svdvals(w_gauss).numpy(), torch.linalg.svdvals(w_orth).numpy()
    kinds = list(spectra)
    fig, axes = subplots(1, 1 + len(kinds), width=3.4, height=3.1)
    ax = axes[0, 0]
    ax.hist(s_gauss, bins=25, range=(0, 2.2), density=True, color="#9ecae1", label="Gaussian 1/n")
    grid = torch.linspace(0, 2, 400, dtype=torch.float64)
    ax.plot(grid.numpy(), quarter_circle_density(grid).numpy(), "k-", lw=1.2, label="√(4−s²)/π")
    ax.axvline(float(s_orth.mean()), color="C3", lw=2, label="orthogonal: all 1")
    ax.set_ylim(0, 1.0)
    ax.set_title(f"one {n}×{n} layer", fontsize=10)
    ax.set_xlabel("singular value s")
    ax.set_ylabel("density")
    ax.legend(fontsize=7, loc="upper right")
    colours = {"torch_default": "C3", "lecun": "C0", "orthogonal": "k", "orthogonal, gain 1": "C2"}
    for ax, kind in zip(axes[0, 1:], kinds, strict=True):
        for label, s in spectra[kind].items():
            srt = np.sort(s, axis=1)[:, ::-1]
            rank = np.arange(1, srt.shape[1] + 1) / srt.shape[1]
            for i, row in enumerate(srt):
                ax.semilogy(rank, np.maximum(row, 1e-300), color=colours[label], lw=1.3 if i == 0 else 0.6,
                            alpha=1 if i == 0 else 0.4, label=label if i == 0 else None)
        ax.set_ylim(1e-30, 1e6)
        ax.set_title(f"{kind} MLP, depth {cfg.depth}", fontsize=10)
        ax.set_xlabel("rank / n")
        ax.grid(alpha=0.25, which="major")
        ax.legend(fontsize=7, loc="lower left")
    axes[0, 1].set_ylabel("singular value of ∂f/∂x")
    run.figure(fig, "jacobian_spectra", f"Left: the singular values of one {n}×{n} Gaussian matrix with variance 1/n "
               "fill [0, 2] (quarter-circle law); an orthogonal matrix has them all at 1. Right: sorted singular "
               f"values of the input-output Jacobian of {cfg.depth}-layer stacks (one line per input; values below "
               f"10⁻³⁰ are clipped: lost rank; a floor about 10⁻¹⁵ below the largest value is float64 round-off), "
               f"weights at gain '{cfg.gain}' unless marked.")


def _report_training(cfg: Config, run: Run, results: list[dict], metrics: dict) -> None:
    run.section(f"Training {cfg.depth}-layer plain MLPs")
    chance = 0.1
    rows = [[r["act"], r["init"], "torch" if r["gain"] is None else f"{r['gain']:.4g}", r["final_loss"],
             r["test_acc"], "yes" if r["test_acc"] > 2 * chance else "no"] for r in results]
    data = "MNIST" if cfg.data == "mnist" else "a synthetic stand-in for MNIST"
    run.table(["activation", "init", "gain", "loss (last 10% of steps)", "test accuracy", "trains?"], rows,
              caption=f"{cfg.train_steps} SGD steps (lr {cfg.lr}, momentum {cfg.momentum}, batch {cfg.train_batch}) "
                      f"on {data}, width {cfg.width}, {cfg.depth} Linear layers, no normalisation, no residuals; "
                      f"test accuracy on {cfg.eval_size} test images; 'trains' = accuracy above twice chance.")
    trained = [f"{r['act']} with {r['init']}" for r in results if r["test_acc"] > 2 * chance]
    failed = [f"{r['act']} with {r['init']}" for r in results if not r["test_acc"] > 2 * chance]
    run.text(f"Measured in this run: trained: {', '.join(trained) or 'none'}; stuck near chance: "
             f"{', '.join(failed) or 'none'}. How to read it with the two sections above: a 50-layer plain stack "
             "can train only if the forward signal survives (torch's default and a ReLU stack at gain 1 lose it "
             "geometrically) and the Jacobian does not explode: compare the RMS singular values of tanh at its "
             f"calibrated gain {calibrated_gain('tanh'):.3g} with those at gain 1 in the Jacobian table.")
    tanh = [r for r in results if r["act"] == "tanh" and r["gain"] is not None]
    one = [r["test_acc"] for r in tanh if r["gain"] == 1.0]
    cal = [r["test_acc"] for r in tanh if r["gain"] == calibrated_gain("tanh")]
    if one and cal:
        verdict = "bears it out" if max(one) > max(2 * chance, max(cal)) else "does not bear it out"
        run.text(f"Su argues that tanh needs no gain (tanh x ≈ x near 0). At depth {cfg.depth}, tanh at gain 1 "
                 f"reached {max(one):.1%} test accuracy (best of {len(one)}), at the calibrated gain {max(cal):.1%}: "
                 f"this run {verdict}. The calibrated gain keeps the forward second moment, not the gradients.")
    for r in results:
        key = f"test_acc_{r['act']}_{r['init'].replace(':', '_')}"
        metrics[key] = r["test_acc"]
    best = {act: max((r for r in results if r["act"] == act and r["init"] != "torch_default"),
                     key=lambda r: r["test_acc"], default=None) for act in cfg.train_acts}
    for act, r in best.items():
        if r is not None:
            run.summary(f"test_acc_{act}_best_init", r["test_acc"], bar=2 * chance, direction="max",
                        note=f"{r['init']}, {cfg.train_steps} steps")
    for r in results:
        if r["init"] == "torch_default":
            run.summary(f"test_acc_{r['act']}_torch_default", r["test_acc"], direction="max",
                        note=f"{cfg.train_steps} steps")

    acts = list(cfg.train_acts)
    fig, axes = subplots(1, len(acts), width=4.2, height=3.1, sharey=True)
    for ax, act in zip(axes[0], acts, strict=True):
        for i, r in enumerate(x for x in results if x["act"] == act):
            losses = r["losses"]
            k = max(1, len(losses) // 30)  # moving average, so the curves are readable
            smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
            gain = "" if r["gain"] is None else f", gain {r['gain']:.3g}"
            ax.plot(np.arange(len(smooth)) + k, smooth, color=f"C{i}", label=f"{r['init']}{gain} ({r['test_acc']:.0%})")
        ax.axhline(math.log(10), color="gray", ls=":", lw=1, label="chance (ln 10)")
        ax.set_title(f"{act}, {cfg.depth} layers", fontsize=10)
        ax.set_xlabel("SGD step")
        ax.legend(fontsize=7, title="init (test accuracy)", title_fontsize=7)
        ax.grid(alpha=0.25)
    axes[0, 0].set_ylabel("training loss (moving average)")
    run.figure(fig, "training", f"Training loss of {cfg.depth}-layer plain MLPs on {data} under each init.")


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
