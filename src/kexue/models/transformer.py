"""A small decoder-only Transformer with softmax or linear attention ("Transformers are RNNs", arXiv 2006.16236).

- Pre-LayerNorm blocks (attention, then a GELU MLP), learned positional embeddings, untied output head.
- ``attention="linear"`` uses :class:`kexue.nn.attention.LinearAttention` (feature map selectable); in
  :meth:`Transformer.generate` it runs as an RNN, one O(1) state update per token and layer (the paper's point: decoding
  cost constant in position), after reading the prompt in one parallel call (the chunked form returns the state).
  ``attention="softmax"`` decodes with a KV cache, or, with ``use_cache=False``, by
  re-running the whole prefix every step (the paper's "softmax" baseline of Table 1).
- The model returns logits; the loss lives with the experiment (style rule 3).
"""

from dataclasses import dataclass

import torch
from torch import nn

from kexue.nn.attention import LinearAttention, SoftmaxAttention
from kexue.ops.attention.causal import DEFAULT_CHUNK

# --------------------------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------------------------


class Block(nn.Module):
    """x + attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, attn: nn.Module, dim: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = attn
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), key_padding_mask))
        return x + self.mlp(self.ln2(x))

    def prefill(self, x: torch.Tensor, cache: dict) -> tuple[torch.Tensor, dict]:
        y, cache = self.attn.prefill(self.ln1(x), cache)
        x = x + y
        return x + self.mlp(self.ln2(x)), cache

    def step(self, x_t: torch.Tensor, cache: dict) -> tuple[torch.Tensor, dict]:
        y, cache = self.attn.step(self.ln1(x_t), cache)
        x_t = x_t + y
        return x_t + self.mlp(self.ln2(x_t)), cache


# --------------------------------------------------------------------------------------------------------------
# Config and model
# --------------------------------------------------------------------------------------------------------------


@dataclass
class TransformerConfig:
    vocab_size: int = 256  # tokens the model reads and predicts
    max_len: int = 1024  # longest sequence (positional embeddings)
    dim: int = 256  # model width
    depth: int = 8  # number of blocks
    heads: int = 8  # attention heads (head size dim / heads)
    mlp_ratio: float = 4.0  # MLP hidden width / dim
    attention: str = "linear"  # "linear" or "softmax"
    feature_map: str = "elu"  # for linear attention: "elu", "relu", "cos", "favor", "efficient"
    dropout: float = 0.0  # dropout on residual branches
    chunk_size: int = DEFAULT_CHUNK  # tokens per chunk of the causal linear fast path


class Transformer(nn.Module):
    """Decoder-only (causal) Transformer language model over integer tokens.

    Args:
        cfg: :class:`TransformerConfig`.
        generator: RNG for random feature maps (``favor``).
    """

    def __init__(self, cfg: TransformerConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if cfg.attention not in ("linear", "softmax"):
            raise ValueError(f"attention must be 'linear' or 'softmax', got {cfg.attention!r}")
        self.cfg = cfg
        self.tok = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.pos = nn.Embedding(cfg.max_len, cfg.dim)
        blocks = []
        for i in range(cfg.depth):
            if cfg.attention == "linear":
                attn = LinearAttention(cfg.dim, cfg.heads, causal=True, tap_name=f"blocks.{i}.attn",
                                       feature_map=cfg.feature_map, chunk_size=cfg.chunk_size, generator=generator)
            else:
                attn = SoftmaxAttention(cfg.dim, cfg.heads, causal=True, tap_name=f"blocks.{i}.attn")
            blocks.append(Block(attn, cfg.dim, cfg.mlp_ratio, cfg.dropout))
        self.blocks = nn.ModuleList(blocks)
        self.ln = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, cfg.vocab_size)
        self.init_weights()

    def init_weights(self) -> None:
        """GPT-2 style: N(0, 0.02) for linear and embedding weights, zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear | nn.Embedding):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``tokens [B, N]`` (int64) -> logits ``[B, N, vocab_size]``; logits at i predict token i + 1."""
        if tokens.dim() != 2 or tokens.dtype != torch.long:
            raise ValueError(f"tokens must be int64 [B, N], got {tokens.dtype} {tuple(tokens.shape)}")
        n = tokens.shape[1]
        if n > self.cfg.max_len:
            raise ValueError(f"sequence length {n} exceeds max_len={self.cfg.max_len}")
        x = self.tok(tokens) + self.pos(torch.arange(n, device=tokens.device))
        for block in self.blocks:
            x = block(x, key_padding_mask)
        return self.head(self.ln(x))

    def redraw_features(self, generator: torch.Generator | None = None) -> None:
        """Draw new random features in every linear-attention layer (FAVOR+; Performer redraws them periodically
        during training). A no-op for deterministic maps and for softmax attention."""
        for block in self.blocks:
            if isinstance(block.attn, LinearAttention):
                block.attn.redraw_features(generator)

    def init_caches(self, batch: int, max_len: int) -> list[dict]:
        """One decoding cache per block: an RNN state (linear) or a KV cache (softmax)."""
        p = self.head.weight
        return [b.attn.init_cache(batch, max_len, device=p.device, dtype=p.dtype) for b in self.blocks]

    def prefill(self, tokens: torch.Tensor, position: int, caches: list[dict]) -> torch.Tensor:
        """Read ``tokens [B, T]`` at positions ``position ...`` in one parallel call, filling ``caches`` as ``T``
        calls of :meth:`forward_step` would: logits ``[B, vocab_size]`` of the last token (predicting the next)."""
        x = self.tok(tokens) + self.pos.weight[position : position + tokens.shape[1]]
        for block, cache in zip(self.blocks, caches, strict=True):
            x, _ = block.prefill(x, cache)
        return self.head(self.ln(x[:, -1]))

    def forward_step(self, token: torch.Tensor, position: int, caches: list[dict]) -> torch.Tensor:
        """One decoding step: ``token [B]`` at ``position`` -> logits ``[B, vocab_size]``; updates ``caches``."""
        x = self.tok(token) + self.pos.weight[position]
        for block, cache in zip(self.blocks, caches, strict=True):
            x, _ = block.step(x, cache)
        return self.head(self.ln(x))

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, steps: int, *, temperature: float = 1.0, use_cache: bool = True,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``steps`` tokens after ``prompt``.

        Args:
            prompt: int64 ``[B, T0]`` with T0 >= 1.
            steps: tokens to sample (T0 + steps <= max_len).
            temperature: softmax temperature; 0 means greedy.
            use_cache: read the prompt in one parallel call (:meth:`prefill`), then decode with the recurrent state /
                KV cache; False re-runs the full prefix every step.
            generator: RNG for sampling.

        Returns:
            int64 ``[B, T0 + steps]``.
        """
        if prompt.dim() != 2 or prompt.shape[1] < 1 or prompt.dtype != torch.long:
            raise ValueError(f"prompt must be int64 [B, T0] with T0 >= 1, got {prompt.dtype} {tuple(prompt.shape)}")
        if steps < 0 or not temperature >= 0:
            raise ValueError(f"steps must be >= 0 and temperature >= 0, got steps={steps}, temperature={temperature}")
        total = prompt.shape[1] + steps
        if total > self.cfg.max_len:
            raise ValueError(f"prompt + steps = {total} exceeds max_len={self.cfg.max_len}")
        out = torch.empty(prompt.shape[0], total, dtype=torch.long, device=prompt.device)
        out[:, : prompt.shape[1]] = prompt
        caches = self.init_caches(prompt.shape[0], total) if use_cache else None
        logits = None
        if use_cache:
            logits = self.prefill(prompt, 0, caches)
        for t in range(prompt.shape[1], total):
            if not use_cache:
                logits = self.forward(out[:, :t])[:, -1]
            out[:, t] = _sample(logits, temperature, generator)
            if use_cache and t < total - 1:
                logits = self.forward_step(out[:, t], t, caches)
        return out


def _sample(logits: torch.Tensor, temperature: float, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of ``logits [B, V]``: argmax at temperature 0, else a draw from softmax(logits / T).

    By inverting the cumulative distribution (one uniform per row and a binary search): ``torch.multinomial`` draws
    an exponential per class and costs ~15x more at V = 257, more than a whole RNN decoding step of a small model.
    """
    if temperature == 0:
        return logits.argmax(-1)
    cdf = torch.softmax(logits.float() / temperature, dim=-1).cumsum_(-1)
    u = torch.rand(cdf.shape[0], 1, generator=generator, device=cdf.device, dtype=cdf.dtype) * cdf[:, -1:]
    # First class whose cumulative mass exceeds u; the clamp guards u rounding up to the total.
    return torch.searchsorted(cdf, u, right=True).squeeze(-1).clamp_(max=cdf.shape[-1] - 1)
