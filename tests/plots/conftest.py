"""One synthetic sweep per test module (see tests/plots/fixtures.py)."""

from __future__ import annotations

import pytest

from rrjax import records as R
from tests.plots.fixtures import make_sweep


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return make_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def rows(sweep):
    return R.load_records(sweep)
