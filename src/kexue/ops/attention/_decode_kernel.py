"""One decoding step of causal linear attention as a single compiled loop (numba), for inference on CPU.

Why: a step is ~65k multiply-adds at B=1, H=8, C=M=64, while its torch form (:func:`kexue.ops.attention.causal.
step_mapped` plus the feature map) runs ~13 tensor ops whose dispatch costs ~2.5 us each, so decoding sat at
~45 us per token on the project's machine, nearly all overhead. This kernel does the map, the rank-1 update of
(S, z), the read-out and the division in one call. It writes a new state (out of place, like the torch form, so an
old state stays valid) and has no autograd: :func:`kexue.ops.attention.linear_attention_step` uses it only for CPU
tensors that need no gradient and falls back to the torch form otherwise, or when numba is not installed. Tests tie
the two forms together.
"""

import math

import numpy as np
import torch

try:
    import numba
except ImportError:  # numba is optional: the torch form is used instead
    numba = None

_kernel = None


def _compile():
    # cache=True: the first call compiles (seconds); the cache makes that once per machine, not once per process.
    @numba.njit(cache=True, nogil=True)
    def step(q, k, v, s, z, s_out, z_out, out, eps, elu):
        rows, c_dim = q.shape
        m_dim = v.shape[1]
        phi_q = np.empty(c_dim, q.dtype)
        phi_k = np.empty(c_dim, q.dtype)
        for r in range(rows):  # one (batch, head) row at a time
            den = 0.0
            for c in range(c_dim):
                a, b = q[r, c], k[r, c]
                if elu:  # elu(x) + 1
                    a = a + 1.0 if a > 0.0 else math.exp(a)
                    b = b + 1.0 if b > 0.0 else math.exp(b)
                phi_q[c], phi_k[c] = a, b
                zc = z[r, c] + b
                z_out[r, c] = zc
                den += a * zc
            for m in range(m_dim):
                out[r, m] = 0.0
            for c in range(c_dim):
                a, b = phi_q[c], phi_k[c]
                for m in range(m_dim):
                    x = s[r, c, m] + b * v[r, m]
                    s_out[r, c, m] = x
                    out[r, m] += a * x
            inv = 1.0 / (den + eps)
            for m in range(m_dim):
                out[r, m] *= inv

    return step


def available() -> bool:
    """Whether the compiled step can run (numba importable)."""
    return numba is not None


def step(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, s: torch.Tensor, z: torch.Tensor, eps: float,
         elu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``q, k [B, H, C]`` (raw if ``elu``, else already mapped), ``v [B, H, M]``, state ``s [B, H, C, M]``,
    ``z [B, H, C]``, all contiguous CPU float32/float64 of one dtype -> ``(out [B, H, M], s_new, z_new)``."""
    global _kernel
    if _kernel is None:
        _kernel = _compile()
    s_new, z_new = torch.empty_like(s), torch.empty_like(z)
    out = v.new_empty(v.shape)
    b, h, c = q.shape
    rows = b * h
    _kernel(q.numpy().reshape(rows, c), k.numpy().reshape(rows, c), v.numpy().reshape(rows, -1),
            s.numpy().reshape(rows, c, -1), z.numpy().reshape(rows, c), s_new.numpy().reshape(rows, c, -1),
            z_new.numpy().reshape(rows, c), out.numpy().reshape(rows, -1), eps, elu)
    return out, s_new, z_new
