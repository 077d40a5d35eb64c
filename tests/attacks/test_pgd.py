"""PGD: closed-form optimum on a linear model, constraints, compilation, keys and restarts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax.attacks import _common as C
from rrjax.attacks import cw_bounded, pgd
from rrjax.attacks.pgd import _pgd_grid
from tests.attacks.helpers import assert_in_threat_model, assert_restarts_keep_the_worst_case, constraint_problem

EPS = np.array([0.0, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2], np.float32)


def _predict(logits_fn, x):
    return np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1))


@pytest.mark.parametrize("loss", ["ce", "margin"])
@pytest.mark.parametrize("random_start", [True, False])
def test_linf_matches_closed_form_robust_accuracy(linear, loss, random_start):
    """Sign gradients of a linear model are constant, so 2.5ε of travel reaches the exact optimum."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(300, 24)).astype(np.float32)
    y = linear.labels(x)
    keep = np.ones(len(x), bool)
    for e in EPS:
        lo, hi = linear.extreme_scores(x, e)
        keep &= np.abs(np.where(y == 1, lo, hi)) > 1e-4
    x, y = x[keep], y[keep]
    x_adv = pgd(linear.logits_fn, x, y, EPS, key=jax.random.key(0), steps=10, loss=loss,
                random_start=random_start)
    for e, xe in zip(EPS, x_adv):
        ra = np.mean(_predict(linear.logits_fn, xe) == y)
        assert ra == np.mean(~linear.linf_adversarial(x, y, e)), e
    # The optimum itself is reached, not just the same decisions.
    lo, hi = linear.extreme_scores(x, EPS[-1])
    np.testing.assert_allclose(linear.score(np.asarray(x_adv[-1])), np.where(y == 1, lo, hi), atol=1e-4)


def test_l2_reaches_the_boundary_distance(linear):
    rng = np.random.default_rng(2)
    x = rng.uniform(0.4, 0.6, size=(32, 24)).astype(np.float32)
    y = linear.labels(x)
    eps = 0.05
    optimum = eps * np.linalg.norm(linear.w)  # best L2 move for a linear score: along -+w
    for random_start, rtol in ((False, 1e-4), (True, 0.05)):
        # From a random start the projections keep part of the start's component orthogonal
        # to w, which decays only like 1/steps: near-optimal, not exact.
        x_adv = np.asarray(pgd(linear.logits_fn, x, y, eps, key=jax.random.key(0), norm="l2", steps=20,
                               random_start=random_start))
        moved = np.linalg.norm(x_adv - x, axis=-1)
        np.testing.assert_allclose(moved, eps, rtol=1e-4)
        change = (linear.score(x_adv) - linear.score(x)) * np.where(y == 1, -1, 1)
        assert np.all(change <= optimum * (1 + 1e-4))
        np.testing.assert_allclose(change, optimum, rtol=rtol)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("shape", [(8, 8, 3), (3, 8, 8, 3)], ids=["image", "video"])
@pytest.mark.parametrize("attack", [pgd, cw_bounded])
def test_constraints_hold_on_cnn(tiny_cnn, norm, shape, attack):
    logits_fn, x, y, eps = constraint_problem(tiny_cnn, shape, norm)
    x_adv = attack(logits_fn, x, y, eps, key=jax.random.key(0), norm=norm, steps=5)
    assert_in_threat_model(x_adv, x, eps, norm)


def test_deterministic_for_a_key_and_random_across_keys(tiny_cnn):
    logits_fn = tiny_cnn((8, 8, 3))
    x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 3))
    y = jnp.array([0, 1, 0, 1], jnp.int32)
    a = pgd(logits_fn, x, y, 0.1, key=jax.random.key(7), steps=3)
    b = pgd(logits_fn, x, y, 0.1, key=jax.random.key(7), steps=3)
    c = pgd(logits_fn, x, y, 0.1, key=jax.random.key(8), steps=3)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))


def test_a_grid_compiles_once(tiny_cnn):
    logits_fn = tiny_cnn((8, 8, 3))
    x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 3))
    y = jnp.array([0, 1, 0, 1], jnp.int32)
    _pgd_grid.clear_cache()
    for grid in ([0.1, 0.2, 0.3], [0.01, 0.05, 0.2], [0.3, 0.0, 0.15]):
        pgd(logits_fn, x, y, grid, key=jax.random.key(0), steps=4)
    assert _pgd_grid._cache_size() == 1
    pgd(logits_fn, x, y, [0.1, 0.2, 0.3], key=jax.random.key(0), steps=5)  # a new loop length
    assert _pgd_grid._cache_size() == 2


def test_the_grid_is_one_batched_program(tiny_cnn):
    """Unlike FGSM, PGD needs a gradient per ε: the grid is folded into the conv batch (E·N)."""
    logits_fn = tiny_cnn((8, 8, 3))
    x = jnp.full((4, 8, 8, 3), 0.5)
    jaxpr = jax.make_jaxpr(
        lambda eps: _pgd_grid(logits_fn, x, jnp.zeros(4, jnp.int32), jax.vmap(jax.random.key)(jnp.arange(4)),
                              eps, eps, steps=2, norm="linf", spec=C.LossSpec(), random_start=True,
                              restarts=1, eps_batch_size=None)
    )(jnp.zeros(5))
    text = str(jaxpr)
    assert "conv_general_dilated" in text and "20,8,8,3" in text.replace(" ", "")


def test_grid_equals_separate_calls_and_chunked_grid(tiny_cnn):
    logits_fn = tiny_cnn((8, 8, 3))
    x = jax.random.uniform(jax.random.key(3), (5, 8, 8, 3))
    y = jnp.array([0, 1, 0, 1, 1], jnp.int32)
    grid = np.asarray(pgd(logits_fn, x, y, EPS, key=jax.random.key(0), steps=4))
    chunked = np.asarray(pgd(logits_fn, x, y, EPS, key=jax.random.key(0), steps=4, eps_batch_size=3))
    np.testing.assert_allclose(chunked, grid, atol=1e-6)
    for e, xe in zip(EPS, grid):
        single = np.asarray(pgd(logits_fn, x, y, e, key=jax.random.key(0), steps=4))
        np.testing.assert_allclose(single, xe, atol=1e-6)


def test_results_do_not_depend_on_how_samples_are_chunked(tiny_cnn):
    """Sample i uses fold_in(key, i): passing those keys for a slice reproduces the slice."""
    logits_fn = tiny_cnn((8, 8, 3))
    x = jax.random.uniform(jax.random.key(3), (8, 8, 8, 3))
    y = jnp.array([0, 1] * 4, jnp.int32)
    key = jax.random.key(11)
    whole = np.asarray(pgd(logits_fn, x, y, [0.05, 0.1], key=key, steps=3))
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(8, dtype=jnp.uint32))
    part = np.asarray(pgd(logits_fn, x[5:], y[5:], [0.05, 0.1], key=keys[5:], steps=3))
    np.testing.assert_allclose(part, whole[:, 5:], atol=1e-6)


@pytest.mark.parametrize("loss", ["ce", "prob_shift"])
def test_restarts_keep_each_samples_worst_case(tiny_cnn, loss):
    x = jax.random.uniform(jax.random.key(4), (16, 8, 8, 3))
    y = (jnp.arange(16) % 2).astype(jnp.int32)
    assert_restarts_keep_the_worst_case(pgd, tiny_cnn((8, 8, 3), seed=2), x, y, jax.random.key(5), 4, loss, steps=3)


def test_targeted_three_class():
    w = jnp.asarray(np.random.default_rng(0).normal(size=(12, 3)), jnp.float32)
    logits_fn = lambda x: x.reshape(len(x), -1) @ w  # noqa: E731
    x = jax.random.uniform(jax.random.key(0), (32, 12))
    y = jnp.argmax(logits_fn(x), -1).astype(jnp.int32)
    target = (y + 1) % 3
    x_adv = pgd(logits_fn, x, y, 1.0, key=jax.random.key(1), steps=20, target=target)
    # With eps = 1 the whole box is reachable: the target must be reached wherever some
    # point of the box predicts it (checked on the box corner maximising the target margin).
    reached = np.asarray(jnp.argmax(logits_fn(x_adv), -1) == target)
    corner_best = []
    for i in range(32):
        t = int(target[i])
        others = [c for c in range(3) if c != t]
        ok = False
        for o in others:  # a corner that beats each other class; sufficient check per pair
            d = np.asarray(w[:, t] - w[:, o])
            corner = (d > 0).astype(np.float32)
            z = corner @ np.asarray(w)
            ok = ok or int(np.argmax(z)) == t
        corner_best.append(ok)
    assert reached[np.array(corner_best)].mean() == 1.0


def test_prob_shift_without_random_start_reaches_the_larger_shift(linear):
    """Closed form on the linear model: the shift is maximal at one of two box corners."""
    rng = np.random.default_rng(6)
    x = rng.uniform(0.2, 0.8, size=(128, 24)).astype(np.float32)
    y = linear.labels(x)
    eps = 0.05
    x_adv = pgd(linear.logits_fn, x, y, eps, key=jax.random.key(0), loss="prob_shift", random_start=False)
    sig = lambda s: 1 / (1 + np.exp(-s))  # noqa: E731
    s = linear.score(x)
    lo, hi = linear.extreme_scores(x, eps)
    shift_lo, shift_hi = np.abs(sig(lo) - sig(s)), np.abs(sig(hi) - sig(s))
    got = np.abs(sig(linear.score(np.asarray(x_adv))) - sig(s))
    away = np.where(s > 0, shift_lo, shift_hi)  # the corner away from the clean prediction
    np.testing.assert_allclose(got, away, atol=1e-5)
    # ... which is the true maximum for the samples where moving away wins (most of them).
    wins = away >= np.maximum(shift_lo, shift_hi) - 1e-9
    assert wins.mean() > 0.9
