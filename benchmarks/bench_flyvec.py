"""Benchmark: one FlyVec training pass vs one gensim word2vec epoch on the same tokens (post 8, issues 9 and 16).

Both run in this process on the same token lists: FlyVec (K = 400, window 11, V = 20k, mini-batches of 10,000
windows, the exact mini-batch rule; the corpus encoded once, untimed) for one epoch with the chosen trainer (default
``fast``: the compiled kernels of ``kexue.models.flyvec.fast``), and gensim ``Word2Vec`` CBOW (dim 100, window 5, 2
workers, negative 5, sample 1e-3; vocabulary built untimed) for one epoch. Interleaved rounds (each round times
both), median reported with min and max; the target is FlyVec <= 0.3x word2vec's time. Peak memory is the growth of
the process's resident-set high-water mark during each method's first (warm-up) call (``/proc/self/clear_refs``
resets it; Linux only), so it covers torch, NumPy, numba and gensim's C threads alike; the kernels are compiled (or
loaded from numba's on-disk cache) on a tiny problem before that. The FlyVec time is split into activations (the
window sums alone, timed in a separate pass over the same batches), winner selection (the rest of the winner
kernel: argmax and scaled activation), update, and the rest (shuffle, batching, Python). Also reported: the load
average (the machine may be shared: ratios from one process are the trustworthy numbers) and hash storage per word.

    python benchmarks/bench_flyvec.py                  # full corpus (~12.9M tokens), 5 rounds
    python benchmarks/bench_flyvec.py --rounds 1       # one round: the quick check of the bar
    python benchmarks/bench_flyvec.py --quick          # 300k tokens, 2 rounds: checks the script works
"""

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

import torch


def measure(fn) -> tuple[float, float]:
    """(seconds, peak extra resident memory in MiB) of ``fn()``."""
    from kexue._resources import measured

    _, seconds, peak = measured(fn)
    return seconds, peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny corpus, 2 rounds (a check, not a measurement)")
    parser.add_argument("--max-tokens", type=int, default=None, help="corpus tokens (default: all; quick: 300k)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; quick 2)")
    parser.add_argument("--vocab-size", type=int, default=20_000)
    parser.add_argument("--trainer", choices=("fast", "torch"), default="fast", help="FlyVec trainer (default fast)")
    parser.add_argument("--out", default="benchmarks/results/flyvec.json")
    args = parser.parse_args()
    max_tokens = args.max_tokens or (300_000 if args.quick else None)
    rounds = args.rounds or (2 if args.quick else 5)
    torch.set_num_threads(2)

    from gensim.models import Word2Vec

    from _common import probe_ms  # benchmarks/ is on sys.path when this file runs as a script
    from kexue.data import load_corpus
    from kexue.models.flyvec import FlyVec, memory_bits
    from kexue.models.flyvec.fast import LazyScaleTrainer

    docs = load_corpus(max_tokens=max_tokens)
    n_tokens = sum(map(len, docs))
    model = FlyVec(400, 11, vocab_size=args.vocab_size, seed=0)
    model.init_weights(model.build_vocab(docs))
    data = model.encode(docs)
    init = model.table.clone()

    def flyvec_pass() -> None:
        model.table.copy_(init)
        model.history.clear()
        model.energy_trace.clear()
        model.fit(data, epochs=1, lr=0.05, batch_size=10_000, show_progress=False, trainer=args.trainer)

    def activations_pass() -> float:
        """Seconds of the window sums alone (no argmax) over the batches of one pass."""
        engine = LazyScaleTrainer(model.table, data.tokens, model.inverse_frequencies(data.counts), model.window)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(1)).numpy()
        centres = data.centres.numpy()
        for lo in range(0, len(data), 10_000):
            engine.winners(centres[order[lo : lo + 10_000]], select=False)
        return engine.timings.winners

    if args.trainer == "fast":  # compile the kernels (or load them from numba's cache) outside every measurement
        tiny = FlyVec(400, 11, vocab_size=args.vocab_size, seed=0)
        tiny.init_weights(model.vocab)
        tiny.fit(tiny.encode(docs[:50]), epochs=1, batch_size=64, show_progress=False, trainer="fast")
        del tiny

    def w2v_model() -> Word2Vec:
        w2v = Word2Vec(vector_size=100, window=5, sg=0, negative=5, sample=1e-3, min_count=5, workers=2, seed=0)
        w2v.build_vocab(docs)
        return w2v

    # Warm-up calls, untimed; their memory growth is the peak reported: later calls reuse the pages freed by earlier
    # ones, so their resident-set growth reads ~0.
    _, fly_m = measure(flyvec_pass)
    w2v = w2v_model()
    _, w2v_m = measure(lambda: w2v.train(docs, total_examples=len(docs), epochs=1))
    fly_t, w2v_t, probes, splits = [], [], [], []
    for r in range(rounds):
        fly_t.append(measure(flyvec_pass)[0])
        splits.append(dict(model.timings))
        w2v = w2v_model()
        w2v_t.append(measure(lambda w2v=w2v: w2v.train(docs, total_examples=len(docs), epochs=1))[0])
        probes.append(probe_ms())
        print(f"round {r}: flyvec {fly_t[-1]:.2f} s, word2vec {w2v_t[-1]:.2f} s, ratio {fly_t[-1] / w2v_t[-1]:.3f}, "
              f"probe {probes[-1]:.1f} ms (3.3 when quiet)", flush=True)
    split = {}
    if args.trainer == "fast":
        best = min(range(rounds), key=fly_t.__getitem__)  # the least disturbed round
        act = activations_pass()
        split = {"activations": act, "winner selection": max(0.0, splits[best]["winners"] - act),
                 "update": splits[best]["update"]}
        split["rest (shuffle, batching, Python)"] = max(0.0, fly_t[best] - sum(split.values()))

    fly, w2v_med = statistics.median(fly_t), statistics.median(w2v_t)
    bits = memory_bits(400, 50, dim=100)
    rows = [
        (f"FlyVec ({args.trainer}), 1 epoch", fly, min(fly_t), max(fly_t), fly_m, len(data) / fly),
        ("word2vec CBOW, 1 epoch", w2v_med, min(w2v_t), max(w2v_t), w2v_m, n_tokens / w2v_med),
    ]
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else ["?"] * 3
    print(f"\ncorpus: {n_tokens:,} tokens, {len(data):,} FlyVec windows, V = {len(model.vocab):,}, K = 400, "
          f"{rounds} rounds, 2 threads, load average {' '.join(load)} (1, 5, 15 min) on {os.cpu_count()} CPUs")
    print(f"{'method':<26}{'median s':>10}{'min':>8}{'max':>8}{'peak MiB':>10}{'items/s':>12}")
    for name, med, lo, hi, mem, rate in rows:
        print(f"{name:<26}{med:>10.2f}{lo:>8.2f}{hi:>8.2f}{mem:>10.0f}{rate:>12,.0f}")
    print("(items: windows for FlyVec, words for word2vec)")
    if split:
        print(f"FlyVec time split (fastest round, {fly_t[best]:.2f} s): " + ", ".join(
            f"{name} {sec:.2f} s ({sec / fly_t[best]:.0%})" for name, sec in split.items()))
    ratio = fly / w2v_med
    ratios = [f / w for f, w in zip(fly_t, w2v_t, strict=True)]
    print(f"\nFlyVec / word2vec time: {ratio:.3f} (median of {rounds}; per round {min(ratios):.3f} to "
          f"{max(ratios):.3f}; target <= 0.3: {'met' if ratio <= 0.3 else 'NOT met'}); FlyVec peak extra memory "
          f"{fly_m:.0f} MiB (target <= 200: {'met' if fly_m <= 200 else 'NOT met'})")
    print(f"storage per word: FlyVec k=50 as indices {bits['indices']} bits, as a 400-bit mask {bits['bitmask']} "
          f"bits; word2vec dim 100 float32 {bits['dense']} bits ({bits['dense'] / bits['indices']:.1f}x)")
    result = {"tokens": n_tokens, "windows": len(data), "vocab": len(model.vocab), "rounds": rounds,
              "flyvec_seconds": fly_t, "word2vec_seconds": w2v_t, "flyvec_peak_mib": fly_m,
              "word2vec_peak_mib": w2v_m, "probe_ms": probes, "ratio_flyvec_over_word2vec": ratio, "ratios": ratios,
              "trainer": args.trainer, "flyvec_split_seconds": split, "load_average": load, "storage_bits": bits,
              "quick": args.quick, "torch": torch.__version__, "platform": platform.platform(),
              "cpu_count": os.cpu_count()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
