"""Multi-head attention layers: softmax (SDPA) and linear (post 6; "Transformers are RNNs", arXiv 2006.16236).

Both layers take ``x [B, N, dim]`` and return ``[B, N, dim]``, with the same constructor arguments apart from the
linear layer's ``feature_map`` / ``eps`` / ``chunk_size``, and both decode one token at a time with ``step`` after
reading a prompt in one parallel call with ``prefill``:

- :class:`SoftmaxAttention` keeps a KV cache (keys and values of every past token: O(position) per step);
- :class:`LinearAttention` keeps the RNN state (S, z) of :func:`kexue.ops.attention.linear_attention_step`
  (O(1) per step).

Attention maps: when a capture is listening (:mod:`kexue.nn.tap`), ``forward`` computes the explicit ``[B, H, N, N]``
weights (the dense twin of each fast path) and offers them as ``tap(f"{tap_name}.weights", w)``; otherwise the fast
path runs and nothing N x N is built.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from kexue.nn import tap as _tap
from kexue.ops.attention import get_feature_map, linear_attention, linear_attention_step, linear_attention_weights
from kexue.ops.attention.causal import DEFAULT_CHUNK
from kexue.ops.attention.feature_maps import EfficientFeatureMap, FavorFeatureMap, FeatureMap


class _MultiHead(nn.Module):
    """Shared projections: x -> q, k, v ``[B, H, N, d]`` and ``[B, H, N, d]`` -> output ``[B, N, dim]``."""

    def __init__(self, dim: int, heads: int, *, causal: bool = True, bias: bool = False,
                 tap_name: str = "attn") -> None:
        super().__init__()
        if dim < 1 or heads < 1 or dim % heads:
            raise ValueError(f"dim ({dim}) must be a positive multiple of heads ({heads})")
        self.dim, self.heads, self.head_dim = dim, heads, dim // heads
        self.causal = causal
        self.tap_name = tap_name
        self.qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.out = nn.Linear(dim, dim, bias=bias)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, n, _ = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)  # [3, B, H, N, d]
        return qkv[0], qkv[1], qkv[2]

    def _merge(self, y: torch.Tensor) -> torch.Tensor:
        b, h, n, d = y.shape
        return self.out(y.transpose(1, 2).reshape(b, n, h * d))

    def _check(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None) -> None:
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must be [B, N, {self.dim}], got {tuple(x.shape)}")
        if key_padding_mask is not None and (key_padding_mask.dtype != torch.bool
                                             or tuple(key_padding_mask.shape) != tuple(x.shape[:2])):
            raise ValueError(f"key_padding_mask must be a bool [B, N] = {tuple(x.shape[:2])} tensor (True = padding), "
                             f"got {key_padding_mask.dtype} {tuple(key_padding_mask.shape)}")


# --------------------------------------------------------------------------------------------------------------
# Softmax attention
# --------------------------------------------------------------------------------------------------------------


class SoftmaxAttention(_MultiHead):
    """Standard scaled dot-product multi-head attention (``F.scaled_dot_product_attention``), with a KV cache.

    Args:
        dim: model width (a multiple of ``heads``).
        heads: number of heads; head size d = dim / heads.
        causal: position i attends to j <= i.
        bias: biases in the q/k/v and output projections.
        tap_name: prefix of the tap that offers the attention weights to a capture.
    """

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, N, dim]`` (and optional bool ``[B, N]``, True = padding) -> ``[B, N, dim]``."""
        self._check(x, key_padding_mask)
        q, k, v = self._split(x)
        n = x.shape[1]
        mask = None
        if key_padding_mask is not None or self.causal:
            mask = torch.ones(n, n, dtype=torch.bool, device=x.device)
            if self.causal:
                mask = mask.tril()
            if key_padding_mask is not None:
                mask = mask & ~key_padding_mask[:, None, None, :]  # [B, 1, N, N], True = may attend
        if _tap.active():
            # Dense twin: the explicit softmax weights, offered to the capture (the map the figure shows).
            scores = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            w = torch.nan_to_num(torch.softmax(scores, dim=-1), nan=0.0)
            _tap.tap(f"{self.tap_name}.weights", w)
            y = w @ v
        elif key_padding_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
            y = torch.nan_to_num(y, nan=0.0)  # a query that sees no key
        return self._merge(y)

    def init_cache(self, batch: int, max_len: int, *, device=None, dtype=torch.float32) -> dict:
        """A pre-allocated KV cache for :meth:`step`: keys and values ``[B, H, max_len, d]`` and the length."""
        shape = (batch, self.heads, max_len, self.head_dim)
        zeros = torch.zeros(shape, device=device, dtype=dtype)
        return {"k": zeros, "v": zeros.clone(), "length": 0}

    def prefill(self, x: torch.Tensor, cache: dict) -> tuple[torch.Tensor, dict]:
        """Read ``x [B, T, dim]`` in one call after the tokens already in ``cache``: ``[B, T, dim]``, equal to ``T``
        calls of :meth:`step`; writes the T keys and values into ``cache`` (in place)."""
        if not self.causal:
            raise ValueError("prefill() fills a decoding cache of causal attention; this layer has causal=False")
        self._check(x, None)
        q, k, v = self._split(x)  # [B, H, T, d]
        t0, t = cache["length"], x.shape[1]
        if t0 + t > cache["k"].shape[2]:
            raise ValueError(f"KV cache holds {cache['k'].shape[2]} tokens, {t0} used: no room for {t} more; build "
                             "it with a larger max_len")
        cache["k"][:, :, t0 : t0 + t] = k
        cache["v"][:, :, t0 : t0 + t] = v
        cache["length"] = t0 + t
        if t0 == 0:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # query i (position t0 + i) sees the cached keys and the new ones up to itself
            mask = torch.ones(t, t0 + t, dtype=torch.bool, device=x.device).tril(t0)
            y = F.scaled_dot_product_attention(q, cache["k"][:, :, : t0 + t], cache["v"][:, :, : t0 + t],
                                               attn_mask=mask)
        return self._merge(y), cache

    def step(self, x_t: torch.Tensor, cache: dict) -> tuple[torch.Tensor, dict]:
        """Decode one token: ``x_t [B, dim]`` -> ``[B, dim]``; writes its key and value into ``cache`` (in place)."""
        if not self.causal:
            raise ValueError("step() decodes causal attention one token at a time; this layer has causal=False")
        q, k, v = self._split(x_t.unsqueeze(1))  # [B, H, 1, d]
        t = cache["length"]
        if t >= cache["k"].shape[2]:
            raise ValueError(f"KV cache is full ({t} tokens); build it with a larger max_len")
        cache["k"][:, :, t : t + 1] = k
        cache["v"][:, :, t : t + 1] = v
        cache["length"] = t + 1
        y = F.scaled_dot_product_attention(q, cache["k"][:, :, : t + 1], cache["v"][:, :, : t + 1])
        return self._merge(y).squeeze(1), cache


# --------------------------------------------------------------------------------------------------------------
# Linear attention
# --------------------------------------------------------------------------------------------------------------


class LinearAttention(_MultiHead):
    """Multi-head linear attention (:func:`kexue.ops.attention.linear_attention`), decoding as an RNN.

    Args:
        dim, heads, causal, bias, tap_name: as in :class:`SoftmaxAttention`.
        feature_map: ``"elu"``, ``"relu"``, ``"cos"``, ``"favor"``, ``"efficient"`` or a
            :class:`~kexue.ops.attention.FeatureMap`.
        eps: normaliser guard.
        chunk_size: tokens per chunk of the causal fast path.
        n_features: random features for ``"favor"`` (default d * ceil(log d)).
        generator: RNG for random features.
    """

    def __init__(self, dim: int, heads: int, *, causal: bool = True, bias: bool = False, tap_name: str = "attn",
                 feature_map: str | FeatureMap = "elu", eps: float = 1e-6, chunk_size: int = DEFAULT_CHUNK,
                 n_features: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        super().__init__(dim, heads, causal=causal, bias=bias, tap_name=tap_name)
        self.feature_map = get_feature_map(feature_map, self.head_dim, generator=generator, n_features=n_features)
        self.eps, self.chunk_size = eps, chunk_size
        if isinstance(self.feature_map, FavorFeatureMap):
            # A buffer, so the random features move with .to() and are saved in the state dict.
            self.register_buffer("omega", self.feature_map.omega.clone())

    def _sync_feature_map(self) -> None:
        if isinstance(self.feature_map, FavorFeatureMap):
            self.feature_map.omega = self.omega

    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Draw new random features (FAVOR+); a no-op for deterministic maps."""
        if isinstance(self.feature_map, FavorFeatureMap):
            self.feature_map.omega = self.omega
            self.feature_map.redraw(generator)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x [B, N, dim]`` (and optional bool ``[B, N]``, True = padding) -> ``[B, N, dim]``."""
        self._check(x, key_padding_mask)
        self._sync_feature_map()
        q, k, v = self._split(x)
        if _tap.active():
            w = linear_attention_weights(q, k, causal=self.causal, feature_map=self.feature_map,
                                         key_padding_mask=key_padding_mask, eps=self.eps)
            _tap.tap(f"{self.tap_name}.weights", w)
        y = linear_attention(q, k, v, causal=self.causal, feature_map=self.feature_map,
                             key_padding_mask=key_padding_mask, eps=self.eps, chunk_size=self.chunk_size)
        return self._merge(y)

    def init_cache(self, batch: int, max_len: int | None = None, *, device=None, dtype=torch.float32) -> dict:
        """The empty RNN state (created on the first :meth:`step`); ``max_len`` is ignored: the state is O(1)."""
        return {"state": None, "length": 0}

    def prefill(self, x: torch.Tensor, cache: dict) -> tuple[torch.Tensor, dict]:
        """Read ``x [B, T, dim]`` in one parallel call from the state in ``cache``: ``[B, T, dim]``, equal to ``T``
        calls of :meth:`step` (the chunked form with ``initial_state`` / ``return_state``). The Efficient Attention
        map, whose state the parallel form does not carry, steps through the tokens instead."""
        if not self.causal:
            raise ValueError("prefill() fills a decoding cache of causal attention; this layer has causal=False")
        self._check(x, None)
        if isinstance(self.feature_map, EfficientFeatureMap):
            ys = [self.step(x[:, t], cache)[0] for t in range(x.shape[1])]
            return torch.stack(ys, 1), cache
        self._sync_feature_map()
        q, k, v = self._split(x)
        y, cache["state"] = linear_attention(q, k, v, causal=True, feature_map=self.feature_map, eps=self.eps,
                                             chunk_size=self.chunk_size, initial_state=cache["state"],
                                             return_state=True)
        cache["length"] += x.shape[1]
        return self._merge(y), cache

    def step(self, x_t: torch.Tensor, cache: dict) -> tuple[torch.Tensor, dict]:
        """Decode one token: ``x_t [B, dim]`` -> ``[B, dim]``, updating the RNN state in ``cache``."""
        if not self.causal:
            raise ValueError("step() decodes causal attention one token at a time; this layer has causal=False")
        self._sync_feature_map()
        q, k, v = self._split(x_t.unsqueeze(1))
        y, cache["state"] = linear_attention_step(q[:, :, 0], k[:, :, 0], v[:, :, 0], cache["state"],
                                                  feature_map=self.feature_map, eps=self.eps)
        cache["length"] += 1
        return self._merge(y.unsqueeze(2)).squeeze(1), cache
