"""Paired tests (McNemar, bootstrap) by hand."""

from __future__ import annotations

import numpy as np
import pytest

from rrjax import metrics as M

def test_mcnemar_exact_by_hand():
    a = np.array([1, 1, 1, 0, 0, 1], bool)
    b = np.array([0, 0, 0, 0, 1, 1], bool)
    r = M.mcnemar_exact(a, b)
    assert (int(r.a_only), int(r.b_only)) == (3, 1)
    assert float(r.p_value) == pytest.approx(2 * (1 + 4) / 16)  # 2 * P(X <= 1), X ~ Bin(4, 1/2)
    assert float(r.difference) == pytest.approx(2 / 6)
    r = M.mcnemar_exact(np.ones(10, bool), np.zeros(10, bool))
    assert float(r.p_value) == pytest.approx(2 / 1024)
    assert float(M.mcnemar_exact(a, a).p_value) == 1.0
    # Vectorised over leading grid axes.
    grid = M.mcnemar_exact(np.stack([a, a]), np.stack([b, a]))
    np.testing.assert_allclose(grid.p_value, [0.625, 1.0])


def test_paired_bootstrap():
    rng = np.random.default_rng(2)
    n = 400
    a = rng.random(n) < 0.7
    b = a.copy()
    flip = rng.choice(n, 60, replace=False)
    b[flip] = False  # b is worse on 60 samples where a... may already be False
    same = M.paired_bootstrap(a, a, n_boot=500)
    assert float(same.difference) == 0 and np.all(same.ci == 0) and float(same.p_value) == 1.0
    r = M.paired_bootstrap(a, b, n_boot=4000, seed=3)
    assert float(r.difference) == pytest.approx(a.mean() - b.mean())
    assert 0 < r.ci[0] < r.difference < r.ci[1]
    assert float(r.p_value) < 0.01
    # The paired interval is much tighter than the unpaired (independent) one.
    se_unpaired = np.sqrt(a.var() / n + b.var() / n)
    assert (r.ci[1] - r.ci[0]) < 2 * 1.96 * se_unpaired * 0.8
    # Deterministic for a seed; vectorised over leading axes.
    again = M.paired_bootstrap(a, b, n_boot=4000, seed=3)
    np.testing.assert_array_equal(r.ci, again.ci)
    grid = M.paired_bootstrap(np.stack([a, a]), np.stack([b, a]), n_boot=300)
    assert grid.ci.shape == (2, 2) and grid.difference[1] == 0


