"""The report of ``init-depth`` (:mod:`kexue.experiments.init_depth`): tables, figures and headline numbers of the
three sweeps of :mod:`kexue.experiments._init_depth_sweeps`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from kexue.eval.plots import subplots
from kexue.eval.signal import log_spread, quarter_circle_density
from kexue.experiments._init_depth_sweeps import STACK_TITLES, predicted_drift, stack_activation, stack_gain
from kexue.experiments.rundir import Run
from kexue.nn.init import calibrated_gain

if TYPE_CHECKING:  # the recipe's config; the recipe imports this module
    from kexue.experiments.init_depth import Config

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


def _title(kind: str, cfg: Config) -> str:
    return STACK_TITLES[kind].format(w=cfg.width, n=cfg.narrow)


def report_signal(cfg: Config, run: Run, signal: dict, metrics: dict) -> None:
    run.section("Activation norm through depth")
    gains = {k: stack_gain(cfg, stack_activation(k)) for k in signal}
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


def report_jacobian(cfg: Config, run: Run, spectra: dict, gen: torch.Generator, metrics: dict) -> None:
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


def report_training(cfg: Config, run: Run, results: list[dict], metrics: dict) -> None:
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
