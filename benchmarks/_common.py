"""Shared timing helpers for the benchmark scripts (see ../shared/spec/benchmarks.md §1 for the method).

Interleaved rounds: every round times each method once, so a noisy period slows all of them alike; we report the
median (and min/max) over rounds, plus a fixed matmul probe per round to flag disturbed rounds.
"""

import gc
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch


def probe_ms() -> float:
    """Twenty fp32 256x256 matmuls (~3.3 ms on a quiet 2-core machine)."""
    a = torch.randn(256, 256)
    start = time.perf_counter()
    for _ in range(20):
        a @ a
    return 1e3 * (time.perf_counter() - start)


def time_interleaved(methods: dict[str, Callable[[], object]], rounds: int, warmup: int = 1) -> dict[str, dict]:
    """Median/min/max milliseconds per method over ``rounds`` interleaved rounds (after ``warmup`` untimed ones)."""
    for _ in range(warmup):
        for fn in methods.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in methods}
    probes = []
    for _ in range(rounds):
        probes.append(probe_ms())
        for name, fn in methods.items():
            gc.collect()
            start = time.perf_counter()
            fn()
            samples[name].append(1e3 * (time.perf_counter() - start))
    out = {name: {"median_ms": statistics.median(v), "min_ms": min(v), "max_ms": max(v)} for name, v in
           samples.items()}
    out["_probe"] = {"median_ms": statistics.median(probes), "max_ms": max(probes)}
    return out


def environment() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "platform": platform.platform(), "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def write_json(path: str | Path, payload: dict) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"environment": environment(), **payload}, indent=2) + "\n")
    print(f"wrote {path}")
