"""FlyVec's learning rule as compiled CPU kernels (numba): the exact mini-batch rule of :mod:`.rule`, faster.

The same step as :func:`~kexue.models.flyvec.rule.hebbian_step_reference` (winner on the raw activation, D summed
over the mini-batch, max-normalised step; equal up to round-off), organised so that a step costs O(touched entries
+ K) instead of a pass over the whole ``[2V + 1, K]`` table:

- **Lazy per-cell scale.** The weights are ``W[mu, i] = table[i, mu] * scale[mu]``. Outside the entries a batch
  touches, D is ``-c_mu W_mu``, so ``W + s D = W (1 - s c) + s S`` becomes ``scale[mu] *= 1 - s c_mu`` plus a sparse
  add of ``s S / scale[mu]`` at the touched entries (the lazy-decay trick of sparse SGD). A column whose scale leaves
  ``[renorm_below, 1 / renorm_below]`` is folded back into the table (``scale = 1``).
- **Exact max|D|.** ``max|D|`` is the larger of the touched entries' ``|S - c W|`` (computed exactly) and, per cell,
  ``|c_mu| max_{i untouched} |W_mu,i|``. A per-cell upper bound of ``max_i |table[i, mu]|`` is carried from step to
  step (untouched entries do not change in table units); where the bound cannot rule a cell's untouched entries
  out, that one column is scanned exactly (and its bound refreshed). The step is the reference's step, never an
  estimate.
- **Row norms** ``|W_mu|`` (for the energy) come from per-cell sums of squares kept up to date in float64 from the
  touched entries' old and new values, refreshed exactly whenever a column is scanned.
- **Memory traffic.** A window's activation is a sum of up to ``window`` table rows. The tokens of the window
  ``TOKENS_AHEAD`` ahead and the rows of the window ``PREFETCH_AHEAD`` ahead are prefetched while one is summed;
  four rows are added per pass over the accumulator (same rounding order as one at a time); the winner's entries
  read there are handed to the update, which then never reads the table (it only writes the touched entries), and
  so are the window's table rows, so that the update does not gather the windows' tokens from the corpus again
  (one cache miss per window: that was 40% of the update's time). The model's table sits on huge pages where Linux
  allows (:func:`kexue._resources.advise_huge_pages`).
- **Threads.** The activations and winners of a mini-batch are all computed on the same W, so windows are split
  over threads (numba ``prange``) without races; the update is then split over cells on the same numba threads
  (each owns whole columns). A Python thread pool for the update was 40% slower: numba's OpenMP threads spin for a
  while after a parallel loop, and took the cores from it. Sums run in a fixed order (windows by position in the
  batch), so results do not depend on the number of threads: N processes that exchange winners compute bit for bit
  what one process computes.

:class:`LazyScaleTrainer` holds this state for one table; :class:`~kexue.models.flyvec.FlyVec` uses it on the CPU
(``trainer="fast"``); the torch functions of :mod:`.rule` stay the slow twin and the GPU path.
"""

import time
from dataclasses import dataclass

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic

PREFETCH_AHEAD = 4  # windows: the rows of window b + 4 are requested while window b is summed
WINDOWS_AHEAD = 2  # the update: the slots of a cell's window 2 ahead are requested while one is gathered
TOKENS_AHEAD = 8  # windows: the tokens of window b + 8 are requested, so that b + 4 can name its rows from cache


def _prefetch_call(context, builder, address):
    """Emit LLVM's ``prefetch`` (read, high locality, data cache) of the byte at ``address``."""
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    builder.call(fn, [builder.bitcast(address, ir.IntType(8).as_pointer()), i32(0), i32(3), i32(1)])


@intrinsic
def _prefetch_at(typingctx, array, index):
    """Ask the CPU to bring the cache line of ``array[index]`` (1-D, contiguous) into cache. A window's tokens sit
    at a random place of a corpus far larger than the caches: without this, naming a window's rows waited ~100 ns
    on memory for every window (a third of the time of the activation pass). Likewise the update visits a cell's
    windows at random places of the batch (prefetching their slots 2 ahead: gathering them took 40% less time)."""
    if not (isinstance(array, types.Array) and array.ndim == 1 and array.layout in "CA"
            and isinstance(index, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        _prefetch_call(context, builder, builder.gep(ary.data, [context.cast(builder, args[1], sig.args[1],
                                                                              types.intp)]))
        return context.get_dummy_value()

    return types.void(array, index), codegen


@intrinsic
def _prefetch_row(typingctx, array, row):
    """Ask the CPU to bring ``array[row, :]`` (C-contiguous, 2-D) into cache (LLVM ``prefetch``, read, high
    locality): window sums gather rows of a table far larger than the caches, so their latency is hidden by
    requesting the rows of a window a little ahead."""
    if not (isinstance(array, types.Array) and array.ndim == 2 and array.layout == "C"
            and isinstance(row, types.Integer)):
        return None

    def codegen(context, builder, sig, args):
        aryty = sig.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        stride = cgutils.unpack_tuple(builder, ary.strides)[0]
        data = builder.bitcast(ary.data, ir.IntType(8).as_pointer())
        index = context.cast(builder, args[1], sig.args[1], types.intp)
        base = builder.gep(data, [builder.mul(index, stride)])
        row_bytes = builder.mul(cgutils.unpack_tuple(builder, ary.shape)[1],
                                context.get_constant(types.intp, aryty.dtype.bitwidth // 8))
        zero, line = context.get_constant(types.intp, 0), context.get_constant(types.intp, 64)
        with cgutils.for_range_slice(builder, zero, row_bytes, line) as (offset, _):
            _prefetch_call(context, builder, builder.gep(base, [offset]))
        return context.get_dummy_value()

    return types.void(array, row), codegen


@numba.njit(cache=True, nogil=True, inline="always")
def _slot_row(tokens, centre, o, n_vocab):
    """The table row that slot ``o`` (-half .. half) of the window at ``centre`` reads: the context word c reads row
    c, the target w row V + w; -1 for an empty slot (its row is zero)."""
    t = tokens[centre + o]
    return -1 if t < 0 else (t + n_vocab if o == 0 else t)


@numba.njit(cache=True, nogil=True, inline="always")
def _window_rows(tokens, centre, half, n_vocab, rows):
    """Table rows of the window at ``centre`` in slot order, empty slots left out. Returns how many rows were
    written to ``rows``."""
    nr = 0
    for o in range(-half, half + 1):
        r = _slot_row(tokens, centre, o, n_vocab)
        if r >= 0:
            rows[nr] = r
            nr += 1
    return nr


@numba.njit(cache=True, nogil=True, inline="always")
def _sum_rows(table, rows, nr, h):
    """``h = sum_j table[rows[j]]`` accumulated left to right, four rows per pass over ``h`` (same rounding as one
    row at a time: ``((h + a) + b) + ...``; fewer loads and stores of ``h``)."""
    k = table.shape[1]
    h[:] = 0
    j = 0
    while j + 4 <= nr:
        a, b, c, d = table[rows[j]], table[rows[j + 1]], table[rows[j + 2]], table[rows[j + 3]]
        for m in range(k):
            h[m] = h[m] + a[m] + b[m] + c[m] + d[m]
        j += 4
    while j < nr:
        a = table[rows[j]]
        for m in range(k):
            h[m] += a[m]
        j += 1


@numba.njit(cache=True, nogil=True, inline="always")
def _first_argmax(v):
    """The index of the first maximum of ``v``, like ``torch.argmax`` (0 when the maximum is NaN, which a table never
    holds). Eight independent running maxima, lane l covering the indices l, l + 8, ... (max is exact in any order,
    and one chain would wait on itself); then only the lanes that reached the maximum are searched, ~K / 16
    comparisons instead of ~K / 2 for a scan from the start (which took half the time of the selection)."""
    t0 = t1 = t2 = t3 = t4 = t5 = t6 = t7 = v[0]
    m, k = 0, len(v)
    while m + 8 <= k:
        t0, t1, t2, t3 = max(t0, v[m]), max(t1, v[m + 1]), max(t2, v[m + 2]), max(t3, v[m + 3])
        t4, t5, t6, t7 = max(t4, v[m + 4]), max(t5, v[m + 5]), max(t6, v[m + 6]), max(t7, v[m + 7])
        m += 8
    tail = m
    while m < k:  # the tail joins lane 0's maximum, and is searched on its own
        t0 = max(t0, v[m])
        m += 1
    top = max(max(max(t0, t1), max(t2, t3)), max(max(t4, t5), max(t6, t7)))
    best = k
    lanes = (t0, t1, t2, t3, t4, t5, t6, t7)
    for lane in range(8):
        if lanes[lane] == top:
            for i in range(lane, min(tail, best), 8):
                if v[i] == top:
                    best = i
                    break
    for i in range(tail, best):  # best <= k: only below a maximum found in the lanes
        if v[i] == top:
            best = i
            break
    return 0 if best == k else best


@numba.njit(parallel=True, cache=True, nogil=True)
def _winners(table, scale, tokens, centres, half, n_vocab, inv_p, winners, scaled, values, slot_rows, n_chunks,
             select):
    """Per window (centre position in ``tokens``): winner = argmax_mu scale_mu * sum of the window's table rows, and
    the winner's scaled activation <W_win, v / p>; ``values[b * width + slot]`` gets ``table[row, winner]`` (read
    here while the rows are in cache, so the update need not fetch them again) and ``slot_rows[b * width + slot]``
    the row (-1 for an empty slot). With ``select`` False only the sums are formed (a timing probe)."""
    n, k, width = len(centres), table.shape[1], 2 * half + 1
    per = (n + n_chunks - 1) // n_chunks
    for chunk in numba.prange(n_chunks):
        h, v = np.empty(k, dtype=table.dtype), np.empty(k)
        rows, ahead_rows = np.empty(width, dtype=np.int64), np.empty(width, dtype=np.int64)
        end = min(n, (chunk + 1) * per)
        for b in range(chunk * per, end):
            if b + TOKENS_AHEAD < end:  # its two ends: 11 tokens span at most two cache lines
                _prefetch_at(tokens, centres[b + TOKENS_AHEAD] - half)
                _prefetch_at(tokens, centres[b + TOKENS_AHEAD] + half)
            if b + PREFETCH_AHEAD < end:
                for j in range(_window_rows(tokens, centres[b + PREFETCH_AHEAD], half, n_vocab, ahead_rows)):
                    _prefetch_row(table, ahead_rows[j])
            c = centres[b]
            nr = _window_rows(tokens, c, half, n_vocab, rows)
            _sum_rows(table, rows, nr, h)
            if not select:
                winners[b], scaled[b] = 0, h[0]
                continue
            for m in range(k):
                v[m] = h[m] * scale[m]
            best = _first_argmax(v)
            s = 0.0
            for o in range(-half, half + 1):
                r = _slot_row(tokens, c, o, n_vocab)
                slot_rows[b * width + o + half] = r
                if r >= 0:
                    x = float(table[r, best])
                    values[b * width + o + half] = x
                    s += x * inv_p[r]
            winners[b], scaled[b] = best, s * scale[best]


@numba.njit(cache=True, nogil=True)
def _slot_rows(tokens, centres, half, n_vocab, out):
    """``out[b * width + slot]`` = the table row of each slot of each window (-1: empty), as :func:`_winners` writes
    them; for winners found elsewhere (e.g. gathered from other processes)."""
    for b in range(len(centres)):
        for o in range(-half, half + 1):
            out[b * (2 * half + 1) + o + half] = _slot_row(tokens, centres[b], o, n_vocab)


@numba.njit(cache=True, nogil=True)
def _fold_column(table, m, factor, bound, sq):
    """``table[:, m] *= factor``; refreshes ``bound[m]`` and ``sq[m]`` exactly; returns the new scale, 1."""
    top, total = 0.0, 0.0
    for r in range(table.shape[0]):
        table[r, m] = table[r, m] * factor
        x = float(table[r, m])
        total += x * x
        top = max(top, abs(x))
    bound[m], sq[m] = top, total
    return 1.0


@numba.njit(cache=True, nogil=True)
def _fold(table, scale, bound, sq):
    """Fold every scale into its column (``scale = 1``) and recompute the column statistics exactly, in one row-major
    pass (a serial loop: in a numba ``parallel`` function the per-column reductions became parallel regions each)."""
    bound[:], sq[:] = 0.0, 0.0
    for r in range(table.shape[0]):
        for m in range(table.shape[1]):
            table[r, m] = table[r, m] * scale[m]
            x = float(table[r, m])
            sq[m] += x * x
            bound[m] = max(bound[m], abs(x))
    scale[:] = 1.0


@numba.njit(cache=True, nogil=True)
def _group(winners, scaled, k):
    """Windows grouped by winner: ``perm[start[mu]:start[mu + 1]]`` are cell mu's windows in batch order; and
    ``c[mu]`` = the sum of their scaled activations (in batch order)."""
    start, c = np.zeros(k + 1, dtype=np.int64), np.zeros(k)
    for b in range(len(winners)):
        start[winners[b] + 1] += 1
        c[winners[b]] += scaled[b]
    for m in range(k):
        start[m + 1] += start[m]
    fill, perm = start[:k].copy(), np.empty(len(winners), dtype=np.int64)
    for b in range(len(winners)):
        perm[fill[winners[b]]] = b
        fill[winners[b]] += 1
    return start, perm, c


@numba.njit(cache=True, nogil=True)
def _touched(part, n_parts, table, scale, slot_rows, perm, start, c, values, width, inv_p, rows, sums, olds, n_rows,
             peak_cell, stamp, acc):
    """For the cells ``part::n_parts``: their distinct touched rows (``rows``, from ``start[mu] * width`` on), S there
    (``sums``: 1/p summed over the cell's windows, a repeated word once per occurrence), the table entries
    (``olds``, from ``values`` when given, else read), and ``peak_cell[mu] = max |S - c W|`` over them.
    ``stamp`` (all zero, left so) and ``acc`` are [2V + 1] scratch of this part."""
    for m in range(part, table.shape[1], n_parts):
        base, u = start[m] * width, 0
        for q in range(start[m], start[m + 1]):
            if q + WINDOWS_AHEAD < start[m + 1]:  # the cell's windows lie at random places of the batch
                ahead = perm[q + WINDOWS_AHEAD] * width
                _prefetch_at(slot_rows, ahead)
                if len(values):
                    _prefetch_at(values, ahead)
                    _prefetch_at(values, ahead + width - 1)
            for j in range(perm[q] * width, (perm[q] + 1) * width):
                r = slot_rows[j]
                if r < 0:
                    continue
                if stamp[r] == 0:
                    stamp[r], acc[r] = 1, 0.0
                    rows[base + u] = r
                    olds[base + u] = values[j] if len(values) else table[r, m]
                    u += 1
                acc[r] += inv_p[r]
        peak = 0.0
        for j in range(base, base + u):
            r = rows[j]
            sums[j], stamp[r] = acc[r], 0
            peak = max(peak, abs(acc[r] - c[m] * (olds[j] * scale[m])))
        n_rows[m], peak_cell[m] = u, peak


@numba.njit(cache=True, nogil=True)
def _scan(part, n_parts, flagged, table, start, rows, n_rows, width, bound, sq, untouched, stamp):
    """For the flagged cells ``flagged[part::n_parts]``: ``untouched[mu] = max |table[i, mu]|`` over the rows the
    batch does not touch (exact), which also becomes ``bound[mu]``; ``sq[mu]`` is recomputed exactly."""
    for f in range(part, len(flagged), n_parts):
        m = flagged[f]
        base = start[m] * width
        for j in range(base, base + n_rows[m]):
            stamp[rows[j]] = 1
        top, total = 0.0, 0.0
        for r in range(table.shape[0]):
            x = float(table[r, m])
            total += x * x
            if stamp[r] == 0:
                top = max(top, abs(x))
        for j in range(base, base + n_rows[m]):
            stamp[rows[j]] = 0
        untouched[m], bound[m], sq[m] = top, top, total


@numba.njit(cache=True, nogil=True)
def _apply(part, n_parts, table, scale, bound, sq, start, c, rows, sums, olds, n_rows, width, step, renorm_below,
           folded):
    """The step for the cells ``part::n_parts``: ``scale *= 1 - step c`` (folded into the column when it leaves
    ``[renorm_below, 1 / renorm_below]``) and ``table += step S / scale`` at the touched entries."""
    for m in range(part, table.shape[1], n_parts):
        if start[m + 1] == start[m]:
            continue  # won no window: D_mu = 0
        new_scale = scale[m] * (1.0 - step * c[m])
        if not renorm_below < abs(new_scale) < 1.0 / renorm_below:
            new_scale = _fold_column(table, m, new_scale, bound, sq)
            folded[m] = 1
        scale[m] = new_scale
        base, add = start[m] * width, step / new_scale
        for j in range(base, base + n_rows[m]):
            r = rows[j]
            old = float(table[r, m]) if folded[m] else olds[j]
            table[r, m] = old + add * sums[j]
            new = float(table[r, m])
            sq[m] += new * new - old * old
            bound[m] = max(bound[m], abs(new))


@numba.njit(parallel=True, cache=True, nogil=True)
def _touched_parts(n_parts, table, scale, slot_rows, perm, start, c, values, width, inv_p, rows, sums, olds, n_rows,
                   peak_cell, stamps, accs):
    """:func:`_touched` for every part, one per thread."""
    for p in numba.prange(n_parts):
        _touched(p, n_parts, table, scale, slot_rows, perm, start, c, values, width, inv_p, rows, sums, olds, n_rows,
                 peak_cell, stamps[p], accs[p])


@numba.njit(parallel=True, cache=True, nogil=True)
def _scan_parts(n_parts, flagged, table, start, rows, n_rows, width, bound, sq, untouched, stamps):
    """:func:`_scan` for every part, one per thread."""
    for p in numba.prange(n_parts):
        _scan(p, n_parts, flagged, table, start, rows, n_rows, width, bound, sq, untouched, stamps[p])


@numba.njit(parallel=True, cache=True, nogil=True)
def _apply_parts(n_parts, table, scale, bound, sq, start, c, rows, sums, olds, n_rows, width, step, renorm_below,
                 folded):
    """:func:`_apply` for every part, one per thread."""
    for p in numba.prange(n_parts):
        _apply(p, n_parts, table, scale, bound, sq, start, c, rows, sums, olds, n_rows, width, step, renorm_below,
               folded)


@dataclass
class BatchWinners:
    """What :meth:`LazyScaleTrainer.winners` found for a batch of windows.

    Attributes:
        winners: int64 ``[B]``: each window's winning cell.
        scaled: float64 ``[B]``: the winner's scaled activation ``<W_win, v / p>``.
        values: float64 ``[B * window]``: ``table[slot row, winner]`` per window slot (read while in cache), or
            None (e.g. winners gathered from other processes): the update then reads the table.
        slot_rows: int32 ``[B * window]``: the table row of each window slot (-1: empty), or None: the update then
            reads the tokens again.
    """

    winners: np.ndarray
    scaled: np.ndarray
    values: np.ndarray | None = None
    slot_rows: np.ndarray | None = None


@dataclass
class Timings:
    """Seconds spent by :class:`LazyScaleTrainer` in its two kernels."""

    winners: float = 0.0
    update: float = 0.0


class LazyScaleTrainer:
    """The exact FlyVec mini-batch rule on a ``[2V + 1, K]`` table, in place, with a lazy per-cell scale.

    Args:
        table: ``[2V + 1, K]`` float32/float64 CPU tensor, ``table[i, mu] = W[mu, i]``, last row zero. It is
            updated in place and holds ``W / scale`` while training: call :meth:`fold` before reading it.
        tokens: int64 ``[T]`` flat word ids (``EncodedCorpus.tokens``; -1 = empty slot).
        inv_p: ``[2V + 1]`` input scaling 1/p (0 for the sentinel).
        window: positions per window (odd).
        renorm_below: fold a cell's scale into its column when ``|scale|`` leaves ``[renorm_below, 1 /
            renorm_below]``.

    Attributes:
        scale: float64 ``[K]``: ``W[mu] = table[:, mu] * scale[mu]``.
        counters: ``scans`` (columns scanned exactly because the carried bound could not decide max|D|),
            ``folds`` (scales folded into the table), ``steps``.
        timings: :class:`Timings`.
    """

    def __init__(self, table: torch.Tensor, tokens: torch.Tensor, inv_p: torch.Tensor, window: int,
                 renorm_below: float = 1e-20) -> None:
        if table.device.type != "cpu" or not table.is_contiguous() or table.dtype not in (torch.float32,
                                                                                          torch.float64):
            raise ValueError(f"table must be a contiguous float32/float64 CPU tensor, got {table.dtype} on "
                             f"{table.device}")
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be an odd int >= 1, got {window}")
        if not 0 < renorm_below < 1:
            raise ValueError(f"renorm_below must be in (0, 1), got {renorm_below}")
        self.table = table.numpy()  # shares memory with the tensor
        self.tokens = tokens.numpy()
        self.inv_p = inv_p.to(torch.float64).numpy()
        self.half, self.n_vocab = window // 2, (len(self.table) - 1) // 2
        self.renorm_below = renorm_below
        k = self.table.shape[1]
        self.scale, self.bound, self.sq = np.ones(k), np.empty(k), np.empty(k)
        _fold(self.table, self.scale, self.bound, self.sq)  # scale 1: only the column statistics
        self._counters = np.zeros(3, dtype=np.int64)
        self.timings = Timings()
        self._threads = -1
        self._scratch: tuple[np.ndarray, ...] = ()
        self._work: tuple[np.ndarray, ...] = (np.empty(0, dtype=np.int64), np.empty(0), np.empty(0))

    @property
    def counters(self) -> dict[str, int]:
        scans, folds, steps = (int(x) for x in self._counters)
        return {"scans": scans, "folds": folds, "steps": steps}

    def _set_threads(self) -> int:
        n = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(n)
        if n != self._threads:
            rows = len(self.table)
            self._threads = n
            self._scratch = (np.zeros((n, rows), dtype=np.int8), np.zeros((n, rows)))
        return n

    def winners(self, centres: np.ndarray, select: bool = True) -> BatchWinners:
        """Winners and scaled activations of the windows centred at positions ``centres`` (int64 ``[B]``) of
        ``tokens``, with the current W. ``select=False`` only sums the rows (a timing probe; no valid result)."""
        n = self._set_threads()
        centres = np.ascontiguousarray(centres, dtype=np.int64)
        slots = len(centres) * (2 * self.half + 1)
        out = BatchWinners(np.empty(len(centres), dtype=np.int64), np.empty(len(centres)), np.empty(slots),
                           np.empty(slots, dtype=np.int32))
        start = time.perf_counter()
        _winners(self.table, self.scale, self.tokens, centres, self.half, self.n_vocab, self.inv_p, out.winners,
                 out.scaled, out.values, out.slot_rows, min(4 * n, max(1, len(centres))), select)
        self.timings.winners += time.perf_counter() - start
        return out

    def row_norms(self) -> np.ndarray:
        """``|W_mu|``: float64 ``[K]``."""
        return np.abs(self.scale) * np.sqrt(np.maximum(self.sq, 0.0))

    def energy(self, found: BatchWinners) -> np.ndarray:
        """Per-window energy ``-<W_win, v / p> / |W_win|`` with the current W: ``[B]``."""
        return -found.scaled / np.maximum(self.row_norms()[found.winners], 1e-30)

    def update(self, centres: np.ndarray, found: BatchWinners, lr: float, prec: float = 1e-30) -> float:
        """Apply the step of the batch of windows at ``centres`` given what :meth:`winners` ``found`` for them
        (possibly gathered from several processes, in batch order). Returns max|D|."""
        n = self._set_threads()
        start_time = time.perf_counter()
        k, width = self.table.shape[1], 2 * self.half + 1
        centres = np.ascontiguousarray(centres, dtype=np.int64)
        slots = len(centres) * width
        if len(self._work[0]) < slots:  # reused from batch to batch: fresh large arrays would be page-faulted anew
            self._work = (np.empty(slots, dtype=np.int64), np.empty(slots), np.empty(slots))
        rows, sums, olds = (x[:slots] for x in self._work)
        n_rows, peak_cell = np.zeros(k, dtype=np.int64), np.zeros(k)
        values = found.values if found.values is not None else np.empty(0)
        slot_rows = found.slot_rows
        if slot_rows is None:
            slot_rows = np.empty(slots, dtype=np.int32)
            _slot_rows(self.tokens, centres, self.half, self.n_vocab, slot_rows)
        stamps, acc = self._scratch
        start, perm, c = _group(np.ascontiguousarray(found.winners, dtype=np.int64),
                                np.ascontiguousarray(found.scaled, dtype=np.float64), k)
        _touched_parts(n, self.table, self.scale, slot_rows, perm, start, c, values, width, self.inv_p, rows, sums,
                       olds, n_rows, peak_cell, stamps, acc)
        peak = peak_cell.max()
        # cells whose untouched entries might hold max|D| (|c| max|W| above the touched peak): scan them exactly
        flagged = np.flatnonzero((c != 0) & (np.abs(c * self.scale) * self.bound > peak))
        if len(flagged):
            untouched = np.zeros(k)
            _scan_parts(n, flagged, self.table, start, rows, n_rows, width, self.bound, self.sq, untouched, stamps)
            peak = max(peak, float((np.abs(c * self.scale) * untouched)[flagged].max()))
        step = lr / max(peak, prec)
        folded = np.zeros(k, dtype=np.int64)
        _apply_parts(n, self.table, self.scale, self.bound, self.sq, start, c, rows, sums, olds, n_rows, width, step,
                     self.renorm_below, folded)
        self._counters += (len(flagged), int(folded.sum()), 1)
        self.timings.update += time.perf_counter() - start_time
        return float(peak)

    def fold(self) -> None:
        """Fold the scales into the table (``scale = 1``), so that the table holds W itself."""
        if not np.all(self.scale == 1.0):
            _fold(self.table, self.scale, self.bound, self.sq)
