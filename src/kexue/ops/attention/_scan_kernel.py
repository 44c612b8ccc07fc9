"""The chunked causal op's two scans over chunk states as single compiled loops (numba), for CPU float32/float64.

Why: :func:`kexue.ops.attention.causal._scan_prefix_` and ``_scan_suffix_`` run one small in-place ``add_`` per chunk
(``torch.cumsum`` over a middle dimension is ~20x slower on CPU). At N = 8192 with chunks of 64 that is 128 adds of
a ``[rows, C, M]`` slice per scan, dispatch-bound: the forward's state and key-sum scans took ~3.1 ms together, this
loop ~1.2 ms, and a training step runs two such pairs (forward prefix, backward suffix). The loop is serial on
purpose: the scan streams its buffer once and is memory-bound (two threads gained ~10%), and a numba parallel region
would leave spinning threads that compete with torch's next product for the two cores.

The kernels do what the torch loops do, element for element (the same float adds in the same order, so the results
are bit for bit equal); the torch loops stay the slow twin (CUDA, other dtypes, numba not installed), and tests tie
the two together.
"""

import numpy as np
import torch

try:
    import numba
except ImportError:  # numba is optional: the torch loops are used instead
    numba = None

_kernel = None


def _compile():
    # cache=True: the first call compiles (seconds); the cache makes that once per machine, not once per process.
    @numba.njit(cache=True, nogil=True)
    def scan(buf, rows, offs, counts, init, has_init, reverse, totals):
        k, width = (buf.shape[0] - 1) // rows, buf.shape[1]
        step = -1 if reverse else 1
        for r in range(rows):
            for j in range(len(offs)):
                n = counts[j]
                if n == 0:
                    for e in range(width):
                        totals[r, j, e] = init[r, j, e] if has_init else 0.0
                    continue
                # terms sit at slots 1.. (prefix) or ..K-1 (suffix) of the row; the scan runs away from `first`
                lo = r * k + offs[j] + (0 if reverse else 1)
                first, last = (lo + n - 1, lo) if reverse else (lo, lo + n - 1)
                if has_init:
                    for e in range(width):
                        buf[first, e] += init[r, j, e]
                p = first
                for _ in range(n - 1):
                    p += step
                    for e in range(width):
                        buf[p, e] += buf[p - step, e]
                for e in range(width):
                    totals[r, j, e] = buf[last, e]
        # only now (the slot an end chunk reads is the neighbouring segment's, or row's, sum): the initial states
        for r in range(rows):
            for j in range(len(offs)):
                if counts[j]:
                    slot = r * k + offs[j] + (counts[j] if reverse else 0)
                    for e in range(width):
                        buf[slot, e] = init[r, j, e] if has_init else 0.0

    return scan


def usable(buf: torch.Tensor) -> bool:
    """Whether the compiled scans can run on ``buf`` (numba importable, contiguous CPU float32/float64)."""
    return (numba is not None and buf.device.type == "cpu" and buf.dtype in (torch.float32, torch.float64)
            and buf.is_contiguous())


def scan_(buf: torch.Tensor, rows: int, segments, init: torch.Tensor | None, reverse: bool) -> torch.Tensor:
    """The compiled twin of ``_scan_prefix_`` (``reverse=False``) and ``_scan_suffix_`` (``reverse=True``) of
    :mod:`kexue.ops.attention.causal`: same arguments (``buf [rows * K + 1, ...]``, in place), same result."""
    global _kernel
    if _kernel is None:
        _kernel = _compile()
    width = buf[0].numel()
    n_seg = len(segments)
    offs = np.array([off for off, _ in segments], dtype=np.int64)
    counts = np.array([n for _, n in segments], dtype=np.int64)
    out = buf.new_empty(rows, n_seg, *buf.shape[1:])
    if init is None:
        start = np.zeros((1, 1, 1), dtype=buf.numpy().dtype)  # never read
    else:
        start = init.detach().to(buf.dtype).reshape(rows, n_seg, width).contiguous().numpy()
    _kernel(buf.view(len(buf), width).numpy(), rows, offs, counts, start, init is not None, reverse,
            out.view(rows, n_seg, width).numpy())
    return out
