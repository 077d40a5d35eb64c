"""RA / RR on hand-built probabilities, intervals against published values, paired tests."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import metrics as M

# Three samples, two classes; values are dyadic so every shift is exact in float32.
P_CLEAN = np.array([[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]], np.float32)
P_ADV = np.array(
    [
        [[0.5, 0.5], [1.0, 0.0], [0.25, 0.75]],  # eps 0: nothing moves
        [[0.75, 0.25], [0.5, 0.5], [0.5, 0.5]],  # linf shifts 0.25, 0.5, 0.25
        [[0.0, 1.0], [0.125, 0.875], [0.75, 0.25]],  # linf shifts 0.5, 0.875, 0.5
    ],
    np.float32,
)
Y = np.array([1, 0, 1], np.int32)


def test_robust_accuracy_by_hand():
    # argmax ties go to class 0: [0.5, 0.5] predicts "real".
    # eps0: preds 0,0,1 -> correct F,T,T = 2/3; eps1: preds 0,0,0 -> F,T,F = 1/3;
    # eps2: preds 1,1,0 -> T,F,F = 1/3.
    np.testing.assert_allclose(np.asarray(M.robust_accuracy(P_ADV, Y)), [2 / 3, 1 / 3, 1 / 3], rtol=1e-6)
    assert float(M.robust_accuracy(P_ADV[1], Y)) == pytest.approx(1 / 3)


def test_robust_ratio_by_hand_with_ties_at_the_tolerance():
    tol = [0.0, 0.25, 0.5, 0.875, 1.0]
    rr = np.asarray(M.robust_ratio(P_CLEAN, P_ADV, tol))
    expected = np.array(
        [
            [3, 3, 3, 3, 3],  # all shifts 0 (<= 0 counts: inclusive)
            [0, 2, 3, 3, 3],  # shifts 0.25, 0.5, 0.25: two equal 0.25 exactly
            [0, 0, 2, 3, 3],  # shifts 0.5, 0.875, 0.5
        ]
    ) / 3
    np.testing.assert_allclose(rr, expected, rtol=1e-6)
    assert rr.shape == (3, 5)


def test_robust_ratio_norms_and_strict_variant_by_hand():
    # l1 shifts are twice the linf ones for two classes; l2 is sqrt(2) times.
    tol = [0.5, 1.0]
    np.testing.assert_allclose(np.asarray(M.robust_ratio(P_CLEAN, P_ADV[1], tol, norm="l1")), [2 / 3, 1.0])
    np.testing.assert_allclose(np.asarray(M.robust_ratio(P_CLEAN, P_ADV[1], 0.5 * np.sqrt(2) + 1e-6, norm="l2")), 1.0)
    np.testing.assert_allclose(np.asarray(M.robust_ratio(P_CLEAN, P_ADV[1], 0.5, norm="l2")), 2 / 3)
    # Strict: labels must also stay. eps1 preds 0,0,0 vs clean preds 0,0,1 -> sample 2 changes.
    np.testing.assert_allclose(
        np.asarray(M.robust_ratio(P_CLEAN, P_ADV[1], [0.25, 1.0], require_same_label=True)), [1 / 3, 2 / 3]
    )


def test_count_paths_agree_and_mask_drops_padding():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(4, 50, 3)) * 3
    p_adv = jax.nn.softmax(jnp.asarray(logits, jnp.float32))
    p_clean = jax.nn.softmax(jnp.asarray(rng.normal(size=(50, 3)) * 3, jnp.float32))
    y = jnp.asarray(rng.integers(0, 3, 50), jnp.int32)
    tol = jnp.linspace(0, 1, 11)
    for norm in ("linf", "l1", "l2"):
        for strict in (False, True):
            counts = M.robust_ratio_counts(p_clean, p_adv, tol, norm=norm, require_same_label=strict)
            o = M.outcomes(p_clean, p_adv, y, norm=norm)
            robust = M.robust_outcomes(o.shift, tol, same_label=o.same_label if strict else None)
            np.testing.assert_array_equal(np.asarray(counts), robust.sum(-1))
            np.testing.assert_array_equal(
                np.asarray(M.robust_counts(o.shift, tol, same_label=o.same_label if strict else None)), robust.sum(-1))
            np.testing.assert_array_equal(np.asarray(M.accuracy_counts(p_adv, y)), np.asarray(o.correct).sum(-1))
            # The definition by hand: φ = 1[‖Δp‖ ≤ b], the norm over the class axis.
            d = np.asarray(p_adv, np.float64) - np.asarray(p_clean, np.float64)[None]
            by_hand = {"linf": np.abs(d).max(-1), "l1": np.abs(d).sum(-1), "l2": np.sqrt((d * d).sum(-1))}[norm]
            np.testing.assert_allclose(np.asarray(o.shift), np.where(by_hand <= 1e-6, 0, by_hand), atol=1e-6)
    # Padding: appending junk samples with mask False leaves every count unchanged.
    pad = 14
    p_adv_pad = jnp.concatenate([p_adv, jnp.tile(p_adv[:, :1], (1, pad, 1))], axis=1)
    p_clean_pad = jnp.concatenate([p_clean, jnp.tile(p_clean[1:2], (pad, 1))])
    y_pad = jnp.concatenate([y, jnp.zeros(pad, jnp.int32)])
    mask = jnp.arange(64) < 50
    np.testing.assert_array_equal(
        np.asarray(M.robust_ratio_counts(p_clean_pad, p_adv_pad, tol, mask=mask)),
        np.asarray(M.robust_ratio_counts(p_clean, p_adv, tol)),
    )
    np.testing.assert_array_equal(
        np.asarray(M.accuracy_counts(p_adv_pad, y_pad, mask)), np.asarray(M.accuracy_counts(p_adv, y))
    )


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


def test_tolerance_linearity_by_hand():
    b = np.array([0.0, 0.5, 1.0])
    assert M.tolerance_linearity(b, [0.2, 0.5, 0.8]) == pytest.approx((1.0, 0.0))
    # A step: RR jumps from 0 to 1 between b=0 and b=0.5. Fit line: slope 1, intercept 1/6;
    # residuals -1/6, 1/3, -1/6 -> SSE 1/6, SST 2/3 -> R² = 0.75; chord 0, .5, 1 -> gap 0.5.
    assert M.tolerance_linearity(b, [0.0, 1.0, 1.0]) == pytest.approx((0.75, 0.5))
    assert M.tolerance_linearity(b, [1.0, 1.0, 1.0]) == (1.0, 0.0)
    with pytest.raises(ValueError, match="increasing tolerances"):
        M.tolerance_linearity([0.0, 0.0], [1.0, 1.0])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: M.robust_ratio(P_CLEAN, P_ADV, -0.1), "tolerance has value -0.1"),
        (lambda: M.robust_ratio(P_CLEAN, P_ADV, [0.1, np.nan]), "tolerance contains NaN"),
        (lambda: M.robust_ratio(P_CLEAN, P_ADV * 2, 0.1), "pass softmax outputs, not logits"),
        (lambda: M.robust_ratio(P_CLEAN[:2], P_ADV, 0.1), "same N and C"),
        (lambda: M.robust_ratio(P_CLEAN, P_ADV, 0.1, norm="l3"), "norm='l3' is not valid"),
        (lambda: M.robust_accuracy(P_ADV, [0, 1]), "expected (3,)"),
        (lambda: M.robust_accuracy(P_ADV, [0, 1, 2]), "expected values in {0, 1}"),
        (lambda: M.mcnemar_exact([1, 0], [1, 0, 1]), "same samples"),
        (lambda: M.binomial_ci(3, 2), "0 <= successes <= n"),
        (lambda: M.binomial_ci(1, 2, method="exact"), "method='exact' is not valid"),
    ],
)
def test_bad_input_is_named(call, message):
    with pytest.raises(ValueError, match=None) as e:
        call()
    assert message in str(e.value)


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
