"""``requires``: tests of the real data sets skip when a set is not fetched, and fail under CI (which fetches)."""

import os

import pytest

from kexue.data import is_available


@pytest.fixture
def requires():
    """``requires(name)``: skip unless data set ``name`` is in the cache; under CI (``CI`` set) fail instead."""

    def check(name: str) -> None:
        if not is_available(name):
            message = f"data set {name!r} is not fetched: run `kexue data fetch {name}` (or `make data`)"
            pytest.fail(message) if os.environ.get("CI") else pytest.skip(message)

    return check
