"""FGSM / FGM: closed-form optimum on a linear model, one gradient for the whole ε grid."""

from __future__ import annotations

import collections

import jax
import jax.extend.core as jex
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax.attacks import fgsm
from rrjax.attacks.fgsm import _fgsm_grid
from rrjax.attacks import _common as C

EPS = np.array([0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2], np.float32)


def _predict(logits_fn, x):
    return np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1))


def _clear_of_boundary(linear, x, y, eps_grid, margin=1e-4):
    """Samples whose exact worst-case score is not within ``margin`` of the decision boundary."""
    keep = np.ones(len(x), bool)
    for e in eps_grid:
        lo, hi = linear.extreme_scores(x, e)
        keep &= np.abs(np.where(y == 1, lo, hi)) > margin
    return keep


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_linf_matches_closed_form_robust_accuracy(linear, loss):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(400, 24)).astype(np.float32)
    y = linear.labels(x)
    keep = _clear_of_boundary(linear, x, y, EPS)
    x, y = x[keep], y[keep]
    x_adv = fgsm(linear.logits_fn, x, y, EPS, key=jax.random.key(0), loss=loss)
    assert x_adv.shape == (len(EPS),) + x.shape
    for e, xe in zip(EPS, x_adv):
        ra = np.mean(_predict(linear.logits_fn, xe) == y)
        ra_exact = np.mean(~linear.linf_adversarial(x, y, e))
        assert ra == ra_exact, (e, ra, ra_exact)
    # The grid is informative: accuracy falls from 1 to well below 1.
    assert np.mean(_predict(linear.logits_fn, x_adv[-1]) == y) < 0.5


def test_l2_step_is_along_the_normal(linear):
    rng = np.random.default_rng(2)
    x = rng.uniform(0.4, 0.6, size=(8, 24)).astype(np.float32)
    y = linear.labels(x)
    eps = np.float32(0.05)  # small enough that the box is inactive
    x_adv = np.asarray(fgsm(linear.logits_fn, x, y, eps, key=jax.random.key(0), norm="l2"))
    unit = linear.w / np.linalg.norm(linear.w)
    expected = x - eps * np.where(y == 1, 1.0, -1.0)[:, None] * unit[None]
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)


def test_one_gradient_serves_the_whole_grid(tiny_cnn):
    """The compiled program has the same convolutions for E=1 and E=16: one backward pass."""
    logits_fn = tiny_cnn((8, 8, 3))
    x = jnp.full((4, 8, 8, 3), 0.5)
    y = jnp.zeros(4, jnp.int32)
    spec = C.LossSpec()

    def heavy_ops(e):
        jaxpr = jax.make_jaxpr(lambda eps: _fgsm_grid(logits_fn, x, y, eps, norm="linf", spec=spec))(
            jnp.zeros(e)
        )
        ops = collections.Counter()

        def walk(jx):
            for eqn in jx.eqns:
                if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
                    ops[(eqn.primitive.name, tuple(eqn.outvars[0].aval.shape))] += 1
                for p in eqn.params.values():
                    for sub in p if isinstance(p, (tuple, list)) else (p,):
                        if isinstance(sub, jex.ClosedJaxpr):
                            walk(sub.jaxpr)
                        elif isinstance(sub, jex.Jaxpr):
                            walk(sub)

        walk(jaxpr.jaxpr)
        return ops

    one, sixteen = heavy_ops(1), heavy_ops(16)
    assert one and one == sixteen
    # Forward + backward of two conv layers and a dense layer, all on the N=4 batch only.
    assert all(shape[0] == 4 for (_, shape) in one)


def test_grid_equals_separate_calls(tiny_cnn):
    logits_fn = tiny_cnn((8, 8, 3))
    x = jax.random.uniform(jax.random.key(3), (5, 8, 8, 3))
    y = jnp.array([0, 1, 0, 1, 1], jnp.int32)
    grid = fgsm(logits_fn, x, y, EPS, key=jax.random.key(0))
    for e, xe in zip(EPS, grid):
        np.testing.assert_array_equal(np.asarray(xe), np.asarray(fgsm(logits_fn, x, y, e, key=jax.random.key(0))))


def test_prob_shift_moves_away_from_clean_prediction(linear):
    """At x' = x the shift has no gradient; the tie-breaker must push away from the prediction."""
    rng = np.random.default_rng(4)
    x = rng.uniform(0.2, 0.8, size=(64, 24)).astype(np.float32)
    y = linear.labels(x)
    ce = fgsm(linear.logits_fn, x, y, 0.05, key=jax.random.key(0), loss="ce")
    shift = fgsm(linear.logits_fn, x, y, 0.05, key=jax.random.key(0), loss="prob_shift")
    np.testing.assert_array_equal(np.asarray(ce), np.asarray(shift))
    assert not np.allclose(np.asarray(shift), x)


def test_targeted_moves_toward_target(linear):
    rng = np.random.default_rng(5)
    x = rng.uniform(0, 1, size=(64, 24)).astype(np.float32)
    y = linear.labels(x)
    target = 1 - y
    x_adv = fgsm(linear.logits_fn, x, y, 0.2, key=jax.random.key(0), target=target)
    lo, hi = linear.extreme_scores(x, 0.2)
    s_adv = linear.score(np.asarray(x_adv))
    np.testing.assert_allclose(s_adv, np.where(target == 1, hi, lo), rtol=1e-5, atol=1e-5)
