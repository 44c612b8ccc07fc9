"""attention-scaling: time and memory of softmax vs linear attention against sequence length (post 6; 8610).

Claim (Katharopoulos et al. Fig. 1; Su, kexue.fm/archives/8610): linear attention costs O(N d^2) and softmax
attention O(N^2 d), so linear wins beyond a crossover length, which Su's FLOP count puts near n ~ d per head
(n ~ 16 d if linear attention needs a 4x wider head). We time forward and forward+backward of one attention op
(B=1, H heads, head size d, fp32) for PyTorch's SDPA (causal and not) and every form of linear attention in kexue
(chunked causal with the custom backward, the dense masked reference, the recurrent loop, non-causal), record peak
allocator memory, and report the measured crossover N.
"""

import gc
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from kexue._progress import progress
from kexue.eval.plots import subplots
from kexue.experiments.config import ExperimentConfig, param
from kexue.experiments.registry import Experiment
from kexue.experiments.rundir import Run
from kexue.ops.attention import linear_attention
from kexue.profiling import peak_bytes_many


@dataclass
class Config(ExperimentConfig):
    lengths: tuple[int, ...] = param((128, 256, 512, 1024, 2048, 4096, 8192, 16384),
                                     "sequence lengths N for every method", min=2)
    linear_lengths: tuple[int, ...] = param((32768, 65536), "extra lengths for the linear forms only", min=2,
                                             allow_empty=True)
    heads: int = param(8, "attention heads H", min=1)
    head_dim: int = param(64, "head size d = M", min=1)
    repeats: int = param(5, "timed calls per point (median reported)", min=1)
    dense_max: int = param(4096, "longest N for the O(N^2)-memory dense linear reference", min=2)
    recurrent_max: int = param(2048, "longest N for the Python-loop recurrent form (forward only)", min=2)
    chunk_size: int = param(64, "chunk of the chunked causal form (the library default)", min=1)


def _interleaved_ms(fns: dict, repeats: int) -> dict:
    """Median milliseconds of each callable; every round times all of them once (a noisy spell on a shared machine
    then slows every method alike), after one untimed warm-up call each. Python's garbage collector is run once per
    round and kept off while the round is timed (a full collection costs more than a small call)."""
    for fn in fns.values():
        fn()
    times = {key: [] for key in fns}
    for _ in range(repeats):
        gc.collect()
        gc.disable()
        try:
            for key, fn in fns.items():
                start = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - start)
        finally:
            gc.enable()
    return {key: 1e3 * float(np.median(ts)) for key, ts in times.items()}


METHODS = {
    "SDPA causal": lambda q, k, v, cs: F.scaled_dot_product_attention(q, k, v, is_causal=True),
    "SDPA non-causal": lambda q, k, v, cs: F.scaled_dot_product_attention(q, k, v),
    "linear causal (chunked)": lambda q, k, v, cs: linear_attention(q, k, v, causal=True, chunk_size=cs),
    "linear causal (dense ref.)": lambda q, k, v, cs: linear_attention(q, k, v, causal=True, impl="dense"),
    "linear causal (recurrent)": lambda q, k, v, cs: linear_attention(q, k, v, causal=True, impl="recurrent"),
    "linear non-causal": lambda q, k, v, cs: linear_attention(q, k, v),
}


def _applies(method: str, n: int, cfg: Config, extra: bool) -> bool:
    if extra and not method.startswith("linear"):
        return False
    if "dense" in method:
        return n <= cfg.dense_max
    if "recurrent" in method:
        return n <= cfg.recurrent_max
    return True


def _crossover(ns: list[int], ratios: list[float]) -> float:
    """N beyond which linear stays faster (time ratio linear / SDPA < 1 at every longer measured N), interpolated
    in log-log between the last N where it was slower and the next; nan if it never wins, ns[0] if it always does."""
    slower = [i for i, r in enumerate(ratios) if r >= 1]
    if not slower:
        return float(ns[0])
    i = slower[-1]
    if i == len(ns) - 1:
        return float("nan")
    a, b = math.log(ratios[i]), math.log(ratios[i + 1])  # a >= 0 > b
    return float(math.exp(math.log(ns[i]) + (math.log(ns[i + 1]) - math.log(ns[i])) * a / (a - b)))


def run(cfg: Config, run: Run) -> dict:
    points = [(n, False) for n in sorted(cfg.lengths)] + [(n, True) for n in sorted(cfg.linear_lengths)
                                                          if n > max(cfg.lengths)]
    results = {m: {} for m in METHODS}  # method -> N -> dict
    gen = torch.Generator(device=run.device).manual_seed(cfg.seed)
    bar = progress(points, desc="attention-scaling", unit="N")
    for n, extra in bar:
        shape = (1, cfg.heads, n, cfg.head_dim)
        q, k, v = (torch.randn(shape, generator=gen, device=run.device) for _ in range(3))
        grad = torch.randn(shape, generator=gen, device=run.device)
        fns = {}
        for method, op in METHODS.items():
            if not _applies(method, n, cfg, extra):
                continue

            def fwd(op=op, q=q, k=k, v=v):
                with torch.no_grad():
                    return op(q, k, v, cfg.chunk_size)

            fns[method, "fwd"] = fwd
            if "recurrent" not in method:  # the Python loop's backward is far too slow to be worth timing
                qg, kg, vg = (t.clone().requires_grad_() for t in (q, k, v))

                def fwd_bwd(op=op, qg=qg, kg=kg, vg=vg, grad=grad):
                    for t in (qg, kg, vg):
                        t.grad = None
                    op(qg, kg, vg, cfg.chunk_size).backward(grad)

                fns[method, "fwd_bwd"] = fwd_bwd
        bar.set_postfix(N=n, methods=len(fns))
        mems = {key: b / 2**20 for key, b in peak_bytes_many(fns).items()}
        for (method, mode), ms in _interleaved_ms(fns, cfg.repeats).items():
            results[method].setdefault(n, {})[f"{mode}_ms"] = ms
            results[method][n][f"{mode}_mib"] = mems[method, mode]
        for method in {m for m, _ in fns}:
            run.log(n, method=method, **results[method][n])

    sd, lin = results["SDPA causal"], results["linear causal (chunked)"]
    common = sorted(set(sd) & set(lin))
    crossover = {mode: _crossover(common, [lin[n][mode] / sd[n][mode] for n in common])
                 for mode in ("fwd_ms", "fwd_bwd_ms")}
    metrics = {"crossover_fwd": crossover["fwd_ms"], "crossover_fwd_bwd": crossover["fwd_bwd_ms"]}
    n_top = max(common)
    metrics["speedup_fwd_bwd_at_max_n"] = sd[n_top]["fwd_bwd_ms"] / lin[n_top]["fwd_bwd_ms"]
    run.summary("crossover_n_causal_fwd_bwd", crossover["fwd_bwd_ms"], direction="min",
                note="N where chunked linear overtakes SDPA causal for good (forward+backward, log-log interpolated)")
    run.summary(f"speedup_vs_sdpa_causal_fwd_bwd_n{n_top}", metrics["speedup_fwd_bwd_at_max_n"],
                note=f"SDPA causal ÷ linear chunked, forward+backward, N={n_top}")
    # Growth exponents: least-squares slope of log time (or memory) on log N over the three longest lengths each
    # method ran at (~1 for linear, ~2 for softmax); three points rather than two, as one noisy point on a shared
    # machine can bend a two-point slope far off.
    exponents = (("linear", lin, "fwd_bwd_ms", "1 = linear", 1.3), ("sdpa", sd, "fwd_bwd_ms", "2 = quadratic", None),
                 ("linear_memory", lin, "fwd_bwd_mib", "1 = linear", 1.1))
    for name, res, key, expect, bar_value in exponents:
        lens = sorted(res)[-3:]
        if len(lens) < 2:
            continue
        slope = float(np.polyfit(np.log(lens), np.log([res[n][key] for n in lens]), 1)[0])
        metrics[f"exponent_{name}"] = slope
        what = "peak memory" if "mib" in key else "time"
        run.summary(f"exponent_{name}", slope, bar=bar_value, direction="min",
                    note=f"slope of log {what} on log N, forward+backward, N={lens[0]}…{lens[-1]} ({expect})")

    run.section("Claim")
    run.text("Softmax attention costs O(N² d), linear attention O(N d²): beyond a crossover length linear attention "
             "is faster and its memory grows linearly (Su 8610: crossover near n ≈ d per head in FLOPs, n ≈ 16d if "
             "the linear head must be 4x wider).")
    run.section("Measurements")
    run.text(f"B=1, H={cfg.heads}, d=M={cfg.head_dim}, fp32 on {run.device} ({torch.get_num_threads()} threads), "
             f"median of {cfg.repeats} interleaved rounds after a warm-up; memory = peak torch-allocator bytes during "
             "the call "
             "(inputs excluded, outputs and gradients included). The machine may be shared: ratios within one run "
             "are meaningful, absolute times less so.")
    ns = sorted({n for r in results.values() for n in r})
    for mode, label in (("fwd_ms", "forward ms"), ("fwd_bwd_ms", "forward+backward ms"),
                        ("fwd_bwd_mib", "forward+backward peak MiB")):
        run.table(["method", *[str(n) for n in ns]],
                  [[m, *[r[n][mode] if n in r and mode in r[n] else "–" for n in ns]] for m, r in results.items()],
                  caption=label)
    def where(n: float) -> str:
        if math.isnan(n):
            return f"not within N ≤ {common[-1]}"
        return f"N ≤ {common[0]} (faster at every length measured)" if n == common[0] else f"N ≈ {n:.0f}"

    run.text(f"Measured crossover (chunked linear faster than SDPA causal at this and every longer N, log-log "
             f"interpolated between measured lengths): forward {where(crossover['fwd_ms'])}, forward+backward "
             f"{where(crossover['fwd_bwd_ms'])}. Su's FLOP count (8610) "
             f"puts it near N ≈ d = {cfg.head_dim} per head, N ≈ 16 d = {16 * cfg.head_dim} if linear attention needs "
             "a 4x wider head.")
    _figures(run, results, crossover)
    return metrics


def _figures(run: Run, results: dict, crossover: dict) -> None:
    fig, axes = subplots(1, 3, width=4.2, height=3.6)
    styles = {"SDPA causal": "C3-o", "SDPA non-causal": "C3--s", "linear causal (chunked)": "C0-o",
              "linear causal (dense ref.)": "C2:^", "linear causal (recurrent)": "C4:v", "linear non-causal": "C0--s"}
    for ax, (mode, label) in zip(axes[0], (("fwd_ms", "forward (ms)"), ("fwd_bwd_ms", "forward + backward (ms)"),
                                           ("fwd_bwd_mib", "f+b peak memory (MiB)")), strict=True):
        for method, res in results.items():
            ns = [n for n in sorted(res) if mode in res[n]]
            if ns:
                ax.loglog(ns, [res[n][mode] for n in ns], styles[method], label=method, ms=4, lw=1.2)
        if "ms" in mode and math.isfinite(crossover[mode]):
            ax.axvline(crossover[mode], color="gray", lw=0.8, ls=":")
        ax.set_xlabel("sequence length N")
        ax.set_title(label, fontsize=10)
    axes[0, 0].legend(fontsize=7)
    run.figure(fig, "scaling", "Time and peak memory of one attention op against N (log-log). SDPA grows ~N², linear "
               "attention ~N; the dotted line marks the measured crossover for causal attention.", headline=True)


EXPERIMENT = Experiment(
    name="attention-scaling",
    post=6,
    description="time and memory vs N: SDPA causal/non-causal vs linear (chunked, dense, recurrent, non-causal)",
    config=Config,
    run=run,
    presets={"quick": {"lengths": (64, 128, 256, 512, 1024, 2048, 4096), "linear_lengths": (8192, 16384), "repeats": 3,
                       "dense_max": 2048, "recurrent_max": 1024},
             "full": {}},
    smoke={"lengths": (32, 64), "linear_lengths": (), "heads": 2, "head_dim": 8, "repeats": 1, "dense_max": 64,
           "recurrent_max": 32, "chunk_size": 16},
)
