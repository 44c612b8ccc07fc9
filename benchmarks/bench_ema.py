"""Weight-EMA update time per step: kexue's EMA against its peers and the memory-bandwidth floor.

Models of ≈25.1M fp32 parameters in 12, 200 and 2000 tensors (6×Linear(2048), 100×Linear(500), 1000×Linear(158)),
decay 0.999. Methods, all in one process with interleaved rounds (spec ``benchmarks.md`` §1):

- ``kexue EMA.update`` (on the CPU: one compiled parallel loop over every tensor of a dtype group, no per-tensor
  dispatch; see ``kexue.train._lerp_kernel``);
- ``kexue PostHocEMA.update``: two power-function profiles (sigma_rel 0.05 and 0.10, EDM2's), no snapshot taken;
  the cost of post-hoc EMA's tracking side;
- ``torch._foreach_lerp_`` over prebuilt lists (what kexue's update was before the CPU plan);
- a naive per-tensor loop (``mul_`` + ``add_``), the textbook form;
- ``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``;
- ``ema_pytorch.EMA`` (``update_every=1``, no start delay) and the same with ``use_foreach=True``;
- timm ``ModelEmaV3`` (foreach), loaded from ``timm/utils/model_ema.py`` by path: ``import timm`` needs a working
  torchvision, and installing timm normally would replace the CPU torch (``pip install --no-deps timm``);
- the floor, three ways: ``flat lerp_`` times one ``lerp_`` of two contiguous buffers of the same size in every
  round (the same bytes under the same load: ratios to it are the numbers to quote on a busy machine), and 12 bytes
  per parameter (read shadow and weight, write shadow) over the bandwidth of a plain copy and of an in-place
  ``lerp_`` of 1 GiB, measured once at the start.

Peers that are not installed are skipped (``pip install --no-deps ema-pytorch timm``, the ``bench`` extra).

    python benchmarks/bench_ema.py                  # the real numbers (quiet machine, ~5 minutes)
    python benchmarks/bench_ema.py --quick          # tiny sizes, a few rounds: checks that everything runs
"""

import argparse
import gc
import importlib.util
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kexue.train.ema import EMA
from kexue.train.posthoc_ema import PostHocEMA

DECAY = 0.999
FLAT = "flat lerp_ (floor, same bytes)"
OURS = "kexue EMA.update"
SIZES = {12: (6, 2048), 200: (100, 500), 2000: (1000, 158)}  # tensors -> (Linear layers, width)
QUICK_SIZES = {12: (6, 128), 200: (100, 32), 2000: (1000, 10)}


def make_model(layers: int, width: int) -> nn.Module:
    return nn.Sequential(*[nn.Linear(width, width) for _ in range(layers)])


def load_timm_model_ema() -> type | None:
    """``ModelEmaV3`` from timm's ``utils/model_ema.py`` without importing the ``timm`` package."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "utils" / "model_ema.py"
    module_spec = importlib.util.spec_from_file_location("_timm_model_ema", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.ModelEmaV3


def methods_for(model: nn.Module, peers: bool = True) -> dict[str, Callable[[], None]]:
    """name -> a zero-argument callable doing one EMA update of ``model`` (``peers``: include other libraries)."""
    out: dict[str, Callable[[], None]] = {}
    ema = EMA(model, DECAY)
    out[OURS] = lambda: ema.update(model)
    posthoc = PostHocEMA(model, (0.05, 0.10), snapshot_every=10**9)
    out["kexue PostHocEMA (2 profiles)"] = lambda: posthoc.update(model)

    shadow = [p.detach().clone() for p in model.parameters()]
    live = [p.detach() for p in model.parameters()]
    foreach_shadow = [p.detach().clone() for p in model.parameters()]
    out["_foreach_lerp_, prebuilt lists"] = lambda: torch._foreach_lerp_(foreach_shadow, live, 1 - DECAY)
    flat_shadow, flat_live = torch.cat([t.flatten() for t in shadow]), torch.cat([t.flatten() for t in live])
    out[FLAT] = lambda: flat_shadow.lerp_(flat_live, 1 - DECAY)
    if not peers:
        return out

    def naive() -> None:
        with torch.no_grad():
            for s, p in zip(shadow, live, strict=True):
                s.mul_(DECAY).add_(p, alpha=1 - DECAY)

    out["naive loop mul_+add_"] = naive

    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(DECAY), use_buffers=True)
    averaged.update_parameters(model)  # the first call only copies
    out["AveragedModel + multi_avg_fn"] = lambda: averaged.update_parameters(model)

    try:
        from ema_pytorch import EMA as LucidEMA
    except ImportError:
        LucidEMA = None
    if LucidEMA is not None:
        for foreach in (False, True):
            lucid = LucidEMA(model, beta=DECAY, update_after_step=0, update_every=1, use_foreach=foreach)
            lucid.update()
            out[f"ema_pytorch EMA{' (foreach)' if foreach else ''}"] = lucid.update

    model_ema_v3 = load_timm_model_ema()
    if model_ema_v3 is not None:
        timm_ema = model_ema_v3(model, decay=DECAY, foreach=True)
        out["timm ModelEmaV3 (foreach)"] = lambda: timm_ema.update(model)
    return out


def bandwidth(nbytes: int, rounds: int) -> tuple[float, float]:
    """Measured (copy, lerp_) bandwidth in bytes/s over buffers of ``nbytes`` each (counting reads + writes)."""
    n = nbytes // 4
    a, b = torch.rand(n), torch.rand(n)
    copies, lerps = [], []
    for _ in range(rounds):
        gc.collect()
        t = time.perf_counter()
        a.copy_(b)
        copies.append(time.perf_counter() - t)
        t = time.perf_counter()
        a.lerp_(b, 1 - DECAY)
        lerps.append(time.perf_counter() - t)
    return 2 * nbytes / min(copies), 3 * nbytes / min(lerps)


def probe() -> float:
    """A fixed workload (twenty 256×256 matmuls): its time flags noisy rounds."""
    x = torch.rand(256, 256)
    t = time.perf_counter()
    for _ in range(20):
        x @ x
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and few rounds, to check the script runs")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 21, quick 5)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sizes", default="12,200,2000", help="comma-separated tensor counts among 12, 200, 2000")
    parser.add_argument("--no-peers", action="store_true", help="only kexue, _foreach_lerp_ and the floors (faster)")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/ema.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rounds = args.rounds or (5 if args.quick else 21)
    wanted = [int(n) for n in args.sizes.split(",")]
    sizes = {n: v for n, v in (QUICK_SIZES if args.quick else SIZES).items() if n in wanted}
    copy_bw, lerp_bw = bandwidth((64 if args.quick else 1024) * 2**20, 3 if args.quick else 5)

    results = {}
    for tensors, (layers, width) in sizes.items():
        torch.manual_seed(0)
        model = make_model(layers, width)
        params = sum(p.numel() for p in model.parameters())
        methods = methods_for(model, peers=not args.no_peers)
        for fn in methods.values():  # warm-up: 3 untimed calls each
            for _ in range(3):
                fn()
        times: dict[str, list[float]] = {name: [] for name in methods}
        probes = []
        for _ in range(rounds):
            probes.append(probe())
            for name, fn in methods.items():
                gc.collect()
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        floor_copy, floor_lerp = 12 * params / copy_bw, 12 * params / lerp_bw
        results[tensors] = {
            "params": params,
            "methods": {n: {"median_ms": 1e3 * statistics.median(t), "min_ms": 1e3 * min(t), "max_ms": 1e3 * max(t)}
                        for n, t in times.items()},
            "floor_copy_ms": 1e3 * floor_copy,
            "floor_lerp_ms": 1e3 * floor_lerp,
            "probe_median_ms": 1e3 * statistics.median(probes),
            "probe_max_ms": 1e3 * max(probes),
            # per-round ratios to the flat lerp_ of the same bytes: a noisy round slows both alike
            "vs_flat_per_round": {n: statistics.median(a / b for a, b in zip(t, times[FLAT], strict=True))
                                  for n, t in times.items() if n != FLAT},
        }
        del model, methods
        gc.collect()

    # --- table -------------------------------------------------------------------------------------------------------
    names = list(next(iter(results.values()))["methods"])
    print(f"EMA update, decay {DECAY}, {args.threads} threads, median of {rounds} rounds (ms); "
          f"bandwidth copy {copy_bw / 1e9:.1f} GB/s, lerp_ {lerp_bw / 1e9:.1f} GB/s")
    header = f"{'method':<32}" + "".join(f"{f'{t} tensors':>22}" for t in results)
    print(header)
    for name in names:
        print(f"{name:<32}" + "".join(f"{r['methods'][name]['median_ms']:>22.3f}" for r in results.values()))
    print(f"{'floor (12 B/param, copy bw)':<32}" + "".join(f"{r['floor_copy_ms']:>22.3f}" for r in results.values()))
    print(f"{'floor (12 B/param, lerp_ bw)':<32}" + "".join(f"{r['floor_lerp_ms']:>22.3f}" for r in results.values()))
    peers = [n for n in names if not n.startswith("kexue") and n not in (FLAT, "_foreach_lerp_, prebuilt lists")]
    print(f"\nratios to the flat lerp_ of the same bytes (median over rounds of the per-round ratio; bar: {OURS} "
          "<= 1.2), and kexue's median against the fastest peer and the two bandwidth floors:")
    for tensors, r in results.items():
        ours = r["methods"][OURS]["median_ms"]
        per_round = ", ".join(f"{n} {v:.2f}×" for n, v in r["vs_flat_per_round"].items())
        r["posthoc_vs_ema"] = r["methods"]["kexue PostHocEMA (2 profiles)"]["median_ms"] / ours
        r["vs_floor_copy"] = ours / r["floor_copy_ms"]
        r["vs_floor_lerp"] = ours / r["floor_lerp_ms"]
        line = (f"  {tensors:>5} tensors ({r['params'] / 1e6:.2f}M params): {per_round}; PostHocEMA / EMA "
                f"{r['posthoc_vs_ema']:.2f}×; {r['vs_floor_copy']:.2f}× copy floor, {r['vs_floor_lerp']:.2f}× lerp_ "
                f"floor")
        if peers:
            fastest = min(peers, key=lambda n: r["methods"][n]["median_ms"])
            r["vs_fastest_peer"] = ours / r["methods"][fastest]["median_ms"]
            line += f"; {r['vs_fastest_peer']:.2f}× {fastest}"
        print(line + f"; probe median {r['probe_median_ms']:.1f} ms (max {r['probe_max_ms']:.1f})")

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "quick": args.quick, "rounds": rounds, "threads": args.threads, "decay": DECAY,
        "torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "copy_bandwidth_GBps": copy_bw / 1e9, "lerp_bandwidth_GBps": lerp_bw / 1e9, "results": results,
    }, indent=2) + "\n")
    print(f"\nwrote {args.json}")


if __name__ == "__main__":
    main()
