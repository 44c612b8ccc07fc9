"""Benchmark: one FlyVec training pass vs one gensim word2vec epoch on the same tokens (post 8, issue 9).

Both run in this process on the same token lists: FlyVec (K = 400, window 11, V = 20k, mini-batches of 10,000
windows; the corpus encoded once, untimed) for one epoch, and gensim ``Word2Vec`` CBOW (dim 100, window 5, 2 workers,
negative 5, sample 1e-3; vocabulary built untimed) for one epoch. Interleaved rounds (each round times both), median
reported with min and max; the target is FlyVec <= 0.3x word2vec's time. Peak memory is the growth of the process's
resident-set high-water mark during each method's first (warm-up) call (``/proc/self/clear_refs`` resets it; Linux
only), so it covers torch, NumPy and gensim's C threads alike. Also reported: hash storage per word vs dense vectors.

    python benchmarks/bench_flyvec.py                  # full corpus (~12.6M tokens), 5 rounds
    python benchmarks/bench_flyvec.py --quick          # 300k tokens, 2 rounds: checks the script works
"""

import argparse
import contextlib
import gc
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return -1


def measure(fn) -> tuple[float, float]:
    """(seconds, peak extra resident memory in MiB) of ``fn()``."""
    gc.collect()
    with contextlib.suppress(OSError):  # not Linux: the peak is then the process's lifetime peak
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    base = _rss_kib("VmRSS")
    start = time.perf_counter()
    fn()
    seconds = time.perf_counter() - start
    peak = _rss_kib("VmHWM")
    return seconds, max(0, peak - base) / 1024 if base >= 0 and peak >= 0 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny corpus, 2 rounds (a check, not a measurement)")
    parser.add_argument("--max-tokens", type=int, default=None, help="corpus tokens (default: all; quick: 300k)")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5; quick 2)")
    parser.add_argument("--vocab-size", type=int, default=20_000)
    parser.add_argument("--out", default="benchmarks/results/flyvec.json")
    args = parser.parse_args()
    max_tokens = args.max_tokens or (300_000 if args.quick else None)
    rounds = args.rounds or (2 if args.quick else 5)
    torch.set_num_threads(2)

    from gensim.models import Word2Vec

    from _common import probe_ms  # benchmarks/ is on sys.path when this file runs as a script
    from kexue.data import load_corpus
    from kexue.models.flyvec import FlyVec, memory_bits

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
        model.fit(data, epochs=1, lr=0.05, batch_size=10_000, show_progress=False)

    def w2v_model() -> Word2Vec:
        w2v = Word2Vec(vector_size=100, window=5, sg=0, negative=5, sample=1e-3, min_count=5, workers=2, seed=0)
        w2v.build_vocab(docs)
        return w2v

    # Warm-up calls, untimed; their memory growth is the peak reported: later calls reuse the pages freed by earlier
    # ones, so their resident-set growth reads ~0.
    _, fly_m = measure(flyvec_pass)
    w2v = w2v_model()
    _, w2v_m = measure(lambda: w2v.train(docs, total_examples=len(docs), epochs=1))
    fly_t, w2v_t, probes = [], [], []
    for r in range(rounds):
        fly_t.append(measure(flyvec_pass)[0])
        w2v = w2v_model()
        w2v_t.append(measure(lambda w2v=w2v: w2v.train(docs, total_examples=len(docs), epochs=1))[0])
        probes.append(probe_ms())
        print(f"round {r}: flyvec {fly_t[-1]:.2f} s, word2vec {w2v_t[-1]:.2f} s, probe {probes[-1]:.1f} ms "
              "(3.3 when quiet)", flush=True)

    fly, w2v_med = statistics.median(fly_t), statistics.median(w2v_t)
    bits = memory_bits(400, 50, dim=100)
    rows = [
        ("FlyVec, 1 epoch", fly, min(fly_t), max(fly_t), fly_m, len(data) / fly),
        ("word2vec CBOW, 1 epoch", w2v_med, min(w2v_t), max(w2v_t), w2v_m, n_tokens / w2v_med),
    ]
    print(f"\ncorpus: {n_tokens:,} tokens, {len(data):,} FlyVec windows, V = {len(model.vocab):,}, K = 400, "
          f"{rounds} rounds, 2 threads")
    print(f"{'method':<24}{'median s':>10}{'min':>8}{'max':>8}{'peak MiB':>10}{'items/s':>12}")
    for name, med, lo, hi, mem, rate in rows:
        print(f"{name:<24}{med:>10.2f}{lo:>8.2f}{hi:>8.2f}{mem:>10.0f}{rate:>12,.0f}")
    ratio = fly / w2v_med
    print(f"\nFlyVec / word2vec time: {ratio:.3f} (target <= 0.3: {'met' if ratio <= 0.3 else 'NOT met'})")
    print(f"storage per word: FlyVec k=50 as indices {bits['indices']} bits, as a 400-bit mask {bits['bitmask']} "
          f"bits; word2vec dim 100 float32 {bits['dense']} bits ({bits['dense'] / bits['indices']:.1f}x)")
    result = {"tokens": n_tokens, "windows": len(data), "vocab": len(model.vocab), "rounds": rounds,
              "flyvec_seconds": fly_t, "word2vec_seconds": w2v_t, "flyvec_peak_mib": fly_m,
              "word2vec_peak_mib": w2v_m, "probe_ms": probes, "ratio_flyvec_over_word2vec": ratio, "storage_bits": bits,
              "quick": args.quick, "torch": torch.__version__, "platform": platform.platform(),
              "cpu_count": os.cpu_count()}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
