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

Splitting a batch's windows over several workers and summing their D (an all-reduce) gives the same D: that is how
:meth:`FlyVec.fit <kexue.models.flyvec.FlyVec.fit>` scales out under ``torchrun``.
"""

from dataclasses import dataclass

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


def hebbian_delta(table: torch.Tensor, idx: torch.Tensor, inv_p: torch.Tensor, out: torch.Tensor) -> DeltaStats:
    """The update matrix D of the rule for one batch of windows, written into ``out`` (transposed layout).

    Args:
        table: ``[2V + 1, K]`` weights, ``table[i, mu] = W[mu, i]``; the last row must be zero.
        idx: int64 ``[B, W]`` rows each window reads (:func:`~kexue.models.flyvec.text.window_indices`).
        inv_p: ``[2V + 1]`` input scaling 1/p per row (0 for the sentinel); all ones for no frequency scaling.
        out: ``[2V + 1, K]`` buffer, overwritten with D (transposed); its sentinel row stays zero.

    Returns:
        :class:`DeltaStats` of the batch.
    """
    n_cells = table.shape[1]
    raw = F.embedding_bag(idx, table, mode="sum")  # [B, K] = <W_mu, v^A>, a sum of W rows per window
    winners = raw.argmax(dim=1)
    weights = inv_p[idx]  # [B, W] the nonzero entries of v^A / p
    scaled = (table[idx, winners.unsqueeze(1)] * weights).sum(dim=1)  # <W_win, v^A / p>, gathered, not a matmul
    c = torch.zeros(n_cells, dtype=table.dtype, device=table.device).index_add_(0, winners, scaled)
    torch.mul(table, c.neg_(), out=out)  # dense part: -c_mu W_mu (columns of cells that won nothing stay 0)
    flat = (idx * n_cells + winners.unsqueeze(1)).reshape(-1)
    out.view(-1).index_add_(0, flat, weights.reshape(-1).to(out.dtype))  # sparse part: + v^A / p on the winner
    return DeltaStats(winners, scaled)


def apply_delta(table: torch.Tensor, delta: torch.Tensor, lr: float, prec: float = 1e-30) -> torch.Tensor:
    """``table += lr / max(max|delta|, prec) * delta`` in place, without a host sync; returns max|delta|."""
    lo, hi = torch.aminmax(delta)
    peak = torch.maximum(hi, lo.neg())
    table.addcmul_(delta, lr / peak.clamp_min(prec))
    return peak


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
