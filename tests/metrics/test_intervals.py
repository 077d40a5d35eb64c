"""Binomial intervals against published values; coverage."""

from __future__ import annotations

import numpy as np
import pytest

from rrjax import metrics as M

def test_wilson_and_clopper_pearson_against_published_values():
    # Wilson 95% for 0/10 and 5/10 (Newcombe 1998, Table I style values);
    # Clopper-Pearson 95% exact bounds for 0/10 (1 - 0.025**(1/10)) and 5/10.
    w = M.binomial_ci([0, 5, 81], [10, 10, 263])
    np.testing.assert_allclose(w[0], [0.0, 0.2775], atol=1e-4)
    np.testing.assert_allclose(w[1], [0.2366, 0.7634], atol=1e-4)
    np.testing.assert_allclose(w[2], [0.2553, 0.3662], atol=1e-4)  # Newcombe (1998) example 81/263
    cp = M.binomial_ci([0, 5], [10, 10], method="clopper_pearson")
    np.testing.assert_allclose(cp[0], [0.0, 1 - 0.025 ** (1 / 10)], atol=1e-6)
    np.testing.assert_allclose(cp[1], [0.1871, 0.8129], atol=1e-4)


@pytest.mark.parametrize("method", ["wilson", "clopper_pearson"])
def test_interval_contains_the_estimate_and_ends_exactly_at_0_and_1(method):
    # Float rounding put Wilson's lower bound for 0/64 at 3.5e-18 > 0 (a negative error bar).
    for n in (1, 7, 64, 96, 500, 1001):
        k = np.arange(n + 1)
        ci = M.binomial_ci(k, n, method=method)
        assert np.all(ci[:, 0] <= k / n) and np.all(k / n <= ci[:, 1])
        assert ci[0, 0] == 0.0 and ci[-1, 1] == 1.0


def test_clopper_pearson_coverage_is_at_least_nominal():
    rng = np.random.default_rng(1)
    n, p = 40, 0.83
    k = rng.binomial(n, p, size=4000)
    ci = M.binomial_ci(k, n, method="clopper_pearson")
    coverage = np.mean((ci[:, 0] <= p) & (p <= ci[:, 1]))
    assert coverage >= 0.95


