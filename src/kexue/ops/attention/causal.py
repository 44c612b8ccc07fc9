"""Causal linear attention in three tied forms: dense masked reference, chunked parallel, recurrent step.

Katharopoulos et al., "Transformers are RNNs" (arXiv 2006.16236, section 3.3 and Appendix A); Su,
kexue.fm/archives/7546. With feature-mapped queries and keys (phi_q, phi_k, size C) and values v (size M):

    o_i = phi_q_i^T S_i / (phi_q_i^T z_i + eps),   S_i = sum_{j<=i} phi_k_j v_j^T,   z_i = sum_{j<=i} phi_k_j.

- :func:`causal_linear_attention_dense`: the masked N x N form, obviously correct, O(N^2) time and memory.
- :func:`causal_linear_attention_chunked`: the fast path, a custom ``autograd.Function``. Inside chunks of
  ``chunk_size`` tokens it is a masked chunk x chunk product; between chunks it carries the prefix sum of the chunk
  states ``phi_k^T v`` (and of the key sums, for the normaliser). Its backward is the paper's prefix/suffix trick
  (Appendix A) done chunk-wise: grad phi_q reads the forward prefix states, grad phi_k and grad v a suffix sum of
  ``phi_q^T G`` over later chunks. Nothing of size N x C x M is built: memory is linear in N.
- :func:`step_mapped`: the RNN form, one token at a time with an O(C M) state per head, for decoding;
  :func:`causal_linear_attention_recurrent` loops it over a sequence (the third twin, slow in Python).

Einsum letters: b batch*heads, n/i/j positions, c feature, m value feature, k chunk index.
States are accumulated in float32 (float64 stays float64); see :func:`kexue.ops.attention.linear_attention`.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from kexue.ops.attention.feature_maps import ONE

DEFAULT_CHUNK = 64  # tokens per chunk of the parallel form; see benchmarks/bench_attention.py

# --------------------------------------------------------------------------------------------------------------
# 1. Dense masked reference
# --------------------------------------------------------------------------------------------------------------


def causal_linear_attention_dense(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor,
                                  eps: float = 1e-6) -> torch.Tensor:
    """Causal linear attention by the explicit masked N x N matrix (the reference).

    Args:
        phi_q: mapped queries ``[..., N, C]``.
        phi_k: mapped keys ``[..., N, C]`` (padded keys already zeroed).
        v: values ``[..., N, M]``.
        eps: added to the normaliser.

    Returns:
        ``[..., N, M]``.
    """
    scores = (phi_q @ phi_k.transpose(-1, -2)).tril()  # [..., N, N], row i sees keys j <= i
    return (scores @ v) / (scores.sum(-1, keepdim=True) + eps)


def causal_linear_weights(phi_q: torch.Tensor, phi_k: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The attention matrix that causal linear attention applies implicitly: ``[..., N, N]``, rows sum to ~1.

    For figures (attention maps); O(N^2) like the reference.
    """
    scores = (phi_q @ phi_k.transpose(-1, -2)).tril()
    return scores / (scores.sum(-1, keepdim=True) + eps)


# --------------------------------------------------------------------------------------------------------------
# 2. Chunked parallel form with a custom backward
# --------------------------------------------------------------------------------------------------------------
# Chunk states live in one [b * k, ...] batch (b sequences of k chunks each, sequence-major), so that every product
# is a single bmm over all chunks of all sequences. A prefix over chunks is then read with a shift of one along that
# flat batch: slot p - 1 for chunk p. The scans below leave the slot that the shift would carry across a sequence
# boundary at zero, so the first chunk of sequence b + 1 never sees the last state of sequence b.


def _shifted_prefix_(x: torch.Tensor) -> torch.Tensor:
    """In place on ``[b, k, ...]``: slot p <- sum_{p' <= p} x_p' for p < k - 1, slot k - 1 <- 0.

    Read at flat index (b, p) - 1, it gives sum_{p' < p} x_p' (zero for p = 0). A loop of k small in-place adds:
    ``torch.cumsum`` over a middle dimension is ~20x slower on CPU, and a triangular matmul costs O(k^2).
    """
    k = x.shape[1]
    for p in range(1, k - 1):
        x[:, p].add_(x[:, p - 1])
    x[:, k - 1].zero_()
    return x


def _shifted_suffix_(x: torch.Tensor) -> torch.Tensor:
    """In place on ``[b, k, ...]``: slot p <- sum_{p' >= p} x_p' for p > 0, slot 0 <- 0 (read at flat index + 1).

    A reversed running sum, not "total minus prefix": a query that sees no key has a normaliser of eps, so its
    gradient is ~1/eps, and the subtraction would smear that magnitude's rounding error over every other chunk.
    """
    k = x.shape[1]
    for p in range(k - 2, 0, -1):
        x[:, p].add_(x[:, p + 1])
    x[:, 0].zero_()
    return x


class _CausalLinearAttention(torch.autograd.Function):
    """o = num / den with num_i = sum_{j<=i} (q_i . k_j) v_j and den_i = sum_{j<=i} q_i . k_j + eps.

    Inputs are contiguous ``[b, N, C]``, ``[b, N, C]``, ``[b, N, M]`` with N a multiple of ``chunk``. The Function
    owns the normaliser too: its intra-chunk part is the row sum of the score block already computed, its
    inter-chunk part a dot product with the prefix key sum, and in backward it acts as one more value column (of ones)
    whose incoming gradient is ``-w``, w_i = g_i . o_i. Twelve batched block products in all (4 forward, 8 backward;
    blocks of chunk x C, chunk x M, chunk x chunk and C x M), no autograd graph inside, and every temporary is one
    of those blocks for every chunk, or a per-token scalar.
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, eps: float, chunk: int) -> torch.Tensor:
        b, n, c = q.shape
        m, nc = v.shape[-1], n // chunk
        q3, k3, v3 = q.view(-1, chunk, c), k.view(-1, chunk, c), v.view(-1, chunk, m)  # [b*k, chunk, .]
        scores = torch.bmm(q3, k3.transpose(1, 2)).tril_()  # [b*k, chunk, chunk], j <= i inside the chunk
        out = torch.bmm(scores, v3)  # intra-chunk numerator [b*k, chunk, M]
        den = scores.sum(-1)  # intra-chunk normaliser [b*k, chunk]
        s = z = None
        if nc > 1:
            # Chunk states phi_k^T v and key sums, prefix-summed over earlier chunks (read at flat index - 1).
            s = _shifted_prefix_(torch.bmm(k3.transpose(1, 2), v3).view(b, nc, c, m)).view(-1, c, m)
            z = _shifted_prefix_(k3.sum(1).view(b, nc, c)).view(-1, 1, c)  # [b*k, 1, C]
            out[1:].baddbmm_(q3[1:], s[:-1])
            den[1:].add_(torch.linalg.vecdot(q3[1:], z[:-1]))  # a batched mat-vec bmm is ~2x slower
        den.add_(eps)
        out.div_(den.unsqueeze(-1))
        ctx.save_for_backward(q, k, v, scores, s, z, den, out)
        ctx.chunk = chunk
        return out.view(b, n, m)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        q, k, v, scores, s, z, den, out = ctx.saved_tensors
        chunk = ctx.chunk
        b, n, c = q.shape
        m, nc = v.shape[-1], n // chunk
        q3, k3, v3 = q.view(-1, chunk, c), k.view(-1, chunk, c), v.view(-1, chunk, m)
        g = grad.reshape(-1, chunk, m).div(den.unsqueeze(-1))  # d loss / d numerator
        w = torch.linalg.vecdot(g, out)  # -(d loss / d normaliser), [b*k, chunk]
        # d(scores)_ij = g_i . v_j - w_i for j <= i (the normaliser is a value column of ones).
        dscores = torch.bmm(g, v3.transpose(1, 2)).sub_(w.unsqueeze(-1)).tril_()
        dq = torch.bmm(dscores, k3)
        dk = torch.bmm(dscores.transpose(1, 2), q3)
        del dscores  # the order of this block keeps at most five N-sized temporaries alive at once
        if nc > 1:
            # Prefix part (paper's grad phi(Q)): g_i S_{<k}^T - w_i z_{<k}.
            dq[1:].baddbmm_(g[1:], s[:-1].transpose(1, 2)).addcmul_(w[1:].unsqueeze(-1), z[:-1], value=-1)
        dv = torch.bmm(scores.transpose(1, 2), g)
        if nc > 1:
            # Suffix part (paper's grad phi(K), grad V): sums of q^T g and of w q over later chunks.
            r = _shifted_suffix_(torch.bmm(q3.transpose(1, 2), g).view(b, nc, c, m)).view(-1, c, m)
            rz = _shifted_suffix_(torch.bmm(w.unsqueeze(1), q3).view(b, nc, c)).view(-1, 1, c)
            del g
            dk[:-1].baddbmm_(v3[:-1], r[1:].transpose(1, 2)).sub_(rz[1:])
            dv[:-1].baddbmm_(k3[:-1], r[1:])
        return dq.view(b, n, c), dk.view(b, n, c), dv.view(b, n, m), None, None


def causal_linear_attention_chunked(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6,
                                    chunk_size: int = DEFAULT_CHUNK) -> torch.Tensor:
    """Causal linear attention, chunked parallel form with a custom backward (the fast path).

    Same arguments and result as :func:`causal_linear_attention_dense`; any N (the tail chunk is zero-padded, and a
    zero key adds nothing). Time O(N (chunk (C + M) + C M)); memory O(N (chunk + C + M) + (N / chunk) C M): no
    per-position C x M state is stored.
    """
    lead = phi_q.shape[:-2]
    n, m = phi_q.shape[-2], v.shape[-1]
    chunk_size = min(chunk_size, n)  # a short sequence is one chunk, not one padded chunk
    pad = -n % chunk_size

    def flat(x: torch.Tensor) -> torch.Tensor:  # [..., N, f] -> contiguous [b, N + pad, f]
        x = x.reshape(-1, n, x.shape[-1])
        return F.pad(x, (0, 0, 0, pad)) if pad else x.contiguous()

    out = _CausalLinearAttention.apply(flat(phi_q), flat(phi_k), flat(v), float(eps), chunk_size)
    return (out[:, :n] if pad else out).reshape(*lead, n, m)


# --------------------------------------------------------------------------------------------------------------
# 3. Recurrent form
# --------------------------------------------------------------------------------------------------------------


_SMALL_STATE = 1 << 18  # states up to this many elements are read out by multiply-and-reduce, larger ones by bmm


class LinearAttentionState(NamedTuple):
    """RNN state of causal linear attention, O(C M) per head whatever the position.

    Attributes:
        s: ``[B, H, C, M]`` sum of phi(k_j) v_j^T (float32 for low-precision inputs).
        z: ``[B, H, C]`` sum of phi(k_j).
        position: tokens consumed so far.
    """

    s: torch.Tensor
    z: torch.Tensor
    position: int = 0


def linear_attention_state(batch: int, heads: int, feature_dims: int, value_dims: int, *,
                           device: torch.device | str | None = None,
                           dtype: torch.dtype = torch.float32) -> LinearAttentionState:
    """The empty state (S_0 = 0, z_0 = 0) for :func:`step_mapped`; ``feature_dims`` is the map's C."""
    s = torch.zeros(batch, heads, feature_dims, value_dims, device=device, dtype=dtype)
    return LinearAttentionState(s, torch.zeros(batch, heads, feature_dims, device=device, dtype=dtype), 0)


def step_mapped(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, state: LinearAttentionState,
                eps: float = 1e-6) -> tuple[torch.Tensor, LinearAttentionState]:
    """One recurrent step on mapped inputs ``[B, H, C]``, ``[B, H, C]``, ``[B, H, M]``; out-of-place (autograd-safe).

    Decoding is dispatch-bound (the arithmetic is 4 C M flops per head), so this is the fewest tensor ops that do it:
    a rank-1 update of S, an add for z, a mat-vec for the numerator and a dot product for the normaliser.
    """
    s = torch.addcmul(state.s, phi_k.unsqueeze(-1), v.unsqueeze(-2))  # S_i = S_{i-1} + phi_k v^T
    z = state.z + phi_k
    if s.numel() <= _SMALL_STATE:
        # Multiply and reduce: 1.4x (B=1, H=8, 64 x 64) to 2.6x (B=64, H=4, 16 x 16) faster than a batched bmm of
        # 1 x C by C x M blocks, whose per-block overhead dominates at these sizes.
        num = (phi_q.unsqueeze(-1) * s).sum(-2)
    else:
        b, h, c = phi_q.shape
        num = torch.bmm(phi_q.view(b * h, 1, c), s.view(b * h, c, -1)).view(b, h, -1)
    den = (phi_q * z).sum(-1, keepdim=True).add_(ONE, alpha=eps)
    return num / den, LinearAttentionState(s, z, state.position + 1)


def causal_linear_attention_recurrent(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor,
                                      eps: float = 1e-6) -> torch.Tensor:
    """Causal linear attention as an RNN loop over positions (the slow twin of the recurrent form).

    Args:
        phi_q, phi_k: ``[B, H, N, C]``; v: ``[B, H, N, M]``.

    Returns:
        ``[B, H, N, M]``.
    """
    b, h, n, c = phi_q.shape
    state = linear_attention_state(b, h, c, v.shape[-1], device=v.device, dtype=v.dtype)
    outs = []
    for i in range(n):
        out, state = step_mapped(phi_q[:, :, i], phi_k[:, :, i], v[:, :, i], state, eps)
        outs.append(out)
    return torch.stack(outs, dim=2)
