"""The Shuttle anomaly-detection set (when fetched)."""

import os

import numpy as np
import pytest

from kexue.data import is_available, load_shuttle


# Copied from tests/data/test_images.py::requires
def requires(name: str) -> None:
    """Skip when set ``name`` is not in the data cache, except under CI (which runs `make data` first)."""
    if not is_available(name):
        message = f"data set {name!r} is not fetched: run `kexue data fetch {name}` (or `make data`)"
        pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)


def test_shuttle():
    requires("shuttle")
    x, y = load_shuttle()
    assert x.shape == (49_097, 9) and x.dtype == np.float32 and y.dtype == np.int64
    assert int(y.sum()) == 3_511 and set(np.unique(y).tolist()) == {0, 1}
    assert (x == np.round(x)).all()  # the Statlog features are integers
