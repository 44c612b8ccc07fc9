"""The chunked causal op's pool of CPU scratch blocks (:mod:`kexue.ops.attention.causal`), reused from call to call."""

import math
import threading

import torch


class _Scratch(threading.local):
    """Per-thread free lists of CPU scratch blocks for the chunked op, reused from call to call.

    Why: torch's CPU allocator does not cache, and glibc hands large freed blocks back to the OS (blocks of >= 32 MiB
    are mmapped, and free space above 2x the dynamic mmap threshold at the top of the heap is trimmed), so every call
    page-faulted its large temporaries afresh, at ~4 GB/s: at N = 8192 as long as half the arithmetic, unless the
    user tunes malloc. The op's own temporaries (mapped inputs, score blocks, chunk states, backward scratch) come
    from here and go back when backward is done (or at the end of forward when no gradient is wanted), so a training
    step page-faults only the tensors it returns. At most ``SCRATCH_BYTES`` stay held between calls, oldest sizes
    dropped first; :func:`empty_cache` frees them. Not used on CUDA, whose allocator caches already.
    """

    def __init__(self) -> None:
        self.free: dict[tuple, list[torch.Tensor]] = {}
        self.bytes = 0

    def take(self, shape: tuple, like: torch.Tensor) -> torch.Tensor:
        blocks = self.free.get((math.prod(shape), like.dtype)) if like.device.type == "cpu" else None
        if not blocks:
            return like.new_empty(shape)
        block = blocks.pop()
        self.bytes -= block.nbytes
        return block.view(shape)

    def give(self, *blocks: torch.Tensor | None) -> None:
        for block in blocks:
            if block is None or block.device.type != "cpu":
                continue
            key = (block.numel(), block.dtype)
            self.free[key] = self.free.pop(key, [])  # most recently used size last
            self.free[key].append(block)
            self.bytes += block.nbytes
        while self.bytes > SCRATCH_BYTES:
            key = next(iter(self.free))
            self.bytes -= sum(b.nbytes for b in self.free.pop(key))


SCRATCH_BYTES = 1 << 30  # most bytes of scratch kept between calls, per thread
SCRATCH = _Scratch()


def empty_cache() -> None:
    """Frees the scratch blocks that the chunked causal op keeps for reuse in this thread (see :class:`_Scratch`)."""
    SCRATCH.free.clear()
    SCRATCH.bytes = 0
