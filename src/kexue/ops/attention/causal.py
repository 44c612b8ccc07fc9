"""Causal linear attention in three tied forms (dense masked reference, chunked parallel, recurrent step), with states.

Katharopoulos et al., "Transformers are RNNs" (arXiv 2006.16236, section 3.3 and Appendix A); Su,
kexue.fm/archives/7546. With feature-mapped queries and keys (phi_q, phi_k, size C) and values v (size M):

    o_i = phi_q_i^T S_i / (phi_q_i^T z_i + eps),  S_i = S_0 + sum_{j<=i} phi_k_j v_j^T,  z_i = z_0 + sum_{j<=i} phi_k_j

- :func:`causal_linear_attention_dense`: the masked N x N form, obviously correct, O(N^2) time and memory.
- :func:`causal_linear_attention_chunked`: the fast path, a custom ``autograd.Function``. Inside chunks of
  ``chunk_size`` tokens it is a masked chunk x chunk product; between chunks it carries the prefix sum of the chunk
  states ``phi_k^T v`` (and of the key sums, for the normaliser). Its backward is the paper's prefix/suffix trick
  (Appendix A) done chunk-wise: grad phi_q reads the forward prefix states, grad phi_k and grad v a suffix sum of
  ``phi_q^T G`` over later chunks. Nothing of size N x C x M is built: memory is linear in N.
- :func:`step_mapped`: the RNN form, one token at a time with an O(C M) state per head, for decoding;
  :func:`causal_linear_attention_recurrent` loops it over a sequence (the third twin, slow in Python).
- :func:`causal_dot_product` / :func:`causal_dot_product_dense`: the un-normalised numerator alone,
  V'_i = S_0^T phi_q_i + sum_{j<=i} (phi_q_i . phi_k_j) v_j (fast-transformers' ``causal_dot_product``,
  flash-linear-attention's ``chunk_linear_attn`` without normalisation), on the same chunked Function.

All forms take an initial state (S_0, z_0) and can return the final one (flash-linear-attention's
``initial_state`` / ``output_final_state``): prefilling N tokens in one call and then stepping equals N steps of the
recurrence, forward and backward. All take packed variable-length batches: ``cu_seqlens`` (cumulative lengths,
``[n_seq + 1]``) cuts a ``[1, H, T, .]`` input into sequences whose states start afresh (or from their own initial
state) at each boundary, equal to running each sequence alone.

Einsum letters: b batch*heads, n/i/j positions, c feature, m value feature, k chunk index.
States are accumulated in float32 (float64 stays float64); see :func:`kexue.ops.attention.linear_attention`.
"""

import itertools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from kexue.errors import KexueError
from kexue.ops.attention import _scan_kernel
from kexue.ops.attention._scratch import SCRATCH as _SCRATCH
from kexue.ops.attention.feature_maps import ONE

DEFAULT_CHUNK = 64  # tokens per chunk of the parallel form; see benchmarks/bench_attention.py


class AttentionInputError(KexueError, ValueError):
    """An attention op got an argument of the wrong shape, type or value; the message names it."""


# --------------------------------------------------------------------------------------------------------------
# 0. States and packed batches
# --------------------------------------------------------------------------------------------------------------


class LinearAttentionState(NamedTuple):
    """RNN state of causal linear attention, O(C M) per head whatever the position.

    Attributes:
        s: ``[B, H, C, M]`` sum of phi(k_j) v_j^T (float32 for low-precision inputs).
        z: ``[B, H, C]`` sum of phi(k_j).
        position: tokens consumed so far (left as given by packed calls, whose sequences differ in length).
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


def segment_lengths(cu_seqlens, total: int, batch: int) -> list[int]:
    """The sequence lengths of a packed batch from ``cu_seqlens`` (validated): ``[0, l_0, l_0 + l_1, ..., total]``."""
    if isinstance(cu_seqlens, torch.Tensor):
        if cu_seqlens.dim() != 1 or cu_seqlens.is_floating_point() or cu_seqlens.dtype == torch.bool:
            raise AttentionInputError(f"cu_seqlens must be a 1-D integer tensor, got {cu_seqlens.dtype} of shape "
                                      f"{tuple(cu_seqlens.shape)}")
        cu = cu_seqlens.tolist()
    else:
        cu = list(cu_seqlens)
    if (len(cu) < 2 or not all(isinstance(x, int) for x in cu) or cu[0] != 0 or cu[-1] != total
            or any(b < a for a, b in itertools.pairwise(cu))):
        shown = cu if len(cu) <= 8 else [*cu[:4], "...", *cu[-2:]]
        raise AttentionInputError(f"cu_seqlens must be non-decreasing integers from 0 to N = {total} (cumulative "
                                  f"sequence lengths), got {shown}")
    if batch != 1:
        raise AttentionInputError(f"with cu_seqlens the sequences are packed along N, so the batch size must be 1, "
                                  f"got {batch}")
    return [b - a for a, b in itertools.pairwise(cu)]


def _rows(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, cu_seqlens):
    """Checks ``[..., N, f]`` inputs; returns the row count (product of the leading dims), the sequence lengths and
    the leading shape of a state."""
    if phi_q.dim() < 2 or phi_k.shape != phi_q.shape or v.shape[:-1] != phi_q.shape[:-1]:
        raise AttentionInputError(f"expected phi_q, phi_k [..., N, C] of one shape and v [..., N, M] with their "
                                  f"leading dims, got {tuple(phi_q.shape)}, {tuple(phi_k.shape)}, {tuple(v.shape)}")
    lead, n = tuple(phi_q.shape[:-2]), phi_q.shape[-2]
    lens = [n] if cu_seqlens is None else segment_lengths(cu_seqlens, n, lead[0] if lead else 0)
    state_lead = lead if cu_seqlens is None else (len(lens), *lead[1:])
    return math.prod(lead), lens, state_lead


def _state_tensors(state, state_lead: tuple, c: int, m: int, with_z: bool):
    """``(S_0, z_0)`` of an initial state, checked against the expected ``[*state_lead, C, M]`` and ``[.., C]``."""
    if with_z:
        if not (isinstance(state, tuple) and len(state) in (2, 3)):
            raise AttentionInputError(f"initial_state must be a LinearAttentionState or a pair (s, z), got "
                                      f"{type(state).__name__}")
        s, z = state[0], state[1]
    else:
        s, z = state, None
    for name, t, shape in (("s", s, (*state_lead, c, m)), ("z", z, (*state_lead, c))):
        if name == "z" and not with_z:
            continue
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            what = "initial_state" if not with_z else f"initial_state.{name}"
            raise AttentionInputError(f"{what} must have shape {list(shape)} (batch or sequences, heads, features"
                                      f"{', values' if name == 's' else ''}), got {got}")
    return s, z


def _causal(form, phi_q, phi_k, v, *, eps, initial_state, return_state, cu_seqlens, normalize, **kw):
    """Shared front and back of the dense and chunked forms: rows, segments and states in and out."""
    rows, lens, state_lead = _rows(phi_q, phi_k, v, cu_seqlens)
    c, m = phi_q.shape[-1], v.shape[-1]
    s0 = z0 = None
    if initial_state is not None:
        s, z = _state_tensors(initial_state, state_lead, c, m, normalize)
        # [n_seg, rows, ...] -> [rows, n_seg, ...]: the Function's layout (for unpacked input n_seg = 1)
        s0 = s.to(v.dtype).reshape(len(lens), rows, c, m).transpose(0, 1)
        z0 = z.to(v.dtype).reshape(len(lens), rows, 1, c).transpose(0, 1) if normalize else None
    out, s_fin, z_fin = form(phi_q, phi_k, v, rows, lens, s0, z0, eps, normalize, return_state, **kw)
    out = out.reshape(*phi_q.shape[:-1], m)
    if not return_state:
        return out
    s = s_fin.transpose(0, 1).reshape(*state_lead, c, m)
    if not normalize:
        return out, s
    position = initial_state.position if isinstance(initial_state, LinearAttentionState) else 0
    if cu_seqlens is None:
        position += phi_q.shape[-2]
    return out, LinearAttentionState(s, z_fin.transpose(0, 1).reshape(*state_lead, c), position)

# --------------------------------------------------------------------------------------------------------------
# 1. Dense masked references
# --------------------------------------------------------------------------------------------------------------


def _dense(q, k, v, rows, lens, s0, z0, eps, normalize, need_state):
    """The N x N scores masked to j <= i within i's sequence, on ``[rows, N, .]``. States as in the Function."""
    q, k, v = (x.reshape(rows, x.shape[-2], x.shape[-1]) for x in (q, k, v))
    nseg = len(lens)
    seg = torch.repeat_interleave(torch.arange(nseg, device=q.device), torch.tensor(lens, device=q.device))  # [N]
    scores = (q @ k.transpose(1, 2)).tril().masked_fill(seg[:, None] != seg[None, :], 0.0)  # [rows, N, N]
    num = scores @ v
    onehot = (seg[:, None] == torch.arange(nseg, device=q.device)).to(q.dtype)  # [N, n_seg]
    s_fin = torch.einsum("rnc,rnm,ns->rscm", k, v, onehot)
    if s0 is not None:
        num = num + (q.unsqueeze(-2) @ s0[:, seg]).squeeze(-2)  # S_0 of each token's sequence
        s_fin = s_fin + s0
    if not normalize:
        return num, s_fin, None
    den = scores.sum(-1)
    z_fin = torch.einsum("rnc,ns->rsc", k, onehot).unsqueeze(-2)
    if z0 is not None:
        den = den + (q * z0[:, seg, 0]).sum(-1)
        z_fin = z_fin + z0
    return num / (den + eps).unsqueeze(-1), s_fin, z_fin


def causal_linear_attention_dense(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6, *,
                                  initial_state: LinearAttentionState | tuple | None = None,
                                  return_state: bool = False, cu_seqlens: torch.Tensor | None = None):
    """Causal linear attention by the explicit masked N x N matrix (the reference).

    Args:
        phi_q: mapped queries ``[..., N, C]``.
        phi_k: mapped keys ``[..., N, C]`` (padded keys already zeroed).
        v: values ``[..., N, M]``.
        eps: added to the normaliser.
        initial_state: (S_0 ``[..., C, M]``, z_0 ``[..., C]``) to start from, e.g. a :class:`LinearAttentionState`
            returned by an earlier call or by :func:`step_mapped`; None starts from zero. With ``cu_seqlens``, one
            per sequence: ``[n_seq, H, C, M]`` and ``[n_seq, H, C]``.
        return_state: also return the final state.
        cu_seqlens: int ``[n_seq + 1]``, cumulative lengths of the sequences packed along N (inputs ``[1, H, T, .]``).

    Returns:
        ``[..., N, M]``, and the final :class:`LinearAttentionState` if ``return_state``.
    """
    return _causal(_dense, phi_q, phi_k, v, eps=eps, initial_state=initial_state, return_state=return_state,
                   cu_seqlens=cu_seqlens, normalize=True)


def causal_dot_product_dense(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *,
                             initial_state: torch.Tensor | None = None, return_state: bool = False,
                             cu_seqlens: torch.Tensor | None = None):
    """The un-normalised causal product by the explicit masked N x N matrix, tril(Q K^T) V (+ Q S_0): the reference
    of :func:`causal_dot_product`, same arguments."""
    return _causal(_dense, q, k, v, eps=0.0, initial_state=initial_state, return_state=return_state,
                   cu_seqlens=cu_seqlens, normalize=False)


def causal_linear_weights(phi_q: torch.Tensor, phi_k: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """The attention matrix that causal linear attention applies implicitly: ``[..., N, N]``, rows sum to ~1.

    For figures (attention maps); O(N^2) like the reference.
    """
    scores = (phi_q @ phi_k.transpose(-1, -2)).tril()
    return scores / (scores.sum(-1, keepdim=True) + eps)

# --------------------------------------------------------------------------------------------------------------
# 2. Chunked parallel form with a custom backward
# --------------------------------------------------------------------------------------------------------------
# Every sequence row r (of R = batch * heads) is cut into K chunks of `chunk` tokens, and all R * K chunks live in one
# flat batch, row-major, so that every product is a single bmm over all chunks. A row holds one segment (a sequence)
# or, for packed batches, several, each a run of whole chunks; `segments` lists them as (first chunk, chunk count),
# the same for every row. The per-chunk state terms (phi_k^T v, key sums) sit in a buffer with one spare slot, so that
# after an in-place scan chunk i reads its prefix at buffer slot i (the inclusive sum of chunk i - 1) and, in
# backward, its suffix at slot i + 1: a shift by one instead of a copy. The slot a segment's first chunk reads (the
# previous segment's last sum) is overwritten with that segment's initial state once the final states are taken.


def _scan_prefix_(buf: torch.Tensor, rows: int, segments, init: torch.Tensor | None) -> torch.Tensor:
    """In place on ``buf [rows * K + 1, ...]`` whose slots 1.. hold the per-chunk terms x_i.

    Afterwards slot i holds init + sum of x over the earlier chunks of chunk i's segment (what chunk i reads).
    Returns the final states ``[rows, n_segments, ...]``: init + the sum over the whole segment. ``init`` is
    ``[rows, n_segments, ...]`` or None (zero). A loop of K small in-place adds: ``torch.cumsum`` over a middle
    dimension is ~20x slower on CPU, and a triangular matmul costs O(K^2). The slow twin of the compiled loop of
    :mod:`._scan_kernel`; :func:`_scan_` picks one.
    """
    x = buf[1:].view(rows, -1, *buf.shape[1:])
    finals = []
    for j, (off, n) in enumerate(segments):
        if n == 0:
            finals.append(init[:, j].clone() if init is not None else x.new_zeros(rows, *x.shape[2:]))
            continue
        if init is not None:
            x[:, off].add_(init[:, j])
        for p in range(off + 1, off + n):
            x[:, p].add_(x[:, p - 1])
        finals.append(x[:, off + n - 1].clone())
    reads = buf[:-1].view_as(x)
    for j, (off, n) in enumerate(segments):
        if n:
            reads[:, off].copy_(init[:, j]) if init is not None else reads[:, off].zero_()
    return torch.stack(finals, 1)


def _scan_suffix_(buf: torch.Tensor, rows: int, segments, init: torch.Tensor | None) -> torch.Tensor:
    """Mirror of :func:`_scan_prefix_`: slots ..K-1 hold x_i; afterwards slot i + 1 holds init + the sum of x over
    the later chunks of chunk i's segment. Returns init + the segment totals, ``[rows, n_segments, ...]``.

    A reversed running sum, not "total minus prefix": a query that sees no key has a normaliser of eps, so its
    gradient is ~1/eps, and the subtraction would smear that magnitude's rounding error over every other chunk.
    """
    x = buf[:-1].view(rows, -1, *buf.shape[1:])
    totals = []
    for j, (off, n) in enumerate(segments):
        if n == 0:
            totals.append(init[:, j].clone() if init is not None else x.new_zeros(rows, *x.shape[2:]))
            continue
        if init is not None:
            x[:, off + n - 1].add_(init[:, j])
        for p in range(off + n - 2, off - 1, -1):
            x[:, p].add_(x[:, p + 1])
        totals.append(x[:, off].clone())
    reads = buf[1:].view_as(x)
    for j, (off, n) in enumerate(segments):
        if n:
            reads[:, off + n - 1].copy_(init[:, j]) if init is not None else reads[:, off + n - 1].zero_()
    return torch.stack(totals, 1)


def _scan_(buf: torch.Tensor, rows: int, segments, init: torch.Tensor | None, reverse: bool) -> torch.Tensor:
    """:func:`_scan_suffix_` if ``reverse`` else :func:`_scan_prefix_`, as one compiled loop where it can run (CPU
    float32/float64 with numba installed: one call instead of one ``add_`` per chunk, ~2.5x faster at N = 8192)."""
    if _scan_kernel.usable(buf):
        return _scan_kernel.scan_(buf, rows, segments, init, reverse)
    return (_scan_suffix_ if reverse else _scan_prefix_)(buf, rows, segments, init)


class _Cfg(NamedTuple):
    rows: int  # sequence rows R (batch * heads)
    segments: tuple  # (first chunk, chunk count) per segment, the same in every row
    eps: float
    chunk: int
    normalize: bool  # divide by the normaliser (False: the plain causal product)
    carry: bool  # carry states between chunks (several chunks, an initial state, or a final state wanted)
    elu: bool  # q and k are raw: the op applies elu(x) + 1 itself (and its derivative in backward)
    grad: bool  # a backward will follow (grad mode on, some input requires grad): keep the scratch until then


def _forward_blocks(q3, k3, v3, s0, z0, cfg: _Cfg):
    """The forward block products on ``[R * K, chunk, .]`` blocks; temporaries from the scratch pool, out fresh."""
    nb, chunk, c = q3.shape
    m = v3.shape[-1]
    take = _SCRATCH.take
    scores = torch.bmm(q3, k3.transpose(1, 2), out=take((nb, chunk, chunk), q3)).tril_()  # j <= i inside the chunk
    out = torch.bmm(scores, v3)  # intra-chunk numerator [R*K, chunk, M]
    den = torch.sum(scores, -1, out=take((nb, chunk), q3)) if cfg.normalize else None  # intra-chunk normaliser
    s = z = s_fin = z_fin = None
    if cfg.carry:
        # Chunk states phi_k^T v (and key sums), prefix-summed over the earlier chunks of each segment.
        s = take((nb + 1, c, m), q3)
        torch.bmm(k3.transpose(1, 2), v3, out=s[1:])
        s_fin = _scan_(s, cfg.rows, cfg.segments, s0, reverse=False)
        out.baddbmm_(q3, s[:-1])
        if cfg.normalize:
            z = take((nb + 1, 1, c), q3)
            torch.sum(k3, 1, keepdim=True, out=z[1:])
            z_fin = _scan_(z, cfg.rows, cfg.segments, z0, reverse=False)
            den.unsqueeze(-1).baddbmm_(q3, z[:-1].transpose(1, 2))  # vecdot would page-fault an N x C product
    if cfg.normalize:
        den.add_(cfg.eps)
        out.div_(den.unsqueeze(-1))
    return out, (scores, s, z, den), s_fin, z_fin


class _CausalProduct(torch.autograd.Function):
    """num_i = S0 q_i + sum_{j<=i} (q_i . k_j) v_j, and, when normalising, o_i = num_i / den_i with
    den_i = q_i . z0 + sum_{j<=i} q_i . k_j + eps; also the final states S0 + sum_j k_j v_j^T and z0 + sum_j k_j.

    ``prep()`` lays the inputs out as contiguous ``[R * K, chunk, .]`` blocks (padded, mapped by elu + 1 when
    ``cfg.elu``), ``unpad`` maps a ``[R, K * chunk, .]`` result back to the inputs' positions; initial states are
    ``[R, n_seg, C, M]`` and ``[R, n_seg, 1, C]`` (or None). The Function owns the normaliser too: its intra-chunk
    part is the row sum of the score block already computed, its inter-chunk part a dot product with the prefix key
    sum, and in backward it acts as one more value column (of ones) whose incoming gradient is ``-w``,
    w_i = g_i . o_i. Twelve batched block products in all (4 forward, 8 backward; blocks of chunk x C, chunk x M,
    chunk x chunk and C x M), no autograd graph inside, and every temporary is one of those blocks for every chunk,
    or a per-token scalar. The gradient of a final state enters the suffix scans as their initial value (a query
    after the last token that sees every key), and the gradient of an initial state is the scans' total.
    """

    @staticmethod
    def forward(ctx, q_in, k_in, v_in, s0, z0, prep, unpad, cfg: _Cfg):
        q3, k3, v3, owned = prep()
        out, blocks, s_fin, z_fin = _forward_blocks(q3, k3, v3, s0, z0, cfg)
        ctx.save_for_backward(q_in, k_in, v_in, s0, z0, out if cfg.normalize else None)
        ctx.prep, ctx.unpad, ctx.cfg = prep, unpad, cfg
        ctx.blocks = (q3, k3, v3, owned, *blocks)
        if not cfg.grad:
            _release(ctx)
        return out.view(cfg.rows, -1, v3.shape[-1]), s_fin, z_fin

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, grad_s, grad_z):
        q_in, k_in, v_in, s0, z0, out = ctx.saved_tensors
        cfg = ctx.cfg
        if ctx.blocks is None:  # a second backward through a retained graph: the scratch went back, recompute it
            q3, k3, v3, owned = ctx.prep()
            ctx.blocks = (q3, k3, v3, owned, *_forward_blocks(q3, k3, v3, s0, z0, cfg)[1])
        q3, k3, v3, _, scores, s, z, den = ctx.blocks
        nb, chunk, _ = q3.shape
        m = v3.shape[-1]
        take, give = _SCRATCH.take, _SCRATCH.give
        g = grad.reshape(nb, chunk, m)
        w = None
        if cfg.normalize:
            g = torch.div(g, den.unsqueeze(-1), out=take(g.shape, q3))  # d loss / d numerator
            # -(d loss / d normaliser) w_i = g_i . o_i, [R*K, chunk]: one bmm of 1 x M by M x 1 rows, half the time
            # of a product then a sum (vecdot would also page-fault an N x M product afresh)
            w = take(g.shape[:-1], q3)
            torch.bmm(g.view(-1, 1, m), out.view(-1, m, 1), out=w.view(-1, 1, 1))
        # d(scores)_ij = g_i . v_j - w_i for j <= i (the normaliser is a value column of ones).
        dscores = torch.bmm(g, v3.transpose(1, 2), out=take(scores.shape, q3))
        if cfg.normalize:
            dscores.sub_(w.unsqueeze(-1))
        dscores.tril_()
        dq = torch.bmm(dscores, k3)
        dk = torch.bmm(dscores.transpose(1, 2), q3)
        give(dscores)
        ds0 = dz0 = None
        if s is not None:
            # Prefix part (paper's grad phi(Q)): g_i S_{<i}^T - w_i z_{<i}.
            dq.baddbmm_(g, s[:-1].transpose(1, 2))
            if cfg.normalize:
                dq.addcmul_(w.unsqueeze(-1), z[:-1], value=-1)
        dv = torch.bmm(scores.transpose(1, 2), g)
        if s is not None:
            # Suffix part (paper's grad phi(K), grad V): sums of q^T g and of w q over later chunks.
            r = take(s.shape, q3)
            torch.bmm(q3.transpose(1, 2), g, out=r[:-1])
            ds0 = _scan_(r, cfg.rows, cfg.segments, grad_s, reverse=True)
            rz = None
            if cfg.normalize:
                rz = take(z.shape, q3)
                torch.bmm(w.unsqueeze(1), q3, out=rz[:-1])
                dz0 = _scan_(rz, cfg.rows, cfg.segments, None if grad_z is None else -grad_z, reverse=True).neg_()
            dk.baddbmm_(v3, r[1:].transpose(1, 2))
            if cfg.normalize:
                dk.sub_(rz[1:])
            dv.baddbmm_(k3, r[1:])
            give(r, rz)
        if cfg.normalize:
            give(g, w)
        if cfg.elu:
            # d(elu(x) + 1)/dx = 1 for x > 0 and exp(x) = elu(x) + 1 <= 1 otherwise: min(phi, 1), in the phi blocks.
            dq.mul_(q3.clamp_(max=1))
            dk.mul_(k3.clamp_(max=1))
        _release(ctx)
        if s0 is None:
            ds0 = dz0 = None
        rows, unpad = cfg.rows, ctx.unpad
        grads = (unpad(x.view(rows, -1, x.shape[-1])).reshape(t.shape) for x, t in ((dq, q_in), (dk, k_in),
                                                                                    (dv, v_in)))
        return *grads, ds0, dz0, None, None, None


def _release(ctx) -> None:
    """Gives the scratch blocks of one call back to the pool (those of ``prep`` only when they are not the inputs)."""
    q3, k3, v3, owned, *blocks = ctx.blocks
    _SCRATCH.give(*(b for b, own in zip((q3, k3, v3), owned, strict=True) if own), *blocks)
    ctx.blocks = None


def _chunked(q, k, v, rows, lens, s0, z0, eps, normalize, need_state, chunk_size, elu=False):
    """Lays every sequence out in whole chunks (padding with zeros: a zero key adds nothing) and runs the Function."""
    n = q.shape[-2]
    chunk = max(1, min(chunk_size, max(lens)))  # a short sequence is one chunk, not one padded chunk
    counts = [-(-length // chunk) for length in lens]
    offsets = [sum(counts[:j]) for j in range(len(counts))]
    total = sum(counts) * chunk
    if len(lens) == 1:

        def put(x: torch.Tensor, map_elu: bool) -> tuple[torch.Tensor, bool]:  # -> [R, total, f], owned
            if not map_elu and total == n and x.is_contiguous():
                return x.view(rows, n, x.shape[-1]), False
            block = _SCRATCH.take((rows, total, x.shape[-1]), x)
            dst = block.view(*x.shape[:-2], total, x.shape[-1])[..., :n, :]
            if map_elu:
                torch.ops.aten.elu.out(x, 1.0, 1.0, 1.0, out=dst).add_(ONE)  # one pass, strided input welcome
            else:
                dst.copy_(x)
            block[:, n:].zero_()
            return block, True

        def unpad(o: torch.Tensor) -> torch.Tensor:
            return o[:, :n] if total > n else o
    else:
        # token t of sequence j goes to padded position (first chunk of j) * chunk + t
        dst_index = torch.cat([torch.arange(length, device=q.device) + off * chunk
                               for length, off in zip(lens, offsets, strict=True)])

        def put(x: torch.Tensor, map_elu: bool) -> tuple[torch.Tensor, bool]:
            x = x.reshape(rows, n, x.shape[-1])
            block = _SCRATCH.take((rows, total, x.shape[-1]), x).zero_()  # padding stays zero, after the map too
            return block.index_copy_(1, dst_index, F.elu(x).add_(ONE) if map_elu else x), True

        def unpad(o: torch.Tensor) -> torch.Tensor:
            return o.index_select(1, dst_index)

    def prep():
        with torch.no_grad():
            (q3, own_q), (k3, own_k), (v3, own_v) = put(q, elu), put(k, elu), put(v, False)
        return (q3.view(-1, chunk, q.shape[-1]), k3.view(-1, chunk, k.shape[-1]), v3.view(-1, chunk, v.shape[-1]),
                (own_q, own_k, own_v))

    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (q, k, v, s0, z0))
    cfg = _Cfg(rows, tuple(zip(offsets, counts, strict=True)), float(eps), chunk, normalize,
               need_state or s0 is not None or sum(counts) > 1, elu, grad)
    out, s_fin, z_fin = _CausalProduct.apply(q, k, v, s0, z0, prep, unpad, cfg)
    return unpad(out), s_fin, z_fin


def causal_linear_attention_chunked(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6,
                                    chunk_size: int = DEFAULT_CHUNK, *,
                                    initial_state: LinearAttentionState | tuple | None = None,
                                    return_state: bool = False, cu_seqlens: torch.Tensor | None = None,
                                    map_elu: bool = False):
    """Causal linear attention, chunked parallel form with a custom backward (the fast path).

    Same arguments and result as :func:`causal_linear_attention_dense`; any N (the tail chunk is zero-padded, and a
    zero key adds nothing). Time O(N (chunk (C + M) + C M)); memory O(N (chunk + C + M) + (N / chunk) C M): no
    per-position C x M state is stored. Gradients reach the initial state too. With ``map_elu``, ``phi_q`` and
    ``phi_k`` are the raw q and k and the op applies elu(x) + 1 itself (into reused blocks, the derivative in its
    backward), so no mapped copy is allocated or kept by autograd: the default path of
    :func:`kexue.ops.attention.linear_attention`.
    """
    return _causal(_chunked, phi_q, phi_k, v, eps=eps, initial_state=initial_state, return_state=return_state,
                   cu_seqlens=cu_seqlens, normalize=True, chunk_size=chunk_size, elu=map_elu)


def causal_dot_product(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, chunk_size: int = DEFAULT_CHUNK,
                       initial_state: torch.Tensor | None = None, return_state: bool = False,
                       cu_seqlens: torch.Tensor | None = None):
    """The un-normalised causal product V'_i = sum_{j<=i} (q_i . k_j) v_j (+ S_0^T q_i), chunked, custom backward.

    fast-transformers' ``causal_dot_product(Q, K, V)`` (same ``[N, H, L, D]`` layout, feature map already applied),
    and flash-linear-attention's ``chunk_linear_attn`` with ``normalize=False`` (its ``scale`` is a multiplication of
    ``q`` by the caller; its layout is ``[B, T, H, D]``: transpose dims 1 and 2).

    Args:
        q, k: ``[..., N, C]`` (already feature-mapped).
        v: ``[..., N, M]``.
        chunk_size: tokens per chunk.
        initial_state: S_0 ``[..., C, M]`` (with ``cu_seqlens``: ``[n_seq, H, C, M]``), or None for zero.
        return_state: also return the final S = S_0 + sum_j k_j v_j^T.
        cu_seqlens: int ``[n_seq + 1]`` for packed sequences (inputs ``[1, H, T, .]``), state reset per sequence.

    Returns:
        ``[..., N, M]``, and the final S if ``return_state``.

    Example:
        >>> q, k, v = torch.rand(1, 2, 10, 4), torch.rand(1, 2, 10, 4), torch.randn(1, 2, 10, 3)
        >>> torch.allclose(causal_dot_product(q, k, v), (q @ k.transpose(-1, -2)).tril() @ v, atol=1e-5)
        True
    """
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise AttentionInputError(f"chunk_size must be a positive int, got {chunk_size!r}")
    return _causal(_chunked, q, k, v, eps=0.0, initial_state=initial_state, return_state=return_state,
                   cu_seqlens=cu_seqlens, normalize=False, chunk_size=chunk_size)


# --------------------------------------------------------------------------------------------------------------
# 3. Recurrent form
# --------------------------------------------------------------------------------------------------------------


_SMALL_STATE = 1 << 18  # states up to this many elements are read out by multiply-and-reduce, larger ones by bmm


def step_mapped(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, state: LinearAttentionState,
                eps: float = 1e-6) -> tuple[torch.Tensor, LinearAttentionState]:
    """One recurrent step on mapped inputs ``[B, H, C]``, ``[B, H, C]``, ``[B, H, M]``; out-of-place (autograd-safe).

    Decoding is dispatch-bound (the arithmetic is 4 C M flops per head), so this is the fewest tensor ops that do it:
    a rank-1 update of S, an add for z, a mat-vec for the numerator, a dot product (plus eps) for the normaliser and
    the division, done in place on the fresh numerator.
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
    den = torch.linalg.vecdot(phi_q, z).add_(ONE, alpha=eps)  # one op instead of a multiply and a sum
    return num.div_(den.unsqueeze(-1)), LinearAttentionState(s, z, state.position + 1)


def causal_linear_attention_recurrent(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor, eps: float = 1e-6, *,
                                      initial_state: LinearAttentionState | tuple | None = None,
                                      return_state: bool = False, cu_seqlens: torch.Tensor | None = None):
    """Causal linear attention as an RNN loop over positions (the slow twin of the recurrent form).

    Args:
        phi_q, phi_k: ``[B, H, N, C]``; v: ``[B, H, N, M]``.
        eps, initial_state, return_state, cu_seqlens: as in :func:`causal_linear_attention_dense`.

    Returns:
        ``[B, H, N, M]``, and the final :class:`LinearAttentionState` if ``return_state``.
    """
    if phi_q.dim() != 4:
        raise AttentionInputError(f"the recurrent form takes [B, H, N, C] inputs, got {tuple(phi_q.shape)}")
    lens, state_lead = _rows(phi_q, phi_k, v, cu_seqlens)[1:]
    b, h, n, c = phi_q.shape
    m = v.shape[-1]
    s0 = z0 = None
    if initial_state is not None:
        s0, z0 = (t.to(v.dtype) for t in _state_tensors(initial_state, state_lead, c, m, True))
    outs, finals, start = [], [], 0
    for j, length in enumerate(lens):
        rows = slice(j, j + 1) if cu_seqlens is not None else slice(None)  # sequence j's own state when packed
        if s0 is None:
            state = linear_attention_state(1 if cu_seqlens is not None else b, h, c, m, device=v.device,
                                           dtype=v.dtype)
        else:
            state = LinearAttentionState(s0[rows], z0[rows], 0)
        for i in range(start, start + length):
            out, state = step_mapped(phi_q[:, :, i], phi_k[:, :, i], v[:, :, i], state, eps)
            outs.append(out)
        finals.append(state)
        start += length
    out = torch.stack(outs, dim=2) if outs else v.new_zeros(b, h, 0, m)
    if not return_state:
        return out
    position = initial_state.position if isinstance(initial_state, LinearAttentionState) else 0
    if cu_seqlens is None:
        position += n
    return out, LinearAttentionState(torch.cat([f.s for f in finals]), torch.cat([f.z for f in finals]), position)
