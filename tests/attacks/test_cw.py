"""Carlini–Wagner L2: minimal distance on a linear model, masking, the ε grid, extremes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax.attacks import _common as C
from rrjax.attacks import cw_l2, cw_l2_minimal


def _inside_box_points(linear, n, seed):
    """Points whose straight path to the boundary stays inside [0,1] (the box is inactive)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.3, 0.7, size=(4 * n, linear.w.size)).astype(np.float32)
    d = linear.l2_distance(x)
    unit = linear.w / np.linalg.norm(linear.w)
    foot = x - (np.sign(linear.score(x)) * d)[:, None] * unit[None]
    ok = np.all((foot > 0.02) & (foot < 0.98), axis=1) & (d > 0.02)
    return x[ok][:n]


def test_minimal_distance_matches_closed_form(linear):
    """|w·x+b| / ||w||_2 within 2% (Adam lr 5e-3, 500 steps, 6 binary-search rounds)."""
    x = _inside_box_points(linear, 24, seed=1)
    y = linear.labels(x)
    res = cw_l2_minimal(linear.logits_fn, x, y, steps=500, binary_search_steps=6,
                        learning_rate=5e-3, initial_const=1.0)
    assert bool(res.success.all())
    exact = linear.l2_distance(x)
    np.testing.assert_allclose(np.asarray(res.distance), exact, rtol=0.02)
    # Never below the true minimum: every returned point is really adversarial.
    assert np.all(np.asarray(res.distance) >= exact * (1 - 1e-4))
    pred = np.asarray(jnp.argmax(linear.logits_fn(res.x_adv), -1))
    assert np.all(pred != y)
    assert bool(jnp.all((res.x_adv >= 0) & (res.x_adv <= 1)))


def test_other_class_max_is_correct_for_negative_logits():
    logits = jnp.array([[-5.0, -1.0, -3.0], [-7.0, -9.0, -8.0], [2.0, -4.0, -1.0]])
    y = jnp.array([1, 0, 0])
    np.testing.assert_array_equal(np.asarray(C.other_class_max(logits, y)), [-3.0, -8.0, -1.0])
    # The multiplicative mask of some implementations ((1 - onehot) * z) would give 0 here.
    np.testing.assert_array_equal(np.asarray(C.margin(logits, y)), [-2.0, -1.0, -3.0])


def test_logit_offset_does_not_change_the_result(linear):
    """Argmax and margins are invariant to a common offset; so must CW be (all logits < 0)."""
    x = _inside_box_points(linear, 8, seed=2)
    y = linear.labels(x)
    base = linear.logits_fn
    shifted = lambda v: base(v) - 100.0  # noqa: E731
    kw = dict(steps=100, binary_search_steps=3, learning_rate=1e-2, initial_const=1.0)
    a = cw_l2_minimal(base, x, y, **kw)
    b = cw_l2_minimal(shifted, x, y, **kw)
    np.testing.assert_allclose(np.asarray(a.distance), np.asarray(b.distance), rtol=1e-4)


def test_eps_grid_follows_from_the_minimal_distances(linear):
    x = _inside_box_points(linear, 24, seed=3)
    y = linear.labels(x)
    kw = dict(steps=200, binary_search_steps=5, learning_rate=1e-2, initial_const=1.0)
    res = cw_l2_minimal(linear.logits_fn, x, y, **kw)
    eps = np.array([0.0, 0.05, 0.1, 0.2, 0.4, 10.0], np.float32)
    grid = cw_l2(linear.logits_fn, x, y, eps, key=jax.random.key(0), **kw)
    assert grid.shape == (6,) + x.shape
    d = np.asarray(res.distance)
    for e, xe in zip(eps, np.asarray(grid)):
        inside = d <= e
        np.testing.assert_array_equal(xe[inside], np.asarray(res.x_adv)[inside])
        np.testing.assert_array_equal(xe[~inside], x[~inside])
        assert np.all(np.linalg.norm(xe - x, axis=1) <= e + 1e-7)
        ra = np.mean(np.asarray(jnp.argmax(linear.logits_fn(xe), -1)) == y)
        assert ra == np.mean(~inside)
    np.testing.assert_array_equal(np.asarray(grid[0]), x)  # eps = 0 returns x
    assert np.mean(d <= 0.4) > 0.3  # the grid is informative


def test_already_misclassified_samples_have_distance_zero(linear):
    x = _inside_box_points(linear, 6, seed=4)
    y = 1 - linear.labels(x)  # every sample misclassified as it stands
    res = cw_l2_minimal(linear.logits_fn, x, y, steps=10, binary_search_steps=1)
    np.testing.assert_array_equal(np.asarray(res.distance), 0.0)
    np.testing.assert_array_equal(np.asarray(res.x_adv), x)


@pytest.mark.parametrize("shape", [(8, 8, 3), (3, 8, 8, 3)], ids=["image", "video"])
def test_constraints_on_cnn(tiny_cnn, shape):
    logits_fn = tiny_cnn(shape)
    x = jax.random.uniform(jax.random.key(1), (4,) + shape)
    y = jnp.array([0, 1, 0, 1], jnp.int32)
    eps = np.array([0.0, 0.5, 2.0], np.float32)
    x_adv = cw_l2(logits_fn, x, y, eps, key=jax.random.key(0), steps=30, binary_search_steps=2)
    assert x_adv.shape == (3, 4) + shape
    assert bool(jnp.all((x_adv >= 0) & (x_adv <= 1)))
    n = jnp.sqrt(jnp.sum((x_adv - x[None]).reshape(3, 4, -1) ** 2, -1))
    assert bool(jnp.all(n <= jnp.asarray(eps)[:, None]))


def test_confidence_demands_a_margin(linear):
    x = _inside_box_points(linear, 8, seed=5)
    y = linear.labels(x)
    kw = dict(steps=300, binary_search_steps=5, learning_rate=5e-3, initial_const=1.0)
    plain = cw_l2_minimal(linear.logits_fn, x, y, **kw)
    kappa = 0.5
    strong = cw_l2_minimal(linear.logits_fn, x, y, confidence=kappa, **kw)
    # For logits [0, s] the margin is |s'| and moves at rate ||w|| per unit distance.
    expected = linear.l2_distance(x) + kappa / np.linalg.norm(linear.w)
    np.testing.assert_allclose(np.asarray(strong.distance), expected, rtol=0.03)
    assert np.all(np.asarray(strong.distance) > np.asarray(plain.distance))


def test_extreme_logits_do_not_produce_nan(linear):
    x = _inside_box_points(linear, 6, seed=6)
    y = linear.labels(x)
    huge = lambda v: 1e4 * linear.logits_fn(v)  # noqa: E731
    res = cw_l2_minimal(huge, x, y, steps=50, binary_search_steps=3)
    assert np.all(np.isfinite(np.asarray(res.x_adv)))
    assert np.all(np.isfinite(np.asarray(res.distance)[np.asarray(res.success)]))
    assert bool(res.success.all())
