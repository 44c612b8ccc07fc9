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


def image_grid(images: Any, cols: int, *, pad: int = 0, fill: float = 1.0) -> Any:
    """Tile images row by row into one array for ``imshow``.

    Args:
        images: ``[N, C, H, W]`` tensor (any device; values as they are, e.g. [0, 1] or 0..255).
        cols: tiles per row; the last row is filled up with ``fill``.
        pad: pixels of ``fill`` between tiles and around the grid.
        fill: value of the padding and of empty tiles.

    Returns:
        NumPy ``[rows·(H + pad) + pad, cols·(W + pad) + pad]`` for C = 1, else with a trailing channel axis ``C``.
    """
    import math

    import torch
    import torch.nn.functional as F

    x = images.detach().float().cpu()
    n, c, h, w = x.shape
    rows = math.ceil(n / cols)
    x = torch.cat([x, x.new_full((rows * cols - n, c, h, w), fill)])
    x = F.pad(x, (pad, 0, pad, 0), value=fill)  # each tile's left and top gap
    x = x.view(rows, cols, c, h + pad, w + pad).permute(2, 0, 3, 1, 4).reshape(c, rows * (h + pad), cols * (w + pad))
    x = F.pad(x, (0, pad, 0, pad), value=fill).permute(1, 2, 0).numpy()  # the right and bottom frame
    return x[..., 0] if c == 1 else x
