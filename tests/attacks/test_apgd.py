"""APGD: closed-form optimum on a linear model, constraints, compilation, keys, restarts, the
convergence signal, validation, and strength against PGD on the shipped Meso4."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from rrjax.attacks import apgd, apgd_with_info, pgd, resolve_hparams
from rrjax.attacks.apgd import _apgd_grid, checkpoints
from tests.attacks.helpers import assert_in_threat_model, assert_restarts_keep_the_worst_case, constraint_problem

EPS = np.array([0.0, 0.01, 0.02, 0.05, 0.1, 0.2], np.float32)


def _mlp(seed=0):
    """A small nonlinear detector on ``[N,4,4,3]`` inputs that compiles in a blink."""
    rng = np.random.default_rng(seed)
    params = {"w1": jnp.asarray(rng.normal(size=(48, 16)) / 4, jnp.float32),
              "w2": jnp.asarray(rng.normal(size=(16, 2)), jnp.float32)}
    return Partial(_mlp_apply, params)


def _mlp_apply(params, x):
    return jnp.tanh(x.reshape(len(x), -1) @ params["w1"] - 1.5) @ params["w2"]


def _predict(logits_fn, x):
    return np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1))


def _away_from_ties(linear, x, y, eps):
    """Samples whose optimal score is not within float noise of the decision boundary."""
    keep = np.ones(len(x), bool)
    for e in eps:
        lo, hi = linear.extreme_scores(x, e)
        keep &= np.abs(np.where(y == 1, lo, hi)) > 1e-4
    return x[keep], y[keep]


def test_checkpoints_follow_the_paper():
    # p_j: 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (then 1.05 > 1), as in Croce & Hein.
    assert checkpoints(100) == (22, 41, 57, 70, 80, 87, 93, 99)
    assert checkpoints(200) == (44, 82, 114, 140, 160, 174, 186, 198)
    assert checkpoints(10) == (3, 5, 6, 7, 8, 9)  # ⌈p_j·10⌉, the one at 10 changes nothing
    assert checkpoints(1) == ()


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_linf_reaches_the_closed_form_robust_accuracy(linear, loss):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(300, 24)).astype(np.float32)
    x, y = _away_from_ties(linear, x, linear.labels(x), EPS)
    x_adv = apgd(linear.logits_fn, x, y, EPS, key=jax.random.key(0), steps=20, loss=loss)
    for e, xe in zip(EPS, x_adv):
        assert np.mean(_predict(linear.logits_fn, xe) == y) == np.mean(~linear.linf_adversarial(x, y, e)), e
    lo, hi = linear.extreme_scores(x, EPS[-1])
    np.testing.assert_allclose(linear.score(np.asarray(x_adv[-1])), np.where(y == 1, lo, hi), atol=1e-4)


def test_l2_reaches_the_closed_form_robust_accuracy(linear):
    """Inside the box the best L2 move of a linear score is ε·w/‖w‖: adversarial iff the
    boundary is closer than ε."""
    rng = np.random.default_rng(2)
    x = rng.uniform(0.3, 0.7, size=(300, 24)).astype(np.float32)
    y = linear.labels(x)
    eps = np.array([0.0, 0.05, 0.1, 0.2, 0.3], np.float32)
    dist = linear.l2_distance(x)
    keep = np.all(np.abs(dist[:, None] - eps[None]) > 1e-3, axis=1)
    x, y, dist = x[keep], y[keep], dist[keep]
    x_adv = apgd(linear.logits_fn, x, y, eps, key=jax.random.key(0), norm="l2", steps=50)
    for e, xe in zip(eps, x_adv):
        assert np.mean(_predict(linear.logits_fn, xe) == y) == np.mean(dist > e), e
    change = (linear.score(np.asarray(x_adv[2])) - linear.score(x)) * np.where(y == 1, -1, 1)
    np.testing.assert_allclose(change, eps[2] * np.linalg.norm(linear.w), rtol=1e-3)


@pytest.mark.parametrize("norm, shape", [("linf", (8, 8, 3)), ("l2", (3, 8, 8, 3))], ids=["linf-image", "l2-video"])
def test_constraints_hold_on_cnn(tiny_cnn, norm, shape):
    logits_fn, x, y, eps = constraint_problem(tiny_cnn, shape, norm)
    x_adv = apgd(logits_fn, x, y, eps, key=jax.random.key(0), norm=norm, steps=6, restarts=2)
    assert_in_threat_model(x_adv, x, eps, norm)


def test_deterministic_for_a_key_and_compiles_once_per_grid_length():
    logits_fn = _mlp()
    x = jax.random.uniform(jax.random.key(1), (4, 4, 4, 3))
    y = jnp.array([0, 1, 0, 1], jnp.int32)
    _apgd_grid.clear_cache()
    a = apgd(logits_fn, x, y, [0.1, 0.2, 0.3], key=jax.random.key(7), steps=4)
    b = apgd(logits_fn, x, y, [0.1, 0.2, 0.3], key=jax.random.key(7), steps=4)
    c = apgd(logits_fn, x, y, [0.01, 0.05, 0.2], key=jax.random.key(8), steps=4)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(apgd(logits_fn, x, y, [0.1, 0.2, 0.3], key=jax.random.key(8),
                                                              steps=4)))
    assert c.shape == a.shape and _apgd_grid._cache_size() == 1
    apgd(logits_fn, x, y, [0.1, 0.2, 0.3], key=jax.random.key(0), steps=5)  # a new loop length
    assert _apgd_grid._cache_size() == 2


def test_grid_equals_separate_calls_chunks_and_unrolled():
    logits_fn = _mlp()
    x = jax.random.uniform(jax.random.key(3), (5, 4, 4, 3))
    y = jnp.array([0, 1, 0, 1, 1], jnp.int32)
    grid = np.asarray(apgd(logits_fn, x, y, EPS, key=jax.random.key(0), steps=5))
    chunked = np.asarray(apgd(logits_fn, x, y, EPS, key=jax.random.key(0), steps=5, eps_batch_size=4))
    unrolled = np.asarray(apgd(logits_fn, x, y, EPS, key=jax.random.key(0), steps=5, unroll=True))
    np.testing.assert_allclose(chunked, grid, atol=1e-6)
    np.testing.assert_allclose(unrolled, grid, atol=1e-5)
    # Sample i uses fold_in(key, i): a slice with those keys, at one ε, reproduces the slice.
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(0), i))(jnp.arange(5, dtype=jnp.uint32))
    part = np.asarray(apgd(logits_fn, x[2:], y[2:], EPS[3], key=keys[2:], steps=5))
    np.testing.assert_allclose(part, grid[3, 2:], atol=1e-6)


@pytest.mark.parametrize("loss", ["ce", "prob_shift"])
def test_restarts_keep_each_samples_worst_case(loss):
    x = jax.random.uniform(jax.random.key(4), (16, 4, 4, 3))
    y = (jnp.arange(16) % 2).astype(jnp.int32)
    assert_restarts_keep_the_worst_case(apgd, _mlp(seed=2), x, y, jax.random.key(5), 3, loss, steps=4)


def test_returns_the_best_iterate_not_the_last():
    """A loss whose maximum lies inside the ball: the iterates oscillate around it, and the
    returned point has the highest loss seen (at least the start's)."""
    c = jnp.full((1, 12), 0.5)
    logits_fn = lambda x: jnp.stack([-jnp.sum((x - c) ** 2, -1), jnp.zeros(len(x))], -1)  # noqa: E731
    x = jnp.asarray(np.random.default_rng(0).uniform(0.45, 0.55, (32, 12)), jnp.float32)
    y = jnp.ones(32, jnp.int32)  # CE of class 1 grows as x nears c
    result = apgd_with_info(logits_fn, x, y, 0.1, key=jax.random.key(0), steps=100)
    dist = np.asarray(jnp.max(jnp.abs(result.x_adv - c), -1))
    assert np.all(dist < 0.1 * 2 / 2 ** 6)  # within a few halvings of the optimum
    # The step halves at every checkpoint and each halving lets the iterate get closer:
    # the best loss was still rising over the last checkpoint interval.
    assert np.mean(np.asarray(result.improved_since_last_checkpoint)) > 0.9


def test_converged_runs_report_no_improvement(linear):
    """On a linear model the first L∞ step of size 2ε reaches the optimal corner; nothing
    improves after it."""
    x = np.random.default_rng(3).uniform(0, 1, size=(64, 24)).astype(np.float32)
    result = apgd_with_info(linear.logits_fn, x, linear.labels(x), [0.0, 0.05], key=jax.random.key(0), steps=20,
                            loss="margin")
    assert result.improved_since_last_checkpoint.shape == (2, 64)
    assert not np.any(np.asarray(result.improved_since_last_checkpoint))


def test_targeted_and_dlr_on_three_classes():
    w = jnp.asarray(np.random.default_rng(0).normal(size=(12, 3)), jnp.float32)
    logits_fn = lambda x: x.reshape(len(x), -1) @ w  # noqa: E731
    x = jax.random.uniform(jax.random.key(0), (64, 12))
    y = jnp.argmax(logits_fn(x), -1).astype(jnp.int32)
    eps = 0.15
    # Closed form: class j can win iff max over the box of (w_j − w_y)·x' > 0 for the pairwise
    # best corner of each j (necessary), and the untargeted attack succeeds iff some j wins.
    xs, ws = np.asarray(x, np.float64), np.asarray(w, np.float64)

    def can_beat(i, j):
        d = ws[:, j] - ws[:, int(y[i])]
        return float(np.clip(xs[i] + eps * np.sign(d), 0, 1) @ d) > 0

    pairwise = np.array([[can_beat(i, j) for j in range(3)] for i in range(64)])
    dlr_adv = np.asarray(jnp.argmax(logits_fn(apgd(logits_fn, x, y, eps, key=jax.random.key(1), steps=50,
                                                   loss="dlr")), -1) != y)
    assert np.all(dlr_adv <= pairwise.any(1)) and dlr_adv.sum() >= pairwise.any(1).sum() - 2
    target = (y + 1) % 3
    reached = np.asarray(jnp.argmax(logits_fn(apgd(logits_fn, x, y, eps, key=jax.random.key(1), steps=50,
                                                   target=target)), -1) == target)
    beats_target = np.array([can_beat(i, int(target[i])) for i in range(64)])
    assert np.all(reached <= beats_target) and reached.sum() >= beats_target.sum() - 2


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("hparams, named", [
    (dict(steps=0), "steps"), (dict(restarts=0), "restarts"), (dict(loss="dlr2"), "loss"),
    (dict(norm="l1"), "norm"), (dict(rho=1.5), "rho"), (dict(shift_norm="kl", loss="prob_shift"), "shift_norm"),
    (dict(eps_batch_size=0), "eps_batch_size"), (dict(unroll="yes"), "unroll"), (dict(bogus=1), "bogus"),
])
def test_bad_hyperparameters_are_refused_by_name(hparams, named):
    with pytest.raises(ValueError, match=named):
        resolve_hparams("apgd", **hparams)


def test_bad_inputs_are_refused_before_compiling(linear):
    x = np.random.default_rng(0).uniform(0, 1, size=(4, 24)).astype(np.float32)
    y = linear.labels(x)
    _apgd_grid.clear_cache()
    bad = [
        dict(x=x * 2), dict(y=np.array([0, 1, 2, 0])), dict(eps=-0.1), dict(loss="dlr"), dict(steps=0),
        dict(loss="dlr", target=y), dict(loss="prob_shift", target=y), dict(key=None),
    ]
    for case in bad:
        args = dict(x=x, y=y, eps=0.1, key=jax.random.key(0)) | case
        with pytest.raises(ValueError) as err:
            apgd(linear.logits_fn, args.pop("x"), args.pop("y"), args.pop("eps"), **args)
        if case.get("loss") == "dlr" and "target" not in case:
            assert "dlr" in str(err.value) and "margin" in str(err.value) and "2" in str(err.value)
    assert _apgd_grid._cache_size() == 0


def test_recorded_hyperparameters():
    assert resolve_hparams("apgd") == {"steps": 100, "norm": "linf", "loss": "ce", "restarts": 1, "rho": 0.75,
                                       "random_start": True}
    assert resolve_hparams("apgd", loss="prob_shift", unroll=True)["shift_norm"] == "linf"


# --------------------------------------------------------------------------- a real detector

def test_apgd_100_is_at_least_as_strong_as_pgd_10_on_meso4(tmp_path):
    from rrjax import checkpoints, data

    detector, variables, _ = checkpoints.load("checkpoints/meso4")
    x, y, _ = data.load_arrays("synthetic_images", "test", image_size=64, train_size=0, validation_size=0,
                               test_size=16, data_dir=tmp_path)
    logits_fn = detector.logits_fn(variables)
    eps = np.array([0.001, 0.002, 0.004], np.float32)
    ra_pgd = [np.mean(_predict(logits_fn, xe) == y) for xe in pgd(logits_fn, x, y, eps, key=jax.random.key(0))]
    ra_apgd = [np.mean(_predict(logits_fn, xe) == y) for xe in apgd(logits_fn, x, y, eps, key=jax.random.key(0))]
    assert ra_pgd[0] < 1 and ra_pgd[-1] > 0  # a grid where the attacks can differ
    assert all(a <= p + 1 / len(y) for a, p in zip(ra_apgd, ra_pgd)), (ra_apgd, ra_pgd)
