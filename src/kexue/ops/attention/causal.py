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
- :func:`linear_attention_step`: the RNN form, one token at a time with an O(C M) state per head, for decoding;
  :func:`causal_linear_attention_recurrent` loops it over a sequence (the third twin, slow in Python).

Einsum letters: b batch*heads, n/i/j positions, c feature, m value feature, k chunk index.
States are accumulated in float32 (float64 stays float64); see :func:`kexue.ops.attention.linear_attention`.
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

DEFAULT_CHUNK = 128  # tokens per chunk of the parallel form (64-128 are near-optimal on CPU for head size 64)

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


def _exclusive_prefix(x: torch.Tensor) -> torch.Tensor:
    """Sum over earlier chunks: ``[b, k, ...]`` -> same shape, entry k = sum_{p<k} x_p."""
    return torch.cumsum(x, dim=1) - x


def _exclusive_suffix(x: torch.Tensor) -> torch.Tensor:
    """Sum over later chunks: entry k = sum_{p>k} x_p.

    A reversed cumsum, not "total minus prefix": a query that sees no key has a normaliser of eps, so its gradient is
    ~1/eps, and the subtraction would smear that magnitude's rounding error over every other chunk in fp32.
    """
    out = torch.zeros_like(x)
    out[:, :-1] = torch.flip(torch.cumsum(torch.flip(x[:, 1:], [1]), 1), [1])
    return out


class _CausalLinearAttention(torch.autograd.Function):
    """o = num / den with num_i = sum_{j<=i} (q_i . k_j) v_j and den_i = sum_{j<=i} q_i . k_j + eps.

    Inputs are chunked views ``[b, k, chunk, C]``, ``[b, k, chunk, C]``, ``[b, k, chunk, M]`` (zero-padded tail).
    Letting the Function own the normaliser as well saves five N-sized autograd passes (cumsum, product, sum,
    division and their backwards): den's intra-chunk part is the row sum of the score block already computed, its
    inter-chunk part a mat-vec with the prefix key sum. In backward, den behaves like an extra value column of ones
    with incoming gradient ``dden``.
    """

    @staticmethod
    def forward(ctx, qc: torch.Tensor, kc: torch.Tensor, vc: torch.Tensor, eps: float) -> torch.Tensor:
        b, nc, chunk, c = qc.shape
        m = vc.shape[-1]
        q3, k3, v3 = qc.reshape(-1, chunk, c), kc.reshape(-1, chunk, c), vc.reshape(-1, chunk, m)  # [b*k, chunk, .]
        scores = torch.bmm(q3, k3.transpose(1, 2)).tril_()  # [b*k, chunk, chunk], j <= i inside the chunk
        # Chunk states and their exclusive prefix: what chunk k inherits from chunks 0..k-1.
        s_prev = _exclusive_prefix(torch.bmm(k3.transpose(1, 2), v3).view(b, nc, c, m)).view(-1, c, m)
        z_prev = _exclusive_prefix(k3.sum(1).view(b, nc, c)).view(-1, c)  # [b*k, C]
        out = torch.bmm(scores, v3).baddbmm_(q3, s_prev)  # numerator [b*k, chunk, M]
        den = scores.sum(-1).add_(torch.bmm(q3, z_prev.unsqueeze(-1)).squeeze(-1)).add_(eps)  # [b*k, chunk]
        out.div_(den.unsqueeze(-1))
        ctx.save_for_backward(q3, k3, v3, scores, s_prev, z_prev, den, out)
        ctx.shape = (b, nc)
        return out.view(b, nc, chunk, m)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        q3, k3, v3, scores, s_prev, z_prev, den, out = ctx.saved_tensors
        b, nc = ctx.shape
        c, m = q3.shape[-1], v3.shape[-1]
        g = grad.reshape(out.shape) / den.unsqueeze(-1)  # gradient of the numerator, [b*k, chunk, M]
        dden = -(g * out).sum(-1)  # gradient of the normaliser, [b*k, chunk]
        # d(scores)_ij = g_i . v_j + dden_i (the normaliser is a value column of ones), for j <= i.
        dscores = torch.bmm(g, v3.transpose(1, 2)).add_(dden.unsqueeze(-1)).tril_()
        # Prefix part (paper's grad phi(Q)): g_i S_{<k}^T + dden_i z_{<k}.
        dq = torch.bmm(dscores, k3).baddbmm_(g, s_prev.transpose(1, 2))
        dq.addcmul_(dden.unsqueeze(-1), z_prev.unsqueeze(1))
        # Suffix part (paper's grad phi(K), grad V): sums of q^T g (and q dden) over later chunks.
        r_next = _exclusive_suffix(torch.bmm(q3.transpose(1, 2), g).view(b, nc, c, m)).view(-1, c, m)
        rz_next = _exclusive_suffix(torch.bmm(dden.unsqueeze(1), q3).view(b, nc, c)).view(-1, 1, c)
        dk = torch.bmm(dscores.transpose(1, 2), q3).baddbmm_(v3, r_next.transpose(1, 2)).add_(rz_next)
        dv = torch.bmm(scores.transpose(1, 2), g).baddbmm_(k3, r_next)
        shape = (b, nc, -1, c)
        return dq.view(shape), dk.view(shape), dv.view(b, nc, -1, m), None


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
    nc = -(-n // chunk_size)
    pad = nc * chunk_size - n

    def chunks(x: torch.Tensor) -> torch.Tensor:  # [..., N, f] -> [b, k, chunk, f]
        x = x.reshape(-1, n, x.shape[-1])
        if pad:
            x = F.pad(x, (0, 0, 0, pad))
        return x.reshape(x.shape[0], nc, chunk_size, x.shape[-1]).contiguous()

    out = _CausalLinearAttention.apply(chunks(phi_q), chunks(phi_k), chunks(v), float(eps))
    out = out.reshape(-1, nc * chunk_size, m)
    return (out[:, :n] if pad else out).reshape(*lead, n, m)


# --------------------------------------------------------------------------------------------------------------
# 3. Recurrent form
# --------------------------------------------------------------------------------------------------------------


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
    """The empty state (S_0 = 0, z_0 = 0) for :func:`linear_attention_step`; ``feature_dims`` is the map's C."""
    s = torch.zeros(batch, heads, feature_dims, value_dims, device=device, dtype=dtype)
    return LinearAttentionState(s, torch.zeros(batch, heads, feature_dims, device=device, dtype=dtype), 0)


def step_mapped(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, state: LinearAttentionState,
                eps: float = 1e-6) -> tuple[torch.Tensor, LinearAttentionState]:
    """One recurrent step on mapped inputs ``[B, H, C]``, ``[B, H, C]``, ``[B, H, M]``; out-of-place (autograd-safe)."""
    s = torch.addcmul(state.s, phi_k.unsqueeze(-1), v.unsqueeze(-2))  # S_i = S_{i-1} + phi_k v^T
    z = state.z + phi_k
    num = (phi_q.unsqueeze(-2) @ s).squeeze(-2)  # [B, H, M]
    den = torch.linalg.vecdot(phi_q, z).unsqueeze(-1)
    return num / (den + eps), LinearAttentionState(s, z, state.position + 1)


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
