"""Wall time and peak extra resident memory of one call (benchmarks and experiment resource tables).

The peak is the growth of the process's resident-set high-water mark during the call: ``/proc/self/clear_refs``
resets the mark to the current resident set (Linux), so it counts torch, NumPy, numba and C threads alike. Elsewhere
the peak is NaN.
"""

import contextlib
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def _status_kib(field: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


def measured(fn: Callable[[], T]) -> tuple[T, float, float]:
    """``(fn(), seconds, peak extra resident MiB)``; the peak is NaN where it cannot be measured."""
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        resettable = True
    except OSError:
        resettable = False
    base = _status_kib("VmRSS")
    start = time.perf_counter()
    out = fn()
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    ok = resettable and base >= 0 and peak >= 0
    return out, seconds, max(0, peak - base) / 1024 if ok else float("nan")
