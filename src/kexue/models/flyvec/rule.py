"""The FlyVec learning rule: winner-take-all Hebbian plasticity with frequency scaling (post 8, spec section 2).

For a mini-batch B of windows with inputs v^A in R^(2V) (context bag of words, then one-hot target), word
frequencies p, and K Kenyon-cell weight rows W_mu, the official mini-batch rule (``cuda_funcs.cu``) is

    winner(A)   = argmax_mu <W_mu, v^A>                             (raw, unscaled input)
    D_mu        = sum_{A in B: winner(A) = mu} ( v^A / p - <W_mu, v^A / p> W_mu )
    W          <- W + lr / max(max_{mu, i} |D_mu,i|, prec) * D      (step normalised by the largest entry)

and the BioHash-style energy it descends on average is ``E = -sum_A <W_win, v^A / p> / |W_win|``.

:func:`hebbian_delta` is the fast path: the weights are stored transposed as a ``[2V + 1, K]`` table (a window's
activations are then a sum of W rows, one ``embedding_bag``), the last row an all-zero sentinel that empty window
slots point at. Per window it touches only its W slots: the sparse part of D is one flat ``index_add_`` of the
W * B values ``1/p``; the dense part ``-c_mu W_mu`` (``c_mu`` = summed scaled activations of the windows ``mu``
won) is one broadcast multiply into a reused buffer. :func:`apply_delta` takes the max-normalised step.
:func:`hebbian_step_reference` is the slow twin on dense ``[B, 2V]`` inputs, the spec's formula line by line.

:func:`hebbian_step_` is the single-process fast path: the same step without materialising D. Outside the entries
the batch touches, D is ``-c_mu W_mu``, so ``W + s D = W (1 - s c) + s S`` is one in-place column scaling plus a
sparse add, and max|D| is the larger of the touched entries' |D| (computed exactly, sparsely) and
``max_mu |c_mu| max_i |W_i,mu|`` over the untouched ones. :class:`ColumnMax` keeps an upper bound of the per-cell
``max_i |W_i,mu|`` through the updates; whenever the bound cannot rule out an untouched entry as the maximum, the
step falls back to the dense D (and refreshes the bound), so the result is the same step either way.

D is a function of the batch's (window, winner, scaled activation) triples and W, so workers that split a batch's
windows, find their winners (:func:`window_winners`) and exchange the triples (small: two numbers per window) can
each apply the same step: that is how :meth:`FlyVec.fit <kexue.models.flyvec.FlyVec.fit>` scales out under
``torchrun``, without all-reducing a dense D. The CPU trainer is :mod:`kexue.models.flyvec.fast` (compiled
kernels, the same rule); these torch functions are its slow twin and the GPU path.
"""

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class DeltaStats:
    """What :func:`hebbian_delta` found for its windows.

    Attributes:
        winners: int64 ``[B]``: the winning cell of each window (argmax of the raw activation).
        scaled: ``[B]``: the winner's frequency-scaled activation ``<W_win, v / p>``.
    """

    winners: torch.Tensor
    scaled: torch.Tensor


def window_winners(table: torch.Tensor, idx: torch.Tensor, inv_p: torch.Tensor) -> DeltaStats:
    """Winners (argmax of the raw activation, one ``embedding_bag``) and their scaled activations for a batch of
    windows (``table``, ``idx``, ``inv_p`` as for :func:`hebbian_delta`)."""
    raw = F.embedding_bag(idx, table, mode="sum")  # [B, K] = <W_mu, v^A>, a sum of W rows per window
    winners = raw.argmax(dim=1)
    scaled = (table[idx, winners.unsqueeze(1)] * inv_p[idx]).sum(dim=1)  # <W_win, v^A / p>, gathered
    return DeltaStats(winners, scaled)


def hebbian_delta(table: torch.Tensor, idx: torch.Tensor, inv_p: torch.Tensor, out: torch.Tensor,
                  stats: DeltaStats | None = None) -> DeltaStats:
    """The update matrix D of the rule for one batch of windows, written into ``out`` (transposed layout).

    Args:
        table: ``[2V + 1, K]`` weights, ``table[i, mu] = W[mu, i]``; the last row must be zero.
        idx: int64 ``[B, W]`` rows each window reads (:func:`~kexue.models.flyvec.text.window_indices`).
        inv_p: ``[2V + 1]`` input scaling 1/p per row (0 for the sentinel); all ones for no frequency scaling.
        out: ``[2V + 1, K]`` buffer, overwritten with D (transposed); its sentinel row stays zero.
        stats: the batch's winners if already known (:func:`window_winners`, e.g. gathered from other ranks).

    Returns:
        :class:`DeltaStats` of the batch.
    """
    n_cells = table.shape[1]
    stats = window_winners(table, idx, inv_p) if stats is None else stats
    winners, scaled = stats.winners, stats.scaled
    weights = inv_p[idx]  # [B, W] the nonzero entries of v^A / p
    c = torch.zeros(n_cells, dtype=table.dtype, device=table.device).index_add_(0, winners, scaled)
    torch.mul(table, c.neg_(), out=out)  # dense part: -c_mu W_mu (columns of cells that won nothing stay 0)
    flat = (idx * n_cells + winners.unsqueeze(1)).reshape(-1)
    out.view(-1).index_add_(0, flat, weights.reshape(-1).to(out.dtype))  # sparse part: + v^A / p on the winner
    return stats


def apply_delta(table: torch.Tensor, delta: torch.Tensor, lr: float, prec: float = 1e-30) -> torch.Tensor:
    """``table += lr / max(max|delta|, prec) * delta`` in place, without a host sync; returns max|delta|."""
    lo, hi = torch.aminmax(delta)
    peak = torch.maximum(hi, lo.neg())
    table.addcmul_(delta, lr / peak.clamp_min(prec))
    return peak


@dataclass
class ColumnMax:
    """An upper bound of ``max_i |table[i, mu]|`` per cell, carried from step to step by :func:`hebbian_step_`.

    Attributes:
        bound: ``[K]``, or None until the first step computes it exactly.
        fallbacks: steps that needed the dense D because the bound could not decide max|D|.
        steps: steps taken.
    """

    bound: torch.Tensor | None = None
    fallbacks: int = 0
    steps: int = 0
    _delta: torch.Tensor | None = field(default=None, repr=False)

    def exact(self, table: torch.Tensor) -> torch.Tensor:
        lo, hi = torch.aminmax(table, dim=0)
        self.bound = torch.maximum(hi, lo.neg())
        return self.bound


def hebbian_step_(table: torch.Tensor, idx: torch.Tensor, inv_p: torch.Tensor, lr: float, scratch: torch.Tensor,
                  colmax: ColumnMax, prec: float = 1e-30, energy: bool = False, stats: DeltaStats | None = None
                  ) -> tuple[DeltaStats, torch.Tensor | None]:
    """One step of the rule in place: ``apply_delta(table, hebbian_delta(...), lr)`` up to round-off, no dense D.

    Args:
        table: ``[2V + 1, K]`` weights (last row zero), updated in place.
        idx, inv_p: as for :func:`hebbian_delta`.
        lr: step size of this epoch.
        scratch: ``[2V + 1, K]`` buffer that must be all zero; it is left all zero (it sums repeated entries).
        colmax: the per-cell bound carried between steps (start with ``ColumnMax()``).
        energy: also return the per-window energy ``[B]`` with the weights before the step.
        stats: the batch's winners if already known (:func:`window_winners`, e.g. gathered from other ranks).

    Returns:
        ``(stats, energy or None)``.
    """
    n_cells, width = table.shape[1], idx.shape[1]
    if colmax.bound is None:
        colmax.exact(table)
    winners = F.embedding_bag(idx, table, mode="sum").argmax(dim=1) if stats is None else stats.winners
    flat = (idx * n_cells + winners.unsqueeze(1)).reshape(-1)  # the entries (row i, column winner) windows touch
    weights = inv_p[idx].reshape(-1)
    w_at = table.view(-1)[flat]
    if stats is None:
        stats = DeltaStats(winners, (w_at.view(-1, width) * weights.view(-1, width)).sum(dim=1))
    scaled = stats.scaled
    terms = energy_terms(table, stats) if energy else None
    c = torch.zeros(n_cells, dtype=table.dtype, device=table.device).index_add_(0, winners, scaled)
    sums = scratch.view(-1)
    sums.index_add_(0, flat, weights.to(sums.dtype))
    s_at = sums[flat]  # S at each touched entry, repeats summed
    sums.index_fill_(0, flat, 0)
    c_at = c[winners].repeat_interleave(width)
    peak_touched = (s_at - c_at * w_at).abs().max()
    colmax.steps += 1
    if bool((c.abs() * colmax.bound).max() > peak_touched):  # an untouched entry might hold max|D|: go dense
        colmax.fallbacks += 1
        if colmax._delta is None:
            colmax._delta = torch.empty_like(table)
        hebbian_delta(table, idx, inv_p, colmax._delta, stats)
        apply_delta(table, colmax._delta, lr, prec)
        colmax.exact(table)
        return stats, terms
    step = lr / peak_touched.clamp_min(prec)
    factor = 1 - step * c
    table.mul_(factor)
    table.view(-1).index_add_(0, flat, (step * weights).to(table.dtype))
    # untouched entries scaled exactly by |factor|; touched ones are known: the bound stays an upper bound
    new_at = (factor[winners].repeat_interleave(width) * w_at + step * s_at).abs()
    touched_max = torch.zeros_like(c).scatter_reduce_(0, winners.repeat_interleave(width), new_at, "amax")
    colmax.bound = torch.maximum(factor.abs() * colmax.bound, touched_max)
    return stats, terms


def energy_terms(table: torch.Tensor, stats: DeltaStats) -> torch.Tensor:
    """Per-window energy ``-<W_win, v / p> / |W_win|`` (with the weights *before* the update): ``[B]``."""
    norms = torch.linalg.vector_norm(table, dim=0)  # row norms of W = column norms of the table
    return -stats.scaled / norms[stats.winners].clamp_min(1e-30)


def hebbian_step_reference(weights: torch.Tensor, inputs: torch.Tensor, inv_p: torch.Tensor, lr: float,
                           prec: float = 1e-30) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slow twin of one step: dense inputs, the spec's formulas as written.

    Args:
        weights: W ``[K, 2V]``.
        inputs: dense window inputs ``[B, 2V]`` (:func:`~kexue.models.flyvec.text.window_dense`).
        inv_p: ``[2V]`` scaling 1/p.
        lr: the step size of this epoch.

    Returns:
        ``(new W [K, 2V], winners [B], energy [B])`` with the energy of the old W.
    """
    winners = (inputs @ weights.T).argmax(dim=1)
    scaled_inputs = inputs * inv_p
    delta = torch.zeros_like(weights)
    energy = torch.empty(len(inputs), dtype=weights.dtype)
    for a in range(len(inputs)):
        mu = int(winners[a])
        activation = weights[mu] @ scaled_inputs[a]
        delta[mu] += scaled_inputs[a] - activation * weights[mu]
        energy[a] = -activation / weights[mu].norm()
    step = lr / max(delta.abs().max().item(), prec)
    return weights + step * delta, winners, energy
