"""Resources: wall time and peak extra resident memory of one call (benchmarks and experiment resource tables),
huge pages for large lookup tables, and the number of torch threads for small models.

The peak is the growth of the process's resident-set high-water mark during the call: ``/proc/self/clear_refs``
resets the mark to the current resident set (Linux), so it counts torch, NumPy, numba and C threads alike. Elsewhere
the peak is NaN.
"""

import contextlib
import gc
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import torch

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


def advise_huge_pages(tensor: "torch.Tensor") -> bool:
    """Ask Linux to back ``tensor``'s memory with 2 MiB pages (``madvise(MADV_HUGEPAGE)`` on the whole 2 MiB pages
    inside it); call it before the memory is first written. Random row gathers from a table far larger than the
    caches (FlyVec's 64 MB synapses) otherwise also miss the TLB on most rows. Best effort: returns whether the
    advice was accepted (False off Linux, for small or non-CPU tensors)."""
    import ctypes
    import sys

    huge = 2 << 20
    if not sys.platform.startswith("linux") or tensor.device.type != "cpu":
        return False
    start = tensor.data_ptr()
    lo, hi = -(-start // huge) * huge, (start + tensor.numel() * tensor.element_size()) // huge * huge
    if hi <= lo:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        return libc.madvise(lo, hi - lo, 14) == 0  # MADV_HUGEPAGE
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` torch intra-op threads, then restore the previous number.

    For small models (2-D toy MLPs: tensors of at most a few hundred by a few hundred) one thread is faster: a
    two-thread OpenMP region costs more than it saves, and on a busy machine every region waits for a descheduled
    thread (measured with one other busy process on 2 cores: 18-21 ms per MEG iteration on 1 thread, 67-75 ms on 2).
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
