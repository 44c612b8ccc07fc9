"""Benchmark: NVAE training throughput (images/s) and peak memory (spec benchmarks.md §1), CPU and, if present, GPU.

CPU, the ``nvae-mnist`` quick model (dynamically binarised 28×28 MNIST-shaped batches of 64), one full training step
each (forward, NVAE loss with KL balancing, spectral + BN regularisers, backward, Adamax), interleaved rounds,
median of >= 5 after a warm-up, a matmul probe per round, peak torch-allocator memory from the CPU profiler:

- ``kexue NVAE`` — the default: NHWC activations, the spectral regulariser's batched power iteration;
- ``+ checkpointing`` — BN-Swish outputs recomputed in the backward pass;
- ``NCHW`` — the same step with contiguous (NCHW) activations, what the channels-last default replaces;
- ``per-layer SR`` — the spectral regulariser iterating layer by layer (no stacked copy of the weights);
- ``flat VAE (same params)`` — the ``vae-flat-mnist`` quick model, the peer of the comparison the experiments make.

Then the spectral regulariser alone on the quick and full models (forward + backward): the batched power iteration
(stacked weights, the default), the per-layer one and the reference loop.

The official NVAE code has no CPU path (``.cuda()`` is hard-coded), so no external peer runs here.

GPU (only when CUDA is available): the ``nvae-mnist`` full model (the paper's MNIST settings, batch 200) in fp32,
bf16 autocast and fp16 autocast + GradScaler, each with and without gradient checkpointing: images/s (CUDA events
around whole steps) and ``torch.cuda.max_memory_allocated``.

Run on a quiet machine:
    .venv/bin/python benchmarks/bench_nvae.py --threads 2 --out benchmarks/results/nvae.json
``--quick`` uses a tiny model and few rounds to check the script works.
"""

import argparse
import copy
import gc
import statistics
import sys
import tempfile
import time

import torch

from _common import probe_ms, write_json
from kexue.experiments import nvae_mnist, vae_flat_mnist
from kexue.experiments.registry import get
from kexue.experiments.runner import resolve_config
from kexue.losses.vae import adamax, spectral_norm_reference
from kexue.models.nvae import NVAE, count_parameters
from kexue.profiling import peak_mib
from kexue.train.runtime import Runtime
from kexue.train.vae import NVAEStep


class _ReferenceSR(torch.nn.Module):
    """The spectral regulariser computed layer by layer with ``spectral_norm_reference`` (its slow twin)."""

    def __init__(self, fast) -> None:
        super().__init__()
        self.layers = fast._layers
        self.vectors = []
        for g, (_, idx) in enumerate(fast._groups):
            for row, i in enumerate(idx):
                self.vectors.append((i, getattr(fast, f"u{g}")[row].clone(), getattr(fast, f"v{g}")[row].clone()))

    def forward(self) -> torch.Tensor:
        total = 0.0
        for k, (i, u, v) in enumerate(self.vectors):
            w = self.layers[i]
            w = (w.normalized_weight() if hasattr(w, "normalized_weight") else w.weight).reshape(w.out_channels, -1)
            sigma, u, v = spectral_norm_reference(w, u, v, 4)
            self.vectors[k] = (i, u, v)
            total = total + sigma
        return total


def make_step(model: NVAE, batch: torch.Tensor, amp: str = "none", directory: str = "") -> tuple:
    opt = adamax(model.parameters(), lr=1e-3)
    step = NVAEStep(model, opt, None, batch=lambda t: batch, total_steps=1000, amp=amp)
    rt = Runtime(model=step.modules(), optimizer=opt, directory=directory)
    rt.step = 100  # inside the KL warm-up: balancing on, as in the first 30% of training
    step(rt)  # the first call runs the power iteration's 40 initial steps
    return step, rt


def cpu_section(quick: bool, rounds: int, batch_size: int) -> dict:
    if quick:
        over = {**nvae_mnist.EXPERIMENT.smoke, "channels": 4}
        flat_over = {**vae_flat_mnist.EXPERIMENT.smoke}
    else:
        over, flat_over = {}, {}
    cfg = resolve_config(get("nvae-mnist"), "quick", over)
    flat_cfg = resolve_config(get("vae-flat-mnist"), "quick", flat_over)
    torch.manual_seed(0)
    batch = torch.bernoulli(torch.rand(batch_size, 1, 28, 28))
    tmp = tempfile.mkdtemp()
    models = {"kexue NVAE": nvae_mnist.build(cfg)}
    ckpt = copy.deepcopy(models["kexue NVAE"])
    ckpt.set_checkpointing(True)
    models["+ checkpointing"] = ckpt
    nchw = copy.deepcopy(models["kexue NVAE"])
    nchw.memory_format = torch.contiguous_format
    models["NCHW"] = nchw
    models["per-layer SR"] = copy.deepcopy(models["kexue NVAE"])
    flat = vae_flat_mnist._build(flat_cfg, vae_flat_mnist.matched_channels(flat_cfg))
    models["flat VAE (same params)"] = flat
    steps = {}
    for name, model in models.items():
        step, rt = make_step(model, batch, directory=tmp)
        if name == "per-layer SR":
            step.spectral.batched = False
        steps[name] = (step, rt)
    params = {name: count_parameters(m) for name, m in models.items()}

    samples: dict[str, list[float]] = {name: [] for name in steps}
    probes = []
    for step, rt in steps.values():  # warm-up
        step(rt)
    for _ in range(rounds):
        probes.append(probe_ms())
        for name, (step, rt) in steps.items():
            gc.collect()
            start = time.perf_counter()
            step(rt)
            samples[name].append(time.perf_counter() - start)
    rows = []
    base = statistics.median(samples["kexue NVAE"])
    for name, (step, rt) in steps.items():
        for p in step.model.parameters():
            p.grad = None
        mib = peak_mib(lambda step=step, rt=rt: step(rt))
        med = statistics.median(samples[name])
        rows.append({"method": name, "parameters": params[name], "median_s": med, "min_s": min(samples[name]),
                     "max_s": max(samples[name]), "images_per_s": batch_size / med, "peak_mib": mib,
                     "time_over_kexue": med / base})
    return {"batch": batch_size, "rounds": rounds, "probe_ms_median": statistics.median(probes),
            "probe_ms_max": max(probes), "config": {k: getattr(cfg, k) for k in nvae_mnist.QUICK}, "rows": rows}


def spectral_section(quick: bool, rounds: int) -> dict:
    """The spectral regulariser alone (power iteration + Σσ, forward and backward): the batched form (stacked
    weights, bmm: the default), the per-layer form and the reference loop."""
    from kexue.losses.vae import SpectralRegularizer

    over = {**nvae_mnist.EXPERIMENT.smoke, "channels": 4} if quick else {}
    out = {}
    for preset in ("quick",) if quick else ("quick", "full"):
        model = nvae_mnist.build(resolve_config(get("nvae-mnist"), preset, over))
        regs = {"batched": SpectralRegularizer(model, batched=True),
                "per-layer": SpectralRegularizer(model, batched=False)}
        regs["per-layer"].load_state_dict(regs["batched"].state_dict())
        regs["reference"] = _ReferenceSR(regs["batched"])

        def run(reg, model=model):
            model.zero_grad(set_to_none=True)
            reg().backward()

        times: dict[str, list[float]] = {name: [] for name in regs}
        for reg in regs.values():
            run(reg)
        for _ in range(rounds):
            for name, reg in regs.items():
                gc.collect()
                start = time.perf_counter()
                run(reg)
                times[name].append(time.perf_counter() - start)
        med = {k: 1e3 * statistics.median(v) for k, v in times.items()}
        out[preset] = {"layers": len(regs["batched"]._layers), "shape_groups": len(regs["batched"]._groups),
                       **{f"{k}_ms": v for k, v in med.items()},
                       "batched_over_per_layer": med["batched"] / med["per-layer"]}
    return out


def gpu_section(quick: bool, rounds: int) -> dict | None:
    if not torch.cuda.is_available():
        return None
    device = torch.device("cuda")
    cfg = resolve_config(get("nvae-mnist"), "quick" if quick else "full", {})
    batch_size = 32 if quick else cfg.batch_size
    batch = torch.bernoulli(torch.rand(batch_size, 1, 28, 28, device=device))
    rows = []
    tmp = tempfile.mkdtemp()
    for amp in ("none", "bf16", "fp16"):
        for checkpointing in (False, True):
            torch.manual_seed(0)
            model = nvae_mnist.build(cfg).to(device)
            model.set_checkpointing(checkpointing)
            step, rt = make_step(model, batch, amp=amp, directory=tmp)
            for _ in range(2):
                step(rt)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            times = []
            for _ in range(rounds):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                step(rt)
                end.record()
                torch.cuda.synchronize()
                times.append(start.elapsed_time(end) / 1e3)
            med = statistics.median(times)
            rows.append({"amp": amp, "checkpointing": checkpointing, "median_s": med, "min_s": min(times),
                         "images_per_s": batch_size / med,
                         "peak_mib": torch.cuda.max_memory_allocated() / 2**20})
            del model, step, rt
            gc.collect()
            torch.cuda.empty_cache()
    return {"device": torch.cuda.get_device_name(), "batch": batch_size, "rounds": rounds,
            "parameters": count_parameters(nvae_mnist.build(cfg)), "rows": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, few rounds: check that the script works")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--out", default="benchmarks/results/nvae.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rounds = 3 if args.quick else max(5, args.rounds)
    print(f"torch {torch.__version__}, {args.threads} threads")
    cpu = cpu_section(args.quick, rounds, 8 if args.quick else args.batch)
    print(f"\nCPU training step, nvae-mnist quick model, batch {cpu['batch']}, median of {rounds} "
          f"(probe median {cpu['probe_ms_median']:.1f} ms, max {cpu['probe_ms_max']:.1f}; 3.3 ms when quiet):")
    print(f"{'method':24s} {'params':>9s} {'images/s':>9s} {'ms/step':>9s} {'× kexue':>8s} {'peak MiB':>9s}")
    for r in cpu["rows"]:
        print(f"{r['method']:24s} {r['parameters']:9,d} {r['images_per_s']:9.1f} {1e3 * r['median_s']:9.1f} "
              f"{r['time_over_kexue']:8.2f} {r['peak_mib']:9.1f}")
    rows = {r["method"]: r for r in cpu["rows"]}
    summary = {
        "cpu_images_per_s": rows["kexue NVAE"]["images_per_s"], "cpu_peak_mib": rows["kexue NVAE"]["peak_mib"],
        "checkpointing_memory_ratio": rows["+ checkpointing"]["peak_mib"] / rows["kexue NVAE"]["peak_mib"],
        "checkpointing_time_ratio": rows["+ checkpointing"]["time_over_kexue"],
        "nchw_time_ratio": rows["NCHW"]["time_over_kexue"],
        "per_layer_sr_time_ratio": rows["per-layer SR"]["time_over_kexue"],
        "flat_vae_time_ratio": rows["flat VAE (same params)"]["time_over_kexue"],
    }
    sr = spectral_section(args.quick, rounds)
    print("\nspectral regulariser alone (power iteration + Σσ, forward + backward), median ms:")
    for preset, r in sr.items():
        print(f"  {preset} model ({r['layers']} conv layers, {r['shape_groups']} shapes): batched "
              f"{r['batched_ms']:.1f}, per layer {r['per-layer_ms']:.1f}, reference loop {r['reference_ms']:.1f}")
        summary[f"sr_batched_over_per_layer_{preset}"] = r["batched_over_per_layer"]
    gpu = gpu_section(args.quick, rounds)
    if gpu is None:
        print("\nno CUDA device: GPU section skipped")
    else:
        print(f"\nGPU training step on {gpu['device']}, nvae-mnist {'quick' if args.quick else 'full'} model "
              f"({gpu['parameters']:,} parameters), batch {gpu['batch']}:")
        print(f"{'amp':6s} {'checkpoint':>10s} {'images/s':>9s} {'ms/step':>9s} {'peak MiB':>9s}")
        for r in gpu["rows"]:
            print(f"{r['amp']:6s} {r['checkpointing']!s:>10s} {r['images_per_s']:9.1f} {1e3 * r['median_s']:9.1f} "
                  f"{r['peak_mib']:9.1f}")
        fp32 = next(r for r in gpu["rows"] if r["amp"] == "none" and not r["checkpointing"])
        for r in gpu["rows"]:
            key = f"gpu_{r['amp']}{'_ckpt' if r['checkpointing'] else ''}"
            summary[f"{key}_speedup"] = r["images_per_s"] / fp32["images_per_s"]
            summary[f"{key}_memory_ratio"] = r["peak_mib"] / fp32["peak_mib"]
    print("\n" + ", ".join(f"{k} {v:.3g}" for k, v in summary.items()))
    write_json(args.out, {"meta": {"quick": args.quick, "threads": args.threads}, "summary": summary, "cpu": cpu,
                          "spectral": sr, "gpu": gpu})
    return 0


if __name__ == "__main__":
    sys.exit(main())
