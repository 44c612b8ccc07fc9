"""Benchmark: causal linear attention (kexue) vs SDPA causal, training and decoding (spec benchmarks.md §1, §3, §4).

Training: B=1, H=8, D=M=64, fp32, N in {1024, ..., 16384}; forward (no_grad) and forward+backward, interleaved rounds
(each round times every method once), median of 9 rounds up to N=8192 (where the target is checked: on a shared
2-core host single calls there spread over 68-142 ms, and a median of 5 moved by ~10% from run to run) and of 5 at
16384, after a warm-up, a fixed probe workload per round to
spot noisy rounds, peak torch-allocator memory from the CPU profiler. Methods: SDPA causal (the yardstick),
kexue chunked (C = 64, the default, and 128), a plain chunked implementation in torch ops with autograd's backward
(what the custom ``autograd.Function`` replaces), kexue non-causal linear (a floor), and fast-transformers' CPU
``causal_dot_product`` when it is importable (it cannot be installed from PyPI on a CPU torch; benchmarks.md §4 gives
its ratio to SDPA).

Decoding (one layer's attention op, B=1, H=8, d=64): per-token time of ``linear_attention_step``, of a plain torch
recurrent step (S += phi(k) v^T, y = phi(q) S / phi(q) . z, as one would first write it) and of SDPA over a
pre-allocated KV cache at context positions 1024 ... 16384 (median of 5 interleaved passes of 64 steps).

Prefill (B=1, H=8, d=64, a 1024-token prompt): ``linear_attention(..., return_state=True)`` in one call against
1024 calls of ``linear_attention_step``, and the same for a whole model (``Transformer.prefill`` against
``forward_step`` per token; dim 512, 8 heads, 2 blocks), interleaved rounds.

CUDA (only with a device; skipped otherwise): causal f+b and forward of kexue chunked against SDPA (flash) on the GPU.

Targets: at N=8192, causal f+b, SDPA / kexue >= 20 (2x fast-transformers' ~10x; benchmarks.md §4) in a plain
``python`` process (no malloc tuning) as well as under ``make bench``'s settings, f+b peak memory <= 288 MiB
(2x fast-transformers' 144); decode <= 40 us per token, constant in position, and at 16384 >= 20x faster than the
KV cache. The script prints the load average and whether glibc's malloc is tuned (``MALLOC_*``): the chunked op keeps
its temporaries in a scratch pool so that it does not page-fault them on every call either way.

    .venv/bin/python benchmarks/bench_attention.py --threads 2 --out benchmarks/results/attention.json

(do not set ``OMP_WAIT_POLICY=PASSIVE``: it made decode steps ~3x slower). ``--quick`` runs tiny sizes to check the
script works; ``--rounds`` and ``--lengths`` shorten a run on a busy machine.
"""

import argparse
import gc
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

from _common import probe_ms, time_interleaved, write_json
from kexue.models.transformer import Transformer, TransformerConfig
from kexue.ops.attention import empty_cache, linear_attention, linear_attention_step
from kexue.ops.attention.causal import causal_linear_attention_dense, step_mapped
from kexue.profiling import peak_mib


def _fast_transformers():
    try:
        from fast_transformers.causal_product import causal_dot_product  # type: ignore[import-not-found]
    except Exception:  # not installable from PyPI on a CPU torch (benchmarks.md §5)
        return None

    def ft(q, k, v):
        # fast-transformers' layout is [B, H, N, D]; normaliser by cumsum as in its CausalLinearAttention.
        pq, pk = F.elu(q) + 1, F.elu(k) + 1
        num = causal_dot_product(pq, pk, v)
        den = torch.einsum("nhli,nhli->nhl", pq, pk.cumsum(2)) + 1e-6
        return num / den.unsqueeze(-1)

    return ft


def plain_chunked(q, k, v, chunk=64, eps=1e-6):
    """The straightforward chunked form in torch ops, differentiated by autograd (benchmarks.md §3 "chunked C").

    Quadratic inside chunks, prefix sum (cumsum) of the chunk states between chunks; N a multiple of ``chunk``.
    """
    b, h, n = q.shape[:3]
    pq, pk = F.elu(q) + 1, F.elu(k) + 1
    qc, kc, vc = (t.reshape(b, h, n // chunk, chunk, t.shape[-1]) for t in (pq, pk, v))
    kv, ks = kc.transpose(-1, -2) @ vc, kc.sum(3)  # chunk states and key sums
    states, zs = torch.cumsum(kv, dim=2) - kv, torch.cumsum(ks, dim=2) - ks  # sums over earlier chunks
    scores = (qc @ kc.transpose(-1, -2)).tril()
    num = scores @ vc + qc @ states
    den = scores.sum(-1) + (qc * zs.unsqueeze(3)).sum(-1) + eps
    return (num / den.unsqueeze(-1)).reshape(b, h, n, -1)


def training_methods(ft) -> dict:
    methods = {
        "SDPA causal": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "kexue chunked 64": lambda q, k, v: linear_attention(q, k, v, causal=True, chunk_size=64),
        "kexue chunked 128": lambda q, k, v: linear_attention(q, k, v, causal=True, chunk_size=128),
        "plain chunked 64": plain_chunked,
        "kexue non-causal": lambda q, k, v: linear_attention(q, k, v),
    }
    if ft is not None:
        methods["fast-transformers"] = ft
    return methods


def bench_training(lengths, rounds, heads, dim, methods) -> list[dict]:
    rows = []
    for n in lengths:
        g = torch.Generator().manual_seed(n)
        q, k, v, grad = (torch.randn(1, heads, n, dim, generator=g) for _ in range(4))
        leaves = {m: tuple(t.clone().requires_grad_() for t in (q, k, v)) for m in methods}

        def fwd(op, q=q, k=k, v=v):
            with torch.no_grad():
                op(q, k, v)

        def fwd_bwd(op, name, leaves=leaves, grad=grad):
            for t in leaves[name]:
                t.grad = None
            op(*leaves[name]).backward(grad)

        times = {(m, mode): [] for m in methods for mode in ("fwd", "fwd_bwd")}
        probes = []
        for name, op in methods.items():  # warm-up
            fwd(op)
            fwd_bwd(op, name)
        n_rounds = rounds if n <= 8192 else max(5, rounds // 2)
        for _ in range(n_rounds):
            probes.append(probe_ms())
            for mode in ("fwd", "fwd_bwd"):  # all forwards, then all forward+backwards
                for name, op in methods.items():
                    gc.collect()
                    gc.disable()  # no collection inside a timed call
                    start = time.perf_counter()
                    fwd(op) if mode == "fwd" else fwd_bwd(op, name)
                    times[(name, mode)].append(1e3 * (time.perf_counter() - start))
                    gc.enable()
        for name, op in methods.items():
            for t in leaves[name]:
                t.grad = None
            # Peaks with an empty scratch pool: the chunked op's reused blocks count as the allocations they are.
            empty_cache()
            fwd_mib = peak_mib(lambda op=op: fwd(op))
            empty_cache()
            row = {"N": n, "method": name, "probe_ms_median": statistics.median(probes), "fwd_mib": fwd_mib,
                   "fwd_bwd_mib": peak_mib(lambda op=op, name=name: fwd_bwd(op, name))}
            for mode in ("fwd", "fwd_bwd"):
                ts = times[(name, mode)]
                row[f"{mode}_ms"] = statistics.median(ts)
                row[f"{mode}_min"], row[f"{mode}_max"] = min(ts), max(ts)
            rows.append(row)
            print(f"N={n:6d} {name:20s} fwd {row['fwd_ms']:9.2f} ms  f+b {row['fwd_bwd_ms']:9.2f} ms  "
                  f"mem {row['fwd_mib']:7.1f} / {row['fwd_bwd_mib']:7.1f} MiB", flush=True)
        sdpa = {r["method"]: r for r in rows if r["N"] == n}["SDPA causal"]
        for r in rows:
            if r["N"] == n:
                r["sdpa_over_method_fwd"] = sdpa["fwd_ms"] / r["fwd_ms"]
                r["sdpa_over_method_fwd_bwd"] = sdpa["fwd_bwd_ms"] / r["fwd_bwd_ms"]
    return rows


def plain_step(q, k, v, state, eps=1e-6):
    """A recurrent step as one would first write it (benchmarks.md §3: ~65 us, dispatch-bound)."""
    s, z = state
    pq, pk = F.elu(q) + 1, F.elu(k) + 1
    s = s + pk.unsqueeze(-1) * v.unsqueeze(-2)
    z = z + pk
    y = torch.einsum("bhc,bhcm->bhm", pq, s) / (torch.einsum("bhc,bhc->bh", pq, z).unsqueeze(-1) + eps)
    return y, (s, z)


def bench_decode(positions, heads, dim, steps=64, passes=5) -> list[dict]:
    """Per-token microseconds at each context position; the three methods interleaved pass by pass."""
    rows = []
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, heads, dim, generator=g) for _ in range(3))
    cache_k = torch.randn(1, heads, max(positions) + steps, dim, generator=g)
    cache_v = torch.randn_like(cache_k)
    q4, k4, v4 = q.unsqueeze(2), k.unsqueeze(2), v.unsqueeze(2)
    for pos in positions:
        # Linear: the state after `pos` tokens (its contents do not change the cost; its size never grows).
        _, state = linear_attention_step(q, k, v, None)
        plain = (state.s.clone(), state.z.clone())

        def linear():
            nonlocal state
            for _ in range(steps):
                _, state = linear_attention_step(q, k, v, state)

        def naive():
            nonlocal plain
            for _ in range(steps):
                _, plain = plain_step(q, k, v, plain)

        def kv_cache(pos=pos):
            for t in range(pos, pos + steps):
                cache_k[:, :, t : t + 1] = k4
                cache_v[:, :, t : t + 1] = v4
                F.scaled_dot_product_attention(q4, cache_k[:, :, : t + 1], cache_v[:, :, : t + 1])

        methods = {"linear_step_us": linear, "plain_step_us": naive, "kv_cache_step_us": kv_cache}
        times = {name: [] for name in methods}
        with torch.no_grad():
            for fn in methods.values():
                fn()  # warm-up
            for _ in range(passes):
                for name, fn in methods.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(1e6 * (time.perf_counter() - start) / steps)
        row = {"position": pos, **{name: statistics.median(ts) for name, ts in times.items()},
               **{name.replace("_us", "_min_us"): min(ts) for name, ts in times.items()}}
        row["kv_over_linear"] = row["kv_cache_step_us"] / row["linear_step_us"]
        rows.append(row)
        print(f"decode pos={pos:6d} linear {row['linear_step_us']:8.1f} us  plain step {row['plain_step_us']:8.1f} us  "
              f"KV cache {row['kv_cache_step_us']:8.1f} us  KV / linear {row['kv_over_linear']:6.1f}x", flush=True)
    return rows


def decode_breakdown(heads, dim, reps=500, rounds=5) -> dict:
    """Microseconds of each tensor op of one torch-form decoding step (elu map, B=1) timed alone, their sum, the torch
    step, and ``linear_attention_step`` (the compiled kernel when numba is installed): whether torch's per-op dispatch
    is the floor of the torch form."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(1, heads, dim, generator=g) for _ in range(3))
    _, state = linear_attention_step(q, k, v)
    s, z = state.s, state.z
    pq, pk = F.elu(q) + 1, F.elu(k) + 1
    one = torch.ones(())
    ops = {
        "elu(q), elu(k)": lambda: (F.elu(q), F.elu(k)),
        "+1 in place (x2)": lambda: (pq.add_(one), pq.sub_(one)),
        "S + phi_k v^T (addcmul)": lambda: torch.addcmul(s, pk.unsqueeze(-1), v.unsqueeze(-2)),
        "z + phi_k": lambda: z + pk,
        "numerator (mul, sum)": lambda: (pq.unsqueeze(-1) * s).sum(-2),
        "normaliser (vecdot, +eps)": lambda: torch.linalg.vecdot(pq, z).add_(one, alpha=1e-6),
        "division": lambda: pq.div(z),
    }

    def torch_step():  # the torch form: map, then step_mapped (what runs with a gradient or without numba)
        nonlocal state
        _, state = step_mapped(F.elu(q).add_(one), F.elu(k).add_(one), v, state)

    def step():  # linear_attention_step: the compiled kernel when numba is installed
        nonlocal state
        _, state = linear_attention_step(q, k, v, state)

    methods = {**ops, "torch step": torch_step, "whole step": step}
    times = {name: [] for name in methods}
    with torch.no_grad():
        for _ in range(rounds):
            for name, fn in methods.items():
                start = time.perf_counter()
                for _ in range(reps):
                    fn()
                times[name].append(1e6 * (time.perf_counter() - start) / reps)
    # The fastest round as well as the median: on a loaded machine stalls of the whole process hit a few rounds hard.
    row = {name: statistics.median(ts) for name, ts in times.items()}
    row["sum of ops"] = sum(row[name] for name in ops)
    fastest = {name: min(ts) for name, ts in times.items()}
    fastest["sum of ops"] = sum(fastest[name] for name in ops)
    print("decode breakdown, us per call (ops timed alone), median / fastest round: "
          + ", ".join(f"{n} {row[n]:.1f} / {fastest[n]:.1f}" for n in row))
    return {"median_us": row, "fastest_us": fastest}


def bench_prefill(prompt=1024, heads=8, dim=64, rounds=5) -> dict:
    """Reading a prompt in one parallel call (state out) against one recurrent step per token; op and model level."""
    g = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, heads, prompt, dim, generator=g) for _ in range(3))

    def op_steps():
        state = None
        for t in range(prompt):
            _, state = linear_attention_step(q[:, :, t], k[:, :, t], v[:, :, t], state)
        return state

    def op_prefill():
        return linear_attention(q, k, v, causal=True, return_state=True)[1]

    torch.manual_seed(0)
    model = Transformer(TransformerConfig(vocab_size=256, max_len=prompt, dim=heads * dim, depth=2, heads=heads)).eval()
    tokens = torch.randint(0, 256, (1, prompt), generator=g)

    def model_steps():
        caches = model.init_caches(1, prompt)
        for t in range(prompt):
            logits = model.forward_step(tokens[:, t], t, caches)
        return logits

    def model_prefill():
        return model.prefill(tokens, 0, model.init_caches(1, prompt))

    with torch.no_grad():
        torch.testing.assert_close(op_prefill().s, op_steps().s, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(model_prefill(), model_steps(), rtol=1e-3, atol=1e-3)
        times = time_interleaved({"op_steps": op_steps, "op_prefill": op_prefill, "model_steps": model_steps,
                                  "model_prefill": model_prefill}, rounds)
    row = {name: t["median_ms"] for name, t in times.items() if not name.startswith("_")}
    row.update(prompt=prompt, op_speedup=row["op_steps"] / row["op_prefill"],
               model_speedup=row["model_steps"] / row["model_prefill"], probe_ms=times["_probe"]["median_ms"])
    print(f"prefill {prompt} tokens: op {row['op_steps']:.1f} ms by steps, {row['op_prefill']:.2f} ms in one call "
          f"({row['op_speedup']:.1f}x); model {row['model_steps']:.0f} ms by steps, {row['model_prefill']:.1f} ms in "
          f"one call ({row['model_speedup']:.1f}x)", flush=True)
    return row


def bench_cuda(lengths, heads=8, dim=64, rounds=5) -> list[dict]:
    """Causal f+b and forward of kexue chunked against SDPA (flash) on a CUDA device, fp32 and bf16."""
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for n in lengths:
            g = torch.Generator(device="cuda").manual_seed(n)
            q, k, v, grad = (torch.randn(1, heads, n, dim, generator=g, device="cuda", dtype=dtype)
                             for _ in range(4))
            methods = {"SDPA causal": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                       "kexue chunked 64": lambda q, k, v: linear_attention(q, k, v, causal=True)}
            leaves = {m: tuple(t.clone().requires_grad_() for t in (q, k, v)) for m in methods}

            def run(name, mode, leaves=leaves, grad=grad, q=q, k=k, v=v, methods=methods):
                if mode == "fwd":
                    with torch.no_grad():
                        methods[name](q, k, v)
                else:
                    for t in leaves[name]:
                        t.grad = None
                    methods[name](*leaves[name]).backward(grad)
                torch.cuda.synchronize()

            times = {(m, mode): [] for m in methods for mode in ("fwd", "fwd_bwd")}
            for key in times:
                run(*key)  # warm-up
            for _ in range(rounds):
                for key in times:
                    start = time.perf_counter()
                    run(*key)
                    times[key].append(1e3 * (time.perf_counter() - start))
            med = {key: statistics.median(ts) for key, ts in times.items()}
            row = {"N": n, "dtype": str(dtype).replace("torch.", ""),
                   **{f"{m} {mode} ms": t for (m, mode), t in med.items()},
                   "sdpa_over_kexue_fwd": med[("SDPA causal", "fwd")] / med[("kexue chunked 64", "fwd")],
                   "sdpa_over_kexue_fwd_bwd": med[("SDPA causal", "fwd_bwd")] / med[("kexue chunked 64", "fwd_bwd")]}
            rows.append(row)
            print(f"cuda {row['dtype']:8s} N={n:6d} SDPA / kexue fwd {row['sdpa_over_kexue_fwd']:6.2f}x, f+b "
                  f"{row['sdpa_over_kexue_fwd_bwd']:6.2f}x", flush=True)
    return rows


def check_agreement(n=512, heads=2, dim=64) -> dict:
    """Max relative error of every causal linear method against the float64 dense masked form (sanity check)."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, heads, n, dim, generator=g) for _ in range(3))
    pq, pk = (F.elu(t.double()) + 1 for t in (q, k))
    ref = causal_linear_attention_dense(pq, pk, v.double())
    methods = {name: fn for name, fn in training_methods(_fast_transformers()).items()
               if name not in ("SDPA causal", "kexue non-causal")}
    with torch.no_grad():
        return {name: ((fn(q, k, v).double() - ref).abs().max() / ref.abs().max()).item() for name, fn in
                methods.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: check that the script works")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds up to N=8192 (half, >= 5, above)")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--positions", type=int, nargs="+", default=[1024, 2048, 4096, 8192, 16384])
    parser.add_argument("--prompt", type=int, default=1024, help="prompt length of the prefill comparison")
    parser.add_argument("--cuda-lengths", type=int, nargs="+", default=[4096, 16384, 65536])
    parser.add_argument("--out", default="benchmarks/results/attention.json")
    parser.add_argument("--figure", default="benchmarks/results/attention_decode.png",
                        help="PNG of decode time per token against position ('' to skip)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    heads, dim = 8, 64
    if args.quick:
        lengths, positions, rounds, prompt, cuda_lengths = [256, 512], [128, 512], 3, 128, [512]
    else:
        lengths, positions, rounds = sorted(args.lengths), sorted(args.positions), args.rounds
        prompt, cuda_lengths = args.prompt, sorted(args.cuda_lengths)
    ft = _fast_transformers()
    malloc = {key: os.environ[key] for key in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_") if key in os.environ}
    load = os.getloadavg()
    print(f"torch {torch.__version__}, {args.threads} threads, fast-transformers: {'yes' if ft else 'not installed'}, "
          f"malloc: {malloc or 'not tuned'}, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
          f"on {os.cpu_count()} CPUs")
    errors = check_agreement()
    print("max relative error vs float64 dense masked form: "
          + ", ".join(f"{name} {err:.1e}" for name, err in errors.items()))
    train = bench_training(lengths, rounds, heads, dim, training_methods(ft))
    decode = bench_decode(positions, heads, dim)
    breakdown = decode_breakdown(heads, dim)
    prefill = bench_prefill(prompt, heads, dim, rounds=max(3, rounds // 2))
    if torch.cuda.is_available():
        cuda = bench_cuda(cuda_lengths, heads, dim)
    else:
        cuda = []
        print("cuda: no device, section skipped")

    print("\nSDPA causal time / method time (higher = faster than SDPA), fwd / f+b:")
    print(f"{'method':20s} " + " ".join(f"{n:>13d}" for n in lengths))
    for name in dict.fromkeys(r["method"] for r in train):
        cells = [next(r for r in train if r["N"] == n and r["method"] == name) for n in lengths]
        print(f"{name:20s} " + " ".join(f"{c['sdpa_over_method_fwd']:5.1f}/{c['sdpa_over_method_fwd_bwd']:5.1f}x"
                                        for c in cells))
    lin = [r["linear_step_us"] for r in decode]
    summary = {"decode_linear_max_over_min": max(lin) / min(lin), "decode_kv_over_linear_last": decode[-1][
        "kv_over_linear"], "decode_linear_us_last": decode[-1]["linear_step_us"]}
    if 8192 in lengths:
        at = {r["method"]: r for r in train if r["N"] == 8192}["kexue chunked 64"]  # the default chunk
        summary.update(sdpa_over_kexue_fwd_bwd_8192=at["sdpa_over_method_fwd_bwd"],
                       kexue_fwd_bwd_mib_8192=at["fwd_bwd_mib"])
        print(f"\ntarget at N=8192, causal f+b, default chunk: SDPA / kexue = {at['sdpa_over_method_fwd_bwd']:.1f}x "
              f"(target >= 20x; malloc {'tuned' if malloc else 'not tuned'}), peak {at['fwd_bwd_mib']:.0f} MiB "
              "(target <= 288)")
    summary.update(prefill_op_speedup=prefill["op_speedup"], prefill_model_speedup=prefill["model_speedup"],
                   load_average=load, malloc_tuned=bool(malloc))
    print(f"target decode: {summary['decode_linear_us_last']:.1f} us/token at position {decode[-1]['position']} "
          f"(target <= 40), slowest / fastest position {summary['decode_linear_max_over_min']:.2f} (constant = 1), "
          f"{summary['decode_kv_over_linear_last']:.1f}x faster than the KV cache (target >= 20)")
    med, fast = breakdown["median_us"], breakdown["fastest_us"]
    print(f"decode breakdown: the torch form's tensor ops alone take {med['sum of ops']:.1f} us of its "
          f"{med['torch step']:.1f} us step; the step as run {med['whole step']:.1f} us (fastest rounds "
          f"{fast['sum of ops']:.1f} / {fast['torch step']:.1f} / {fast['whole step']:.1f})")
    print(f"prefill of a {prompt}-token prompt in one call: {prefill['op_speedup']:.1f}x faster than stepping (op), "
          f"{prefill['model_speedup']:.1f}x (model)")
    meta = {"quick": args.quick, "heads": heads, "dim": dim, "fast_transformers": ft is not None,
            "agreement_max_rel_error": errors}
    write_json(args.out, {"meta": meta, "summary": summary, "training": train, "decode": decode, "prefill": prefill,
                          "decode_breakdown": breakdown, "cuda": cuda})
    if args.figure:
        from kexue.eval.plots import subplots

        fig, axes = subplots(1, 1, width=4.6, height=3.4)
        ax = axes[0, 0]
        pos = [r["position"] for r in decode]
        for key, style, label in (("linear_step_us", "o-", "kexue linear_attention_step"),
                                  ("plain_step_us", "^--", "plain torch recurrent step"),
                                  ("kv_cache_step_us", "s-", "SDPA + KV cache")):
            ax.loglog(pos, [r[key] for r in decode], style, label=label)
        ax.set_xlabel("context position")
        ax.set_ylabel("µs per token (B=1, H=8, d=64)")
        ax.legend(fontsize=8)
        fig.savefig(args.figure, dpi=110, bbox_inches="tight")
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
