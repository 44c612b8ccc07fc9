"""Efficient Attention (Shen et al., arXiv 1812.01243), with the exact causal prefix normaliser (post 7546, spec).

    Att(Q, K, V) = softmax_2(Q) softmax_1(K)^T V

softmax_2 normalises each query over its d features, softmax_1 each key feature over the N positions. Every row of
softmax_2(Q) softmax_1(K)^T sums to 1 (sum_j sum_c a_ic b_jc = sum_c a_ic = 1), so no normaliser is needed.

softmax_1 over the whole sequence looks at future keys. The causal variant normalises over the prefix instead:

    o_i = sum_c a_ic sum_{j<=i} exp(k_jc - L_ic) v_j,   L_ic = log sum_{j<=i} exp(k_jc)   (a running logsumexp).

Every exponent k_jc - L_ic is <= 0, so nothing overflows whatever the scale of k. Forms (tied by tests):

- :func:`efficient_attention_dense`: builds the [N, N, d] weights explicitly (reference).
- :func:`efficient_attention`: the linear-memory form. Causal: inside chunks a masked [chunk, chunk, d] product;
  between chunks the per-feature running weighted mean R, carried chunk to chunk (stable, since its weights
  exp(L_prev - L_i) are <= 1). Plain autograd; not tuned for speed.
- :func:`efficient_attention_step`: the RNN form (state R [d, M] and L [d] per head).

Padded keys (key_padding_mask True) take no part; a query that sees no key outputs 0.
"""

from typing import NamedTuple

import torch


def _masked_keys(k: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    if key_padding_mask is None:
        return k
    return k.masked_fill(key_padding_mask[:, None, :, None], float("-inf"))


def _finite(x: torch.Tensor) -> torch.Tensor:
    """-inf (no key seen yet) -> 0, so that exp(-inf - 0) = 0 instead of exp(-inf + inf) = nan."""
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def efficient_attention_weights(q: torch.Tensor, k: torch.Tensor, *, causal: bool = False,
                                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The explicit attention matrix of Efficient Attention, ``[B, H, N, N]`` (rows sum to 1; reference, O(N^2 d))."""
    a = torch.softmax(q, dim=-1)  # [B, H, N, d]
    logits = _masked_keys(k, key_padding_mask).unsqueeze(2).expand(*k.shape[:2], q.shape[2], *k.shape[2:])
    if causal:
        n = k.shape[2]
        future = torch.ones(n, n, dtype=torch.bool, device=k.device).triu(1)  # [i, j]: j > i
        logits = logits.masked_fill(future[:, :, None], float("-inf"))
    w = torch.softmax(logits, dim=3)  # [B, H, i, j, d], softmax over the keys j per feature
    w = torch.nan_to_num(w, nan=0.0)  # rows with no visible key
    return torch.einsum("bhic,bhijc->bhij", a, w)


def efficient_attention_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                              key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: ``efficient_attention_weights(q, k) @ v``. q, k: ``[B, H, N, d]``; v: ``[B, H, N, M]``."""
    return efficient_attention_weights(q, k, causal=causal, key_padding_mask=key_padding_mask) @ v


def efficient_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                        key_padding_mask: torch.Tensor | None = None, chunk_size: int = 32) -> torch.Tensor:
    """Efficient Attention in linear memory.

    Args:
        q, k: ``[B, H, N, d]`` (raw, before any softmax).
        v: ``[B, H, N, M]``.
        causal: use the prefix normaliser (position i sees keys j <= i only).
        key_padding_mask: bool ``[B, N]``, True marks padding.
        chunk_size: tokens per chunk of the causal form (its memory is N * chunk * d per head).

    Returns:
        ``[B, H, N, M]``.
    """
    a = torch.softmax(q, dim=-1)
    kk = _masked_keys(k, key_padding_mask)
    if not causal:
        kn = torch.nan_to_num(torch.softmax(kk, dim=-2), nan=0.0)  # over positions; all-padded -> 0
        return a @ (kn.transpose(-1, -2) @ v)  # [B,H,N,d] @ [B,H,d,M]
    b, h, n, d = k.shape
    m = v.shape[-1]
    nc = -(-n // chunk_size)
    pad = nc * chunk_size - n
    big_l = torch.logcumsumexp(kk, dim=2)  # [B, H, N, d], running logsumexp L_i
    if pad:
        # Padded tail: keys -inf (no weight), L repeats its last value, queries and values 0.
        kk = torch.cat([kk, kk.new_full((b, h, pad, d), float("-inf"))], 2)
        big_l = torch.cat([big_l, big_l[:, :, -1:].expand(b, h, pad, d)], 2)
        a = torch.cat([a, a.new_zeros(b, h, pad, d)], 2)
        v = torch.cat([v, v.new_zeros(b, h, pad, m)], 2)
    shape = (b, h, nc, chunk_size)
    kc, lc, ac, vc = kk.reshape(*shape, d), big_l.reshape(*shape, d), a.reshape(*shape, d), v.reshape(*shape, m)
    lc_safe = _finite(lc)
    # Intra-chunk: W_ij = sum_c a_ic exp(k_jc - L_ic) for j <= i (exponents <= 0).
    expo = kc.unsqueeze(-3) - lc_safe.unsqueeze(-2)  # [b, h, k, i, j, d]
    mask = torch.ones(chunk_size, chunk_size, dtype=torch.bool, device=k.device).tril()
    expo = expo.masked_fill(~mask[:, :, None], float("-inf"))
    w = torch.einsum("bhkic,bhkijc->bhkij", ac, torch.exp(expo))
    out = w @ vc  # [b, h, k, chunk, M]
    if nc > 1:
        # Chunk summaries T_p = sum_{j in chunk p} exp(k_j - L_end(p)) v_j, stable since L_end(p) >= k_j.
        l_end = lc[:, :, :, -1]  # [b, h, k, d]
        l_end_safe = _finite(l_end)
        t = torch.einsum("bhkjc,bhkjm->bhkcm", torch.exp(kc - l_end_safe.unsqueeze(-2)), vc)
        # R_p = running weighted mean at the end of chunk p, carried chunk to chunk (an RNN over chunks, so memory
        # stays linear in N): R_p = exp(L_end(p-1) - L_end(p)) R_{p-1} + T_p, every weight <= 1.
        decay = torch.exp(l_end[:, :, :-1] - l_end_safe[:, :, 1:]).unsqueeze(-1)  # [b, h, k-1, d, 1]
        r = [t[:, :, 0]]
        for p in range(1, nc - 1):
            r.append(decay[:, :, p - 1] * r[-1] + t[:, :, p])
        r_prev = torch.stack(r, 2)  # [b, h, k-1, d, M]: R_{p-1} for chunks p = 1..k-1
        # Query i of chunk p reads R_{p-1} with weight a_ic exp(L_end(p-1) - L_ic).
        scale = torch.exp(l_end[:, :, :-1].unsqueeze(-2) - lc_safe[:, :, 1:])  # [b, h, k-1, chunk, d]
        out = torch.cat([out[:, :, :1], out[:, :, 1:] + (ac[:, :, 1:] * scale) @ r_prev], 2)
    return out.reshape(b, h, nc * chunk_size, m)[:, :, :n]


class EfficientAttentionState(NamedTuple):
    """RNN state of causal Efficient Attention: running weighted means ``r`` ``[B, H, d, M]`` and running
    logsumexps ``l`` ``[B, H, d]`` of the keys (``-inf`` before the first key)."""

    r: torch.Tensor
    l: torch.Tensor
    position: int = 0


def efficient_attention_state(batch: int, heads: int, dims: int, value_dims: int, *,
                              device: torch.device | str | None = None,
                              dtype: torch.dtype = torch.float32) -> EfficientAttentionState:
    """The empty state for :func:`efficient_attention_step`."""
    r = torch.zeros(batch, heads, dims, value_dims, device=device, dtype=dtype)
    return EfficientAttentionState(r, torch.full((batch, heads, dims), float("-inf"), device=device, dtype=dtype), 0)


def efficient_attention_step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             state: EfficientAttentionState) -> tuple[torch.Tensor, EfficientAttentionState]:
    """One causal step: q, k ``[B, H, d]``, v ``[B, H, M]`` -> output ``[B, H, M]`` and the new state."""
    l_new = torch.logaddexp(state.l, k)
    l_safe = _finite(l_new)
    r = torch.exp(state.l - l_safe).unsqueeze(-1) * state.r + torch.exp(k - l_safe).unsqueeze(-1) * v.unsqueeze(-2)
    out = (torch.softmax(q, dim=-1).unsqueeze(-2) @ r).squeeze(-2)
    return out, EfficientAttentionState(r, l_new, state.position + 1)
