"""``requires``: tests of the real data sets skip when a set is not fetched; under CI a quick-preset set must be there.

CI runs ``make test``, whose ``make data`` fetches the quick-preset sets (:data:`~kexue.data.fetch.QUICK_SETS`) only:
a missing one of those is a failure there, a missing optional set (emoji) is a skip everywhere.
"""

import os

import pytest

from kexue.data import is_available
from kexue.data.fetch import QUICK_SETS


@pytest.fixture
def requires():
    """``requires(name)``: skip unless data set ``name`` is in the cache; under CI (``CI`` set) a quick set fails."""

    def check(name: str) -> None:
        if not is_available(name):
            message = f"data set {name!r} is not fetched: run `kexue data fetch {name}` (or `make data`)"
            pytest.fail(message) if os.environ.get("CI") and name in QUICK_SETS else pytest.skip(message)

    return check
