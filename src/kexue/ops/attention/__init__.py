"""Linear attention (post 6: kexue.fm/archives/7546, 8610; "Transformers are RNNs", arXiv 2006.16236).

- :func:`linear_attention`: causal / non-causal (queries and keys of different lengths), any feature map, key
  padding, fp32 accumulation; causal: initial and final states (prefill), packed sequences (``cu_seqlens``).
- :func:`linear_attention_step`: the recurrent (RNN) form for decoding (a compiled numba loop for CPU inference
  when numba is installed, :mod:`._decode_kernel`; the torch form otherwise).
- :func:`causal_dot_product`: the un-normalised causal product (fast-transformers' ``causal_dot_product``).
- :mod:`.feature_maps`: elu+1, relu, Su's 1+cos, FAVOR+ random features, Efficient Attention.
- :mod:`.causal`: the three tied causal forms (dense masked reference, chunked with a custom backward, recurrent);
  the chunked op reuses its scratch blocks between calls (:func:`empty_cache` frees them) and scans its chunk states
  in one compiled loop when numba is installed (:mod:`._scan_kernel`).
- :mod:`.efficient`: Efficient Attention with the exact causal prefix normaliser.
"""

from kexue.ops.attention._scratch import empty_cache
from kexue.ops.attention.causal import (
    AttentionInputError,
    LinearAttentionState,
    causal_dot_product,
    causal_dot_product_dense,
    causal_linear_attention_chunked,
    causal_linear_attention_dense,
    causal_linear_attention_recurrent,
    linear_attention_state,
)
from kexue.ops.attention.efficient import (
    EfficientAttentionState,
    efficient_attention,
    efficient_attention_dense,
    efficient_attention_step,
)
from kexue.ops.attention.feature_maps import (
    FEATURE_MAPS,
    CosFeatureMap,
    EfficientFeatureMap,
    EluFeatureMap,
    FavorFeatureMap,
    FeatureMap,
    ReluFeatureMap,
    get_feature_map,
)
from kexue.ops.attention.linear import (
    linear_attention,
    linear_attention_step,
    linear_attention_weights,
    noncausal_linear_attention,
    noncausal_linear_attention_dense,
)

__all__ = [
    "FEATURE_MAPS",
    "AttentionInputError",
    "CosFeatureMap",
    "EfficientAttentionState",
    "EfficientFeatureMap",
    "EluFeatureMap",
    "FavorFeatureMap",
    "FeatureMap",
    "LinearAttentionState",
    "ReluFeatureMap",
    "causal_dot_product",
    "causal_dot_product_dense",
    "causal_linear_attention_chunked",
    "causal_linear_attention_dense",
    "causal_linear_attention_recurrent",
    "efficient_attention",
    "efficient_attention_dense",
    "efficient_attention_step",
    "empty_cache",
    "get_feature_map",
    "linear_attention",
    "linear_attention_state",
    "linear_attention_step",
    "linear_attention_weights",
    "noncausal_linear_attention",
    "noncausal_linear_attention_dense",
]
