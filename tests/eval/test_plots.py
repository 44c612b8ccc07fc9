"""kexue.eval.plots.image_grid: every tile lands in its cell, gaps and empty cells hold the fill value."""

import numpy as np
import torch

from kexue.eval.plots import image_grid


def test_tiles_row_by_row_with_gaps_and_fill():
    images = torch.arange(5 * 3 * 2 * 4, dtype=torch.float32).view(5, 3, 2, 4)  # 5 tiles, 3 channels, 2x4
    out = image_grid(images, 2, pad=1, fill=-1.0)
    assert out.shape == (3 * 3 + 1, 2 * 5 + 1, 3)  # 3 rows of (2 + 1), 2 columns of (4 + 1), plus the frame
    for i in range(5):
        r, c = divmod(i, 2)
        cell = out[1 + 3 * r : 1 + 3 * r + 2, 1 + 5 * c : 1 + 5 * c + 4]
        assert np.array_equal(cell, images[i].permute(1, 2, 0).numpy())
    assert (out[1 + 6 : 3 + 6, 6:10] == -1).all()  # the empty sixth cell
    assert (out[0] == -1).all() and (out[:, 0] == -1).all() and (out[-1] == -1).all() and (out[:, 5] == -1).all()


def test_one_channel_gives_a_2d_array_without_gaps_by_default():
    images = torch.rand(4, 1, 3, 3)
    out = image_grid(images, 2)
    assert out.shape == (6, 6)
    assert np.array_equal(out[3:, :3], images[2, 0].numpy())
