"""RA / RR on hand-built probabilities: the output change, outcomes, counts, the summary."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import metrics as M

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




def test_summarise_by_hand():
    # 3 of 4 correct, robust counts 1 and 4 at two tolerances; Wilson 95% for 3/4 by hand:
    # z = 1.959964, centre (3 + z²/2)/(4 + z²), half z/(4 + z²)·sqrt(3·1/4 + z²/4).
    s = M.summarise([3], [[1, 4]], 4)
    z = 1.959963984540054
    centre, half = (3 + z * z / 2) / (4 + z * z), z / (4 + z * z) * np.sqrt(3 / 4 + z * z / 4)
    np.testing.assert_allclose(s.ra, [0.75])
    np.testing.assert_allclose(s.rr, [[0.25, 1.0]])
    np.testing.assert_allclose(s.ra_ci[0], [centre - half, centre + half], rtol=1e-12)
    assert s.rr_ci[0, 1, 1] == 1.0 and s.n.tolist() == [4]
    # n = 0 at an ε (every output non-finite): nothing to estimate, and the summary says so.
    empty = M.summarise([0, 2], [[0], [1]], [0, 2])
    assert np.isnan(empty.ra[0]) and np.isnan(empty.rr_ci[0]).all() and empty.ra[1] == 1.0


def test_nonfinite_outputs_never_become_a_verdict():
    """A NaN probability (from a NaN or inf logit) is neither correct nor robust: the sample is
    left out of n at that ε (and at every ε when its clean output is non-finite)."""
    p_clean = np.array([[0.2, 0.8], [np.nan, np.nan], [0.9, 0.1]], np.float32)
    p_adv = np.array([[[0.2, 0.8], [0.5, 0.5], [np.nan, np.nan]],
                      [[0.6, 0.4], [0.1, 0.9], [0.8, 0.2]]], np.float32)
    y = np.array([1, 1, 0], np.int32)
    o = M.outcomes(jnp.asarray(p_clean), jnp.asarray(p_adv), jnp.asarray(y))
    np.testing.assert_array_equal(np.asarray(o.valid), [[True, False, False], [True, False, True]])
    np.testing.assert_array_equal(np.asarray(o.correct), [[True, False, False], [False, False, True]])
    np.testing.assert_array_equal(np.asarray(o.clean_valid), [True, False, True])
    assert np.all(np.isfinite(np.asarray(o.shift)))
    np.testing.assert_array_equal(np.asarray(M.accuracy_counts(p_adv, y)), [1, 2])  # NaN rows never count
    counts = M.robust_ratio_counts(p_clean, p_adv, np.array([0.0, 1.0], np.float32))
    np.testing.assert_array_equal(np.asarray(counts), [[1, 1], [0, 2]])
