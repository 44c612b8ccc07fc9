"""Linear attention: softmax-free attention as a normalised weighted average with a factorised similarity.

Su, "Exploring linear attention: must attention have a softmax?" (kexue.fm/archives/7546); Katharopoulos et al.,
"Transformers are RNNs" (arXiv 2006.16236). With sim(q, k) = phi(q)^T varphi(k) >= 0,

    o_i = sum_j sim(q_i, k_j) v_j / (sum_j sim(q_i, k_j) + eps) = phi(q_i)^T (Phi_K^T V) / (phi(q_i)^T Phi_K^T 1 + eps),

and associativity turns O(N^2) into O(N C M). Conventions (fast-transformers', spec section 4): no 1/sqrt(d) scaling
(the map sees q and k as given), eps = 1e-6 added to the normaliser, padded keys multiplied out of Phi_K.

- :func:`linear_attention`: the public entry; validates, maps, masks, and dispatches to a form.
- Non-causal: :func:`noncausal_linear_attention` (factorised, the fast path) and
  :func:`noncausal_linear_attention_dense` (the explicit N x N normalised matrix, its slow twin).
- Causal: :mod:`kexue.ops.attention.causal` (dense / chunked / recurrent). Efficient Attention:
  :mod:`kexue.ops.attention.efficient`.

Low precision: float16 / bfloat16 inputs are mapped and accumulated in float32 (state sums over thousands of tokens
overflow or lose all precision in fp16; fast-transformers issue 32) and the output is cast back to the input dtype.
The cast back cannot overflow: with non-negative weights each output is a convex combination of value rows (times
a normaliser ratio <= 1 because of eps), so it is bounded by max |v|. Gradients flow back through the casts.
"""

import torch

from kexue.ops.attention import _decode_kernel
from kexue.ops.attention.causal import (
    DEFAULT_CHUNK,
    AttentionInputError,
    LinearAttentionState,
    causal_linear_attention_chunked,
    causal_linear_attention_dense,
    causal_linear_attention_recurrent,
    causal_linear_weights,
    linear_attention_state,
    step_mapped,
)
from kexue.ops.attention.efficient import (
    EfficientAttentionState,
    efficient_attention,
    efficient_attention_dense,
    efficient_attention_state,
    efficient_attention_step,
    efficient_attention_weights,
)
from kexue.ops.attention.feature_maps import EfficientFeatureMap, EluFeatureMap, FeatureMap, get_feature_map

CAUSAL_IMPLS = ("chunked", "dense", "recurrent")
NONCAUSAL_IMPLS = ("factorised", "dense")

# --------------------------------------------------------------------------------------------------------------
# Validation and preparation
# --------------------------------------------------------------------------------------------------------------


def _check_inputs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None,
                  causal: bool) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor):
            raise AttentionInputError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise AttentionInputError(f"{name} must be [B, H, N, D] (4-D), got shape {tuple(t.shape)}")
        if not t.is_floating_point():
            raise AttentionInputError(f"{name} must be floating point, got {t.dtype}")
    if q.shape[:2] != k.shape[:2] or q.shape[-1] != k.shape[-1]:
        raise AttentionInputError(f"q [B, H, L, D] and k [B, H, S, D] must share B, H and D, got {tuple(q.shape)} "
                                  f"and {tuple(k.shape)}")
    if v.shape[:3] != k.shape[:3]:
        raise AttentionInputError(f"v must be [B, H, S, M] with the B, H, S of k {tuple(k.shape[:3])}, got "
                                  f"{tuple(v.shape)}")
    if causal and q.shape[2] != k.shape[2]:
        raise AttentionInputError(f"causal attention needs as many queries as keys (query i sees keys j <= i), got "
                                  f"L = {q.shape[2]} queries and S = {k.shape[2]} keys; use causal=False for cross "
                                  "attention")
    if causal and q.shape[2] == 0:
        raise AttentionInputError("q, k, v: causal linear attention needs a sequence of N >= 1 positions, got N = 0")
    if q.shape[-1] == 0 or v.shape[-1] == 0:
        raise AttentionInputError(f"head sizes must be >= 1, got D = {q.shape[-1]} and M = {v.shape[-1]}")
    if not (q.dtype == k.dtype == v.dtype) or not (q.device == k.device == v.device):
        raise AttentionInputError(f"q, k and v must share dtype and device, got {q.dtype}/{q.device}, "
                                  f"{k.dtype}/{k.device} and {v.dtype}/{v.device}")
    if key_padding_mask is not None:
        if not isinstance(key_padding_mask, torch.Tensor) or key_padding_mask.dtype != torch.bool:
            got = key_padding_mask.dtype if isinstance(key_padding_mask, torch.Tensor) else type(key_padding_mask)
            raise AttentionInputError(f"key_padding_mask must be a bool tensor (True = padding), got {got}")
        if tuple(key_padding_mask.shape) != (k.shape[0], k.shape[2]):
            raise AttentionInputError(f"key_padding_mask must have shape [B, S] = {(k.shape[0], k.shape[2])} (one "
                                      f"flag per key), got {tuple(key_padding_mask.shape)}")


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def map_inputs(q: torch.Tensor, k: torch.Tensor, fmap: FeatureMap,
               key_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """phi(q) ``[B, H, L, C]`` and varphi(k) ``[B, H, S, C]`` in the compute dtype, padded keys zeroed."""
    dtype = _compute_dtype(q.dtype)
    phi_q = fmap.forward_queries(q.to(dtype))
    phi_k = fmap.forward_keys(k.to(dtype))
    if key_padding_mask is not None:
        phi_k = phi_k.masked_fill(key_padding_mask[:, None, :, None], 0.0)
    return phi_q, phi_k


# --------------------------------------------------------------------------------------------------------------
# Non-causal forms
# --------------------------------------------------------------------------------------------------------------


def noncausal_linear_attention(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor,
                               eps: float = 1e-6) -> torch.Tensor:
    """phi_q (phi_k^T v) / (phi_q . sum_j phi_k_j + eps).

    ``[..., L, C]``, ``[..., S, C]``, ``[..., S, M]`` -> ``[..., L, M]``.
    """
    kv = phi_k.transpose(-1, -2) @ v  # [..., C, M]
    z = phi_k.sum(-2, keepdim=True)  # [..., 1, C]
    return (phi_q @ kv) / ((phi_q * z).sum(-1, keepdim=True) + eps)


def noncausal_linear_attention_dense(phi_q: torch.Tensor, phi_k: torch.Tensor, v: torch.Tensor,
                                     eps: float = 1e-6) -> torch.Tensor:
    """The explicit normalised L x S form (reference for :func:`noncausal_linear_attention`)."""
    scores = phi_q @ phi_k.transpose(-1, -2)  # [..., L, S]
    return (scores @ v) / (scores.sum(-1, keepdim=True) + eps)


# --------------------------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------------------------


def linear_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, causal: bool = False,
                     feature_map: str | FeatureMap = "elu", key_padding_mask: torch.Tensor | None = None,
                     eps: float = 1e-6, impl: str | None = None, chunk_size: int = DEFAULT_CHUNK,
                     initial_state: LinearAttentionState | tuple | None = None, return_state: bool = False,
                     cu_seqlens: torch.Tensor | None = None):
    """Linear attention, causal or not, with a choice of feature map.

    o_i = phi(q_i)^T (S_0 + sum_{j in J(i)} varphi(k_j) v_j^T) / (phi(q_i)^T (z_0 + sum_{j in J(i)} varphi(k_j)) + eps),
    J(i) = all unpadded keys (non-causal) or unpadded keys j <= i (causal); S_0, z_0 = 0 unless ``initial_state``.

    Args:
        q: queries ``[B, H, L, D]``.
        k: keys ``[B, H, S, D]``; S may differ from L when not causal (cross attention).
        v: values ``[B, H, S, M]`` (M may differ from D).
        causal: position i attends to keys j <= i only (needs L = S).
        feature_map: ``"elu"`` (default), ``"relu"``, ``"cos"`` (Su's 1 + cos), ``"favor"`` (FAVOR+; pass a
            :class:`FavorFeatureMap` to control its random features), ``"efficient"`` (Efficient Attention, no
            eps), or a :class:`FeatureMap`.
        key_padding_mask: bool ``[B, S]``; True marks a padding key, which no query attends to (PyTorch's
            ``nn.MultiheadAttention`` convention).
        eps: added to the normaliser (fast-transformers' 1e-6).
        impl: ``"chunked"`` (default), ``"dense"`` or ``"recurrent"`` when causal; ``"factorised"`` (default) or
            ``"dense"`` otherwise. The dense forms are O(N^2) references.
        chunk_size: tokens per chunk of the chunked causal form.
        initial_state: causal only: the state to continue from (a :class:`LinearAttentionState` from
            :func:`linear_attention_step` or from an earlier call with ``return_state``, or a pair (s ``[B, H, C, M]``,
            z ``[B, H, C]``) with C the map's feature size); gradients flow into it.
        return_state: causal only: also return the final state, ready for :func:`linear_attention_step` (prefill a
            prompt in one call, then decode).
        cu_seqlens: causal only: int ``[n_seq + 1]``, cumulative lengths of sequences packed along N of a batch of
            one (``[1, H, T, D]``, flash-linear-attention's varlen convention); every sequence starts from a zero
            state (or its own, ``initial_state`` of ``[n_seq, H, ...]``) and returns its own final state.

    Returns:
        ``[B, H, L, M]`` in the dtype of ``v`` (computed in float32 for float16 / bfloat16 inputs), and with
        ``return_state`` the final :class:`LinearAttentionState` (float32 for low-precision inputs).

    Example:
        >>> q, k, v = torch.randn(2, 4, 10, 8), torch.randn(2, 4, 10, 8), torch.randn(2, 4, 10, 5)
        >>> linear_attention(q, k, v, causal=True).shape
        torch.Size([2, 4, 10, 5])
        >>> out, state = linear_attention(q[:, :, :9], k[:, :, :9], v[:, :, :9], causal=True, return_state=True)
        >>> last, _ = linear_attention_step(q[:, :, 9], k[:, :, 9], v[:, :, 9], state)
        >>> torch.allclose(last, linear_attention(q, k, v, causal=True)[:, :, 9], atol=1e-5)
        True
    """
    _check_inputs(q, k, v, key_padding_mask, causal)
    if not eps >= 0:
        raise AttentionInputError(f"eps must be >= 0, got {eps}")
    allowed = CAUSAL_IMPLS if causal else NONCAUSAL_IMPLS
    impl = impl or allowed[0]
    if impl not in allowed:
        raise AttentionInputError(f"impl={impl!r} is not valid with causal={causal}; expected one of "
                                  f"{', '.join(allowed)}")
    if not isinstance(chunk_size, int) or chunk_size < 1:
        raise AttentionInputError(f"chunk_size must be a positive int, got {chunk_size!r}")
    stateful = initial_state is not None or return_state or cu_seqlens is not None
    if stateful and not causal:
        raise AttentionInputError("initial_state, return_state and cu_seqlens apply to causal=True only (a "
                                  "non-causal query sees every key: there is no running state)")
    if cu_seqlens is not None and key_padding_mask is not None:
        raise AttentionInputError("pass either cu_seqlens (packed sequences, no padding) or key_padding_mask, not both")
    fmap = get_feature_map(feature_map, q.shape[-1])
    out_dtype = v.dtype
    vv = v.to(_compute_dtype(v.dtype))
    if isinstance(fmap, EfficientFeatureMap):
        if stateful:
            raise AttentionInputError("initial_state, return_state and cu_seqlens are not supported with "
                                      "feature_map='efficient' (its state is a running log-sum-exp); prefill it with "
                                      "linear_attention_step")
        dtype = vv.dtype
        qq, kk = q.to(dtype), k.to(dtype)
        if impl == "dense":
            out = efficient_attention_dense(qq, kk, vv, causal=causal, key_padding_mask=key_padding_mask)
        elif impl == "recurrent":
            out = _efficient_recurrent(qq, kk, vv, key_padding_mask)
        else:
            out = efficient_attention(qq, kk, vv, causal=causal, key_padding_mask=key_padding_mask)
        return out.to(out_dtype)
    kw = {"initial_state": initial_state, "return_state": return_state, "cu_seqlens": cu_seqlens}
    if causal and impl == "chunked" and type(fmap) is EluFeatureMap and key_padding_mask is None:
        # The default path: elu + 1 fused into the chunked op (no mapped copies of q and k).
        dtype = vv.dtype
        res = causal_linear_attention_chunked(q.to(dtype), k.to(dtype), vv, eps, chunk_size, map_elu=True, **kw)
        return (res[0].to(out_dtype), res[1]) if return_state else res.to(out_dtype)
    phi_q, phi_k = map_inputs(q, k, fmap, key_padding_mask)
    if not causal:
        form = noncausal_linear_attention if impl == "factorised" else noncausal_linear_attention_dense
        return form(phi_q, phi_k, vv, eps).to(out_dtype)
    if impl == "chunked":
        res = causal_linear_attention_chunked(phi_q, phi_k, vv, eps, chunk_size, **kw)
    elif impl == "dense":
        res = causal_linear_attention_dense(phi_q, phi_k, vv, eps, **kw)
    else:
        res = causal_linear_attention_recurrent(phi_q, phi_k, vv, eps, **kw)
    if return_state:
        return res[0].to(out_dtype), res[1]
    return res.to(out_dtype)


def _efficient_recurrent(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    b, h, n, d = q.shape
    if key_padding_mask is not None:
        k = k.masked_fill(key_padding_mask[:, None, :, None], float("-inf"))
    state = efficient_attention_state(b, h, d, v.shape[-1], device=v.device, dtype=v.dtype)
    outs = []
    for i in range(n):
        out, state = efficient_attention_step(q[:, :, i], k[:, :, i], v[:, :, i], state)
        outs.append(out)
    return torch.stack(outs, dim=2)


def linear_attention_weights(q: torch.Tensor, k: torch.Tensor, *, causal: bool = False,
                             feature_map: str | FeatureMap = "elu", key_padding_mask: torch.Tensor | None = None,
                             eps: float = 1e-6) -> torch.Tensor:
    """The L x S attention matrix that :func:`linear_attention` applies implicitly, ``[B, H, L, S]`` (for figures).

    ``linear_attention_weights(q, k) @ v`` equals ``linear_attention(q, k, v)`` (same arguments).
    """
    _check_inputs(q, k, k, key_padding_mask, causal)
    fmap = get_feature_map(feature_map, q.shape[-1])
    if isinstance(fmap, EfficientFeatureMap):
        dtype = _compute_dtype(q.dtype)
        return efficient_attention_weights(q.to(dtype), k.to(dtype), causal=causal, key_padding_mask=key_padding_mask)
    phi_q, phi_k = map_inputs(q, k, fmap, key_padding_mask)
    if causal:
        return causal_linear_weights(phi_q, phi_k, eps)
    scores = phi_q @ phi_k.transpose(-1, -2)
    return scores / (scores.sum(-1, keepdim=True) + eps)


def linear_attention_step(q_t: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor,
                          state: LinearAttentionState | EfficientAttentionState | None = None, *,
                          feature_map: str | FeatureMap = "elu", eps: float = 1e-6):
    """One step of causal linear attention as an RNN (decoding): O(C M) work and state per head, at any position.

    Reproduces ``linear_attention(..., causal=True)`` token by token. The update is out-of-place, so it is
    autograd-safe and an old state stays valid (e.g. to branch); the state is float32 for low-precision inputs.
    CPU float32 / float64 steps that need no gradient run as one compiled loop when numba is installed (the map,
    the update and the read-out fused: ~2x faster than the ~13 tensor ops of :func:`step_mapped`, whose dispatch
    dominates a step); with a gradient, on CUDA, or without numba, the torch form runs.

    Args:
        q_t, k_t: ``[B, H, D]``, the current token's query and key.
        v_t: ``[B, H, M]``.
        state: from the previous step, or None to start (S_0 = 0, z_0 = 0).
        feature_map: as in :func:`linear_attention` (random maps must be the same object at every step).
        eps: added to the normaliser.

    Returns:
        ``(out_t [B, H, M], new_state)``.
    """
    if q_t.dim() != 3 or k_t.shape != q_t.shape or v_t.dim() != 3 or v_t.shape[:2] != q_t.shape[:2]:
        raise AttentionInputError(f"expected q_t, k_t [B, H, D] and v_t [B, H, M], got {tuple(q_t.shape)}, "
                                  f"{tuple(k_t.shape)}, {tuple(v_t.shape)}")
    if q_t.dtype != v_t.dtype or k_t.dtype != v_t.dtype:
        raise AttentionInputError(f"q_t, k_t and v_t must share a dtype, got {q_t.dtype}, {k_t.dtype} and "
                                  f"{v_t.dtype}")
    # Decoding is dispatch-bound (a handful of tiny ops per step): keep the Python around them minimal.
    fmap = (feature_map if isinstance(feature_map, FeatureMap)
            else _DETERMINISTIC.get(feature_map) or _cached_map(feature_map, q_t.shape[-1]))
    out_dtype = v_t.dtype
    if out_dtype in (torch.float16, torch.bfloat16):
        q_t, k_t, v_t = q_t.float(), k_t.float(), v_t.float()
    if isinstance(fmap, EfficientFeatureMap):
        if state is None:
            b, h, d = q_t.shape
            state = efficient_attention_state(b, h, d, v_t.shape[-1], device=v_t.device, dtype=v_t.dtype)
        elif state.r.shape != (*q_t.shape, v_t.shape[-1]) or state.l.shape != q_t.shape:
            raise AttentionInputError(f"state: expected r {[*q_t.shape, v_t.shape[-1]]} and l {list(q_t.shape)} "
                                      f"([B, H, D, M], [B, H, D]) for these inputs, got {list(state.r.shape)} and "
                                      f"{list(state.l.shape)}")
        out, state = efficient_attention_step(q_t, k_t, v_t, state)
    else:
        fused = type(fmap) is EluFeatureMap and _compiled_step_applies(q_t, k_t, v_t, state)
        if fused:  # the compiled kernel maps q and k itself
            phi_q, phi_k = q_t.contiguous(), k_t.contiguous()
        else:
            phi_q, phi_k = fmap.forward_queries(q_t), fmap.forward_keys(k_t)
        if state is None:
            b, h, c = phi_q.shape
            state = linear_attention_state(b, h, c, v_t.shape[-1], device=v_t.device, dtype=v_t.dtype)
        elif state.s.shape != (*phi_q.shape, v_t.shape[-1]) or state.z.shape != phi_q.shape:
            raise AttentionInputError(f"state: expected s {[*phi_q.shape, v_t.shape[-1]]} and z {list(phi_q.shape)} "
                                      f"([B, H, C, M], [B, H, C]: batch, heads, the map's features, values) for "
                                      f"these inputs, got {list(state.s.shape)} and {list(state.z.shape)}")
        if fused or _compiled_step_applies(phi_q, phi_k, v_t, state):
            out, s, z = _decode_kernel.step(phi_q.contiguous(), phi_k.contiguous(), v_t.contiguous(),
                                            state.s.contiguous(), state.z.contiguous(), eps, fused)
            state = LinearAttentionState(s, z, state.position + 1)
        else:
            out, state = step_mapped(phi_q, phi_k, v_t, state, eps)
    return (out if out.dtype == out_dtype else out.to(out_dtype)), state


def _compiled_step_applies(q_t: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor, state) -> bool:
    """The compiled decoding step serves CPU float32 / float64 tensors that need no gradient (it has no backward)."""
    if not _decode_kernel.available() or v_t.device.type != "cpu" or v_t.dtype not in _KERNEL_DTYPES:
        return False
    if state is not None and state.s.dtype != v_t.dtype:
        return False
    tensors = (q_t, k_t, v_t) if state is None else (q_t, k_t, v_t, state.s, state.z)
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))


_KERNEL_DTYPES = (torch.float32, torch.float64)


# name -> map, for the per-token decoding path. Deterministic maps do not depend on the head size; random maps are
# never cached (they must be passed as objects).
_DETERMINISTIC: dict[str, FeatureMap] = {}


def _cached_map(name: str, query_dims: int) -> FeatureMap:
    fmap = get_feature_map(name, query_dims)
    if fmap.random:
        raise AttentionInputError(f"feature_map={name!r} draws random features: pass the same FeatureMap object at "
                                  "every step (a name would draw new features each time)")
    _DETERMINISTIC[name] = fmap
    return fmap
