"""The EMA's CPU update as one compiled kernel (numba): ``shadow.lerp_(live, w)`` over many tensors at once.

Why a kernel: ``torch._foreach_lerp_`` on the CPU is a loop of ``lerp_`` calls, each paying a few microseconds of
dispatch and, above ATen's grain size, an OpenMP fork/join; a model of 2000 small tensors then averages at ~1.5x
the cost of one ``lerp_`` over a flat buffer of the same bytes. Here the tensors are described once by addresses
and lengths (cut into pieces of at most ``PIECE`` elements so that the threads get equal shares), and one parallel
loop over the pieces does the arithmetic, with no per-tensor dispatch.

The arithmetic is ATen's: ``s + w (l - s)`` for ``|w| < 0.5``, else ``l - (l - s)(1 - w)`` (so ``w = 1`` copies
``l`` exactly), in the tensors' dtype. ATen's vectorised loop fuses the multiply-add and this one need not, so the
two agree to one rounding, not bit for bit; ``torch._foreach_lerp_`` is the slow twin the tests compare against.
"""

import numba
import numpy as np
import torch
from numba import types
from numba.extending import intrinsic

PIECE = 1 << 16  # elements per work item: ~0.8 MB of traffic in fp32, far above the loop's fixed cost
DTYPES = {torch.float32: np.float32, torch.float64: np.float64}  # what the kernel handles; the rest uses _foreach


@intrinsic
def _pointer(typingctx, address, like):
    """A pointer of ``like``'s element type at the integer ``address`` (a tensor's ``data_ptr()``)."""
    if not (isinstance(address, types.Integer) and isinstance(like, types.Array)):
        return None

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(sig.return_type))

    return types.CPointer(like.dtype)(address, like), codegen


@numba.njit(parallel=True, nogil=True, cache=True)
def _lerp_pieces(shadow_at, live_at, sizes, weights):
    """For each piece p: the ``sizes[p]`` elements at ``shadow_at[p]`` become lerp(shadow, live at ``live_at[p]``,
    w); ``weights = [w, 1 - w]`` in the tensors' dtype."""
    w, rest = weights[0], weights[1]
    small = abs(w) < 0.5
    for p in numba.prange(len(sizes)):
        n = sizes[p]
        s = numba.carray(_pointer(shadow_at[p], weights), n)
        x = numba.carray(_pointer(live_at[p], weights), n)
        if small:
            for i in range(n):
                s[i] = s[i] + w * (x[i] - s[i])
        else:
            for i in range(n):
                s[i] = x[i] - (x[i] - s[i]) * rest


class LerpPieces:
    """``shadow.lerp_(live, w)`` for lists of contiguous CPU tensors of one dtype in ``DTYPES``, in one call.

    Holds the tensors, so the addresses stay valid; a caller that replaces a live tensor's storage builds a new one.
    """

    def __init__(self, shadows: list[torch.Tensor], lives: list[torch.Tensor]) -> None:
        self.shadows, self.lives = shadows, lives
        self.dtype = DTYPES[shadows[0].dtype]
        starts, sizes = [], []
        for shadow, live in zip(shadows, lives, strict=True):
            if not (shadow.is_contiguous() and live.is_contiguous() and shadow.dtype == live.dtype == shadows[0].dtype
                    and shadow.device.type == live.device.type == "cpu" and shadow.shape == live.shape):
                raise ValueError("LerpPieces: needs contiguous CPU tensors of one dtype and matching shapes")
            n, size = shadow.numel(), shadow.element_size()
            for a in range(0, n, PIECE):
                starts.append((shadow.data_ptr() + a * size, live.data_ptr() + a * size))
                sizes.append(min(PIECE, n - a))
        at = np.array(starts, dtype=np.int64).reshape(-1, 2)
        self.shadow_at, self.live_at = at[:, 0].copy(), at[:, 1].copy()
        self.sizes = np.array(sizes, dtype=np.int64)

    def __call__(self, weight: float) -> None:
        w = self.dtype(weight)
        numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))
        _lerp_pieces(self.shadow_at, self.live_at, self.sizes, np.array([w, self.dtype(1) - w], dtype=self.dtype))
