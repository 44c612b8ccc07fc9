"""The Shuttle anomaly-detection set (when fetched)."""


import numpy as np

from kexue.data import load_shuttle


def test_shuttle(requires):
    requires("shuttle")
    x, y = load_shuttle()
    assert x.shape == (49_097, 9) and x.dtype == np.float32 and y.dtype == np.int64
    assert int(y.sum()) == 3_511 and set(np.unique(y).tolist()) == {0, 1}
    assert (x == np.round(x)).all()  # the Statlog features are integers
