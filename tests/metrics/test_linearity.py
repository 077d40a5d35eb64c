"""R² of RR(b) by hand and its bootstrap against hand-built shift distributions."""

from __future__ import annotations

import numpy as np
import pytest

from rrjax import metrics as M

def test_tolerance_linearity_by_hand():
    b = np.array([0.0, 0.5, 1.0])
    assert M.tolerance_linearity(b, [0.2, 0.5, 0.8]) == pytest.approx((1.0, 0.0))
    # A step: RR jumps from 0 to 1 between b=0 and b=0.5. Fit line: slope 1, intercept 1/6;
    # residuals -1/6, 1/3, -1/6 -> SSE 1/6, SST 2/3 -> R² = 0.75; chord 0, .5, 1 -> gap 0.5.
    assert M.tolerance_linearity(b, [0.0, 1.0, 1.0]) == pytest.approx((0.75, 0.5))
    assert M.tolerance_linearity(b, [1.0, 1.0, 1.0]) == (1.0, 0.0)
    with pytest.raises(ValueError, match="increasing tolerances"):
        M.tolerance_linearity([0.0, 0.0], [1.0, 1.0])


def test_linearity_bootstrap_against_hand_built_shift_distributions():
    tol = np.linspace(0.0, 1.0, 11)
    # Shifts spread evenly over (0, 1]: RR(b) = b exactly, a straight line (R² = 1).
    even = (np.arange(1, 1001) / 1000.0).astype(np.float32)
    # Half the samples unmoved, half moved by 1: RR = 0.5 until b = 1, then 1.
    bimodal = np.r_[np.zeros(500), np.ones(500)].astype(np.float32)
    res = M.linearity_bootstrap(even, bimodal, tol, n_boot=500, seed=1)
    rr_bimodal = np.r_[np.full(10, 0.5), 1.0]
    slope, icpt = np.polyfit(tol, rr_bimodal, 1)  # R² by an independent least-squares fit
    r2_bimodal = 1 - np.sum((rr_bimodal - (slope * tol + icpt)) ** 2) / np.sum((rr_bimodal - rr_bimodal.mean()) ** 2)
    np.testing.assert_allclose(res.r2_a, 1.0, atol=1e-6)
    np.testing.assert_allclose(res.r2_b, r2_bimodal, atol=1e-9)
    assert res.r2_a_ci[0] > 0.99 and res.r2_a_ci[1] <= 1.0 + 1e-12
    assert res.r2_b_ci[0] <= r2_bimodal <= res.r2_b_ci[1]
    assert res.diff_ci[0] > 0.5  # clearly more linear, and the CI says so
    # Point estimates agree with tolerance_linearity on the RR curve.
    rr = (even[None, :] <= tol[:, None].astype(np.float32)).mean(1)
    assert res.r2_a == pytest.approx(M.tolerance_linearity(tol, rr)[0], abs=1e-9)
    # Two samples from the same distribution: the difference CI covers 0.
    rng = np.random.default_rng(0)
    same = M.linearity_bootstrap(rng.beta(0.5, 0.5, 400), rng.beta(0.5, 0.5, 300), tol, n_boot=500)
    assert same.diff_ci[0] <= 0.0 <= same.diff_ci[1]
    # Nothing moved: RR is constant, R² is defined as 1.
    assert M.linearity_bootstrap(np.zeros(5), even, tol, n_boot=10).r2_a == 1.0


@pytest.mark.parametrize("kwargs, message", [
    (dict(shift_a=np.array([0.1, np.nan])), "shift_a must be a non-empty 1-D array of finite shifts"),
    (dict(shift_b=np.zeros((2, 2))), "shift_b must be"),
    (dict(tolerance=[0.5, 0.1]), "tolerance must be 1-D, increasing"),
    (dict(n_boot=0), "n_boot"),
])
def test_linearity_bootstrap_rejects_bad_input(kwargs, message):
    args = dict(shift_a=np.array([0.1, 0.2]), shift_b=np.array([0.3]), tolerance=[0.0, 0.5, 1.0])
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        M.linearity_bootstrap(args.pop("shift_a"), args.pop("shift_b"), args.pop("tolerance"), **args)
