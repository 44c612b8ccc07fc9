"""Seeding in one place: Python, NumPy and torch (CPU and CUDA) from a single integer."""

import os
import random

import numpy as np
import torch


def seed_everything(seed: int, *, deterministic: bool = False) -> torch.Generator:
    """Seed every global RNG from ``seed`` and return a fresh ``torch.Generator`` seeded with it.

    Args:
        seed: an integer in [0, 2**32).
        deterministic: also ask torch for deterministic kernels (slower; some ops then raise if they have none).

    Returns:
        A CPU generator seeded with ``seed``, for code that prefers explicit generators over global state.
    """
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32) (NumPy's seed is 32-bit), got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    os.environ["PYTHONHASHSEED"] = str(seed)  # for subprocesses; this interpreter's hash seed is already fixed
    if deterministic:
        torch.use_deterministic_algorithms(True)
    return torch.Generator().manual_seed(seed)
