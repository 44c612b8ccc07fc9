"""Figure helpers. matplotlib is imported inside functions, so importing kexue.eval never pulls it in."""

from typing import Any


def subplots(nrows: int = 1, ncols: int = 1, *, width: float = 4.0, height: float = 3.2, **kwargs: Any):
    """``plt.subplots`` on the headless Agg backend, sized per panel; returns ``(fig, axes)``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    kwargs.setdefault("squeeze", False)
    kwargs.setdefault("constrained_layout", True)
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), **kwargs)
