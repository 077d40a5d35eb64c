"""rrjax.evaluate: RA and RR against closed forms on a linear model, shapes and intervals."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import rrjax
from rrjax import metrics as M


def _sigmoid(s):
    return 1 / (1 + np.exp(-s))


def test_fgsm_ra_and_rr_match_closed_form(linear):
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(200, 24)).astype(np.float32)
    y = linear.labels(x)
    eps = np.array([0.0, 0.02, 0.05, 0.1, 0.2], np.float32)
    tol = np.array([0.0, 0.05, 0.1, 0.25, 0.5, 1.0], np.float32)
    res = rrjax.evaluate(linear.logits_fn, x, y, attack="fgsm", eps=eps, tolerance=tol, key=jax.random.key(0))
    assert res.ra.shape == (5,) and res.rr.shape == (5, 6) and res.rr_ci.shape == (5, 6, 2)
    assert res.p_adv.shape == (5, 200, 2) and res.shift.shape == (5, 200) and res.robust.shape == (5, 6, 200)
    s = linear.score(x)
    for i, e in enumerate(eps):
        lo, hi = linear.extreme_scores(x, e)
        s_adv = np.where(y == 1, lo, hi)  # FGSM on a linear model is the exact optimum
        shift = np.abs(_sigmoid(s_adv) - _sigmoid(s))  # linf shift of a 2-class softmax
        np.testing.assert_allclose(res.shift[i], shift, atol=2e-6)
        for j, b in enumerate(tol):
            clear = (np.abs(shift - b) > 1e-5) | (shift == b)  # drop float near-ties only
            assert clear.mean() > 0.9
            assert res.robust[i, j][clear].mean() == pytest.approx((shift[clear] <= b).mean())
        assert res.ra[i] == pytest.approx(np.mean(~linear.linf_adversarial(x, y, e)))
    # eps = 0: RA equals clean accuracy and every sample is robust at every tolerance.
    assert res.ra[0] == res.clean_accuracy == 1.0
    np.testing.assert_array_equal(res.rr[0], 1.0)
    # Counts, intervals and per-sample arrays agree.
    np.testing.assert_allclose(res.rr, res.robust.mean(-1))
    np.testing.assert_allclose(res.ra_ci, M.binomial_ci(res.correct.sum(-1), 200))
    assert np.all((res.ra_ci[:, 0] <= res.ra) & (res.ra <= res.ra_ci[:, 1]))


def test_strict_rr_and_norm_options(linear):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(64, 24)).astype(np.float32)
    y = linear.labels(x)
    kw = dict(attack="pgd", eps=[0.05, 0.2], tolerance=[0.2, 1.0], key=jax.random.key(0), steps=5)
    plain = rrjax.evaluate(linear.logits_fn, x, y, **kw)
    strict = rrjax.evaluate(linear.logits_fn, x, y, require_same_label=True, **kw)
    # At b = 1 every sample passes the tolerance; strict RR is then exactly RA (labels kept
    # == correct, since every clean prediction here is correct).
    np.testing.assert_allclose(plain.rr[:, 1], 1.0)
    np.testing.assert_allclose(strict.rr[:, 1], strict.ra)
    assert np.all(strict.rr <= plain.rr)
    l1 = rrjax.evaluate(linear.logits_fn, x, y, shift_norm="l1", **kw)
    np.testing.assert_allclose(l1.shift, 2 * plain.shift, rtol=1e-5)


def test_prob_shift_attack_beats_ce_on_the_shift(linear):
    rng = np.random.default_rng(2)
    x = rng.uniform(0.2, 0.8, size=(64, 24)).astype(np.float32)
    y = linear.labels(x)
    kw = dict(attack="pgd", eps=[0.02, 0.05], tolerance=np.linspace(0, 1, 11), key=jax.random.key(0), steps=10)
    shift = rrjax.evaluate(linear.logits_fn, x, y, loss="prob_shift", restarts=3, **kw)
    ce = rrjax.evaluate(linear.logits_fn, x, y, loss="ce", **kw)
    assert np.all(shift.shift >= ce.shift - 1e-6)
    assert np.all(shift.rr <= ce.rr)


def test_prob_shift_attack_maximises_the_rr_norm(linear):
    seen = {}

    def spy(logits_fn, x, y, eps, *, key, **kwargs):
        seen.update(kwargs)
        return np.broadcast_to(x, (len(eps),) + x.shape)

    x = np.full((4, 24), 0.5, np.float32)
    rrjax.evaluate(linear.logits_fn, x, linear.labels(x), attack=spy, eps=[0.1], tolerance=0.1,
                   key=jax.random.key(0), shift_norm="l2", loss="prob_shift")
    assert seen == {"loss": "prob_shift", "shift_norm": "l2"}


def test_custom_attack_callable_and_attack_norm(linear):
    x = np.full((4, 24), 0.5, np.float32)
    y = linear.labels(x)

    def identity_attack(logits_fn, x, y, eps, *, key):
        return np.broadcast_to(x, (len(eps),) + x.shape)

    res = rrjax.evaluate(linear.logits_fn, x, y, attack=identity_attack, eps=[0.1, 0.2], tolerance=0.0,
                         key=jax.random.key(0))
    np.testing.assert_array_equal(res.rr, 1.0)
    l2 = rrjax.evaluate(linear.logits_fn, x, y, attack="pgd", norm="l2", eps=0.3, tolerance=0.0,
                        key=jax.random.key(0), steps=3)
    assert l2.ra.shape == (1,)


@pytest.mark.parametrize(
    "shift, message",
    [(lambda x, e: x + 2 * e, "beyond ε"), (lambda x, e: x * 0 - 0.5, r"must stay in \[0, 1\]"),
     (lambda x, e: x * np.nan, "NaN or inf")],
)
def test_a_faulty_custom_attack_is_refused(linear, shift, message):
    def faulty(logits_fn, x, y, eps, *, key):
        return np.stack([shift(np.asarray(x), e)
                         for e in eps]).astype(np.float32)

    x = np.full((4, 24), 0.5, np.float32)
    with pytest.raises(ValueError, match=message):
        rrjax.evaluate(linear.logits_fn, x, linear.labels(x), attack=faulty, eps=[0.1], tolerance=0.1,
                       key=jax.random.key(0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(tolerance=-1.0), "tolerance has value -1 < 0"),
        (dict(attack="nope"), "unknown attack 'nope'"),
        (dict(shift_norm="l9"), "shift_norm='l9' is not valid"),
        (dict(ci_method="bayes"), "ci_method='bayes' is not valid"),
        (dict(attack=3), "attack must be an attack name or a callable"),
    ],
)
def test_bad_input(linear, kwargs, message):
    x = np.full((4, 24), 0.5, np.float32)
    args = dict(attack="fgsm", eps=0.1, tolerance=0.1, key=jax.random.key(0))
    args.update(kwargs)
    with pytest.raises(ValueError) as e:
        rrjax.evaluate(linear.logits_fn, x, linear.labels(x), **args)
    assert message in str(e.value)


def test_extreme_logits_give_finite_probabilities_and_shifts(linear):
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(32, 24)).astype(np.float32)
    y = linear.labels(x)
    huge = lambda v: 1e4 * linear.logits_fn(v)  # noqa: E731  logits of order ±1e4
    for attack, kw in (("fgsm", {}), ("pgd", {"steps": 3}), ("cw_bounded", {"steps": 3}),
                       ("cw_l2", {"steps": 20, "binary_search_steps": 2})):
        res = rrjax.evaluate(huge, x, y, attack=attack, eps=[0.0, 0.1], tolerance=[0.0, 0.5], key=jax.random.key(0), **kw)
        assert np.all(np.isfinite(res.p_adv)) and np.all(np.isfinite(res.shift)), attack
        assert np.all((res.p_adv >= 0) & (res.p_adv <= 1)), attack
        assert res.ra[0] == res.clean_accuracy == 1.0


@pytest.mark.parametrize("attack, kw", [("fgsm", {}), ("pgd", {"steps": 3}), ("cw_bounded", {"steps": 2})])
def test_nonfinite_outputs_are_counted_never_scored(linear, attack, kw):
    """NaN logits for some inputs: those samples have no verdict (not correct, not robust, not
    in n) and the result says how many; the attack still runs on the others."""
    import jax.numpy as jnp

    rng = np.random.default_rng(4)
    x = rng.uniform(0, 1, size=(40, 24)).astype(np.float32)
    y = linear.labels(x)
    nan_rows = x[:, 0] > 0.8  # this detector is undefined on these inputs
    fn = lambda v: jnp.where((v[:, 0] > 0.8)[:, None], jnp.nan, linear.logits_fn(v))  # noqa: E731
    res = rrjax.evaluate(fn, x, y, attack=attack, eps=[0.0, 0.05], tolerance=[0.0, 1.0], key=jax.random.key(0), **kw)
    assert res.n == 40 and res.nonfinite[0] == nan_rows.sum() and res.n_valid[0] == 40 - nan_rows.sum()
    assert res.ra[0] == 1.0 and res.rr[0, 0] == 1.0  # over the samples with a verdict
    assert not res.correct[0][nan_rows].any() and not res.robust[0][:, nan_rows].any()
    np.testing.assert_allclose(res.ra, res.correct.sum(-1) / res.n_valid)
    assert np.all(np.isfinite(res.shift))
