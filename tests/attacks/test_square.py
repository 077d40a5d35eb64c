"""Square Attack: the paper's schedule and patterns, no gradients, success where gradients are
useless, constraints, keys, compilation, per-sample stopping and validation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from rrjax.attacks import apgd, pgd, resolve_hparams, square
from rrjax.attacks.square import _eta, _sides, _square_grid, p_schedule
from tests.attacks.helpers import assert_in_threat_model, constraint_problem


def _predict(logits_fn, x):
    return np.asarray(jnp.argmax(logits_fn(jnp.asarray(x)), -1))


def test_p_schedule_and_window_sides_follow_the_paper():
    p = p_schedule(10000, 0.8)  # the paper's schedule is written for 10 000 queries
    for it, div in ((0, 1), (10, 1), (11, 2), (50, 2), (51, 4), (201, 8), (501, 16), (1001, 32), (2001, 64),
                    (4001, 128), (6001, 256), (8001, 512), (9999, 512)):
        assert p[it] == 0.8 / div, it
    np.testing.assert_array_equal(p_schedule(5000, 0.8)[::2], p[::4][:2500])  # rescaled to the budget
    # Side round(sqrt(p·H·W)) on 64 px: 0.8 -> 57, 0.4 -> 40, 0.2 -> 29, 0.1 -> 20, 0.8/512 -> 3;
    # at least 1 (on 8 px, 0.8/512 -> 0.3).
    np.testing.assert_array_equal(_sides(10000, 0.8, 64, 64, "linf")[[0, 11, 51, 201, 9999]], [57, 40, 29, 20, 3])
    assert _sides(10000, 0.8, 8, 8, "linf")[9999] == 1
    # L2 windows are odd and at least 3.
    np.testing.assert_array_equal(_sides(10000, 0.8, 64, 64, "l2")[[0, 11, 51, 201, 9999]], [57, 41, 29, 21, 3])


@pytest.mark.parametrize("s", [1, 2, 3, 4, 5, 12, 57])
def test_l2_pattern_is_the_reference_one(s):
    torch = pytest.importorskip("torch")
    torchattacks = pytest.importorskip("torchattacks")
    ref = torchattacks.Square(torch.nn.Linear(1, 2))
    ref.device = "cpu"
    torch.manual_seed(0)
    draws = [ref.eta(s).numpy() for _ in range(16)]  # the reference transposes at random
    assert any(np.allclose(d, _eta(s), atol=1e-6) for d in draws)


# --------------------------------------------------------------------------- gradient-free

def _quantised_apply(params, x):
    """A linear detector behind input quantisation: its input gradient is zero almost everywhere."""
    q = jnp.round(x * 8) / 8
    s = q.reshape(len(x), -1) @ params["w"] + params["b"]
    return jnp.stack([jnp.zeros_like(s), s], -1)


def test_square_breaks_a_detector_whose_gradient_is_useless():
    rng = np.random.default_rng(0)
    w = rng.normal(size=64)
    logits_fn = Partial(_quantised_apply, {"w": jnp.asarray(w, jnp.float32), "b": jnp.float32(0.0)})
    x = rng.uniform(0, 1, (400, 8, 8, 1)).astype(np.float32)
    quantise = lambda a: np.round(np.asarray(a, np.float64).reshape(len(a), -1) * 8) / 8  # noqa: E731
    score = quantise(x) @ w
    x, score = x[np.abs(score) > 1.0], score[np.abs(score) > 1.0]  # not flipped by a few pixels
    y = (score > 0).astype(np.int32)
    eps = 0.1
    # Closed form: the score is separable and monotone in each pixel, so its extremes over the
    # L∞ ball are at x ∓ ε·sign(w) (clipped to the box), quantised.
    lo = quantise(np.clip(x.reshape(len(x), -1) - eps * np.sign(w), 0, 1)) @ w
    hi = quantise(np.clip(x.reshape(len(x), -1) + eps * np.sign(w), 0, 1)) @ w
    ra_exact = np.mean(np.where(y == 1, lo > 0, hi <= 0))
    ra = lambda x_adv: np.mean(_predict(logits_fn, x_adv) == y)  # noqa: E731
    ra_square = ra(square(logits_fn, x, y, eps, key=jax.random.key(0), queries=1000))
    ra_pgd = ra(pgd(logits_fn, x, y, eps, key=jax.random.key(0), steps=20))
    ra_apgd = ra(apgd(logits_fn, x, y, eps, key=jax.random.key(0), steps=20))
    assert ra_exact < 0.3 and ra_square <= ra_exact + 2 / len(y), (ra_square, ra_exact)
    assert min(ra_pgd, ra_apgd) > 0.9  # the gradient attacks stall at their random start


def test_no_gradient_is_ever_taken(linear):
    """A model whose backward pass raises: the Square Attack runs, gradient attacks fail."""

    @jax.custom_vjp
    def guarded(x):
        return x

    def fwd(x):
        return x, None

    def bwd(_, g):
        raise AssertionError("the Square Attack differentiated the model")

    guarded.defvjp(fwd, bwd)
    logits_fn = lambda x: linear.logits_fn(guarded(x).reshape(len(x), -1))  # noqa: E731
    x = np.random.default_rng(0).uniform(0, 1, size=(8, 2, 4, 3)).astype(np.float32)
    y = linear.labels(x.reshape(8, -1))
    for norm, loss in (("linf", "margin"), ("l2", "prob_shift")):
        square(logits_fn, x, y, [0.0, 0.1], key=jax.random.key(0), queries=5, norm=norm, loss=loss)
    with pytest.raises(AssertionError, match="differentiated"):
        pgd(logits_fn, x, y, 0.1, key=jax.random.key(0), steps=1)


# --------------------------------------------------------------------------- invariants

@pytest.mark.parametrize("norm, shape", [("linf", (8, 8, 3)), ("l2", (3, 9, 7, 2))], ids=["linf-image", "l2-video"])
def test_constraints_hold_on_cnn(tiny_cnn, norm, shape):
    logits_fn, x, y, eps = constraint_problem(tiny_cnn, shape, norm)
    x_adv = square(logits_fn, x, y, eps, key=jax.random.key(0), norm=norm, queries=30, loss="prob_shift")
    assert_in_threat_model(x_adv, x, eps, norm)
    if norm == "l2":  # it does use the budget
        n = jnp.sqrt(jnp.sum((x_adv - x[None]).reshape(4, 6, -1) ** 2, -1))
        assert bool(jnp.all(n[1:, 2:] > 0.5 * jnp.asarray(eps)[1:, None]))


def test_linf_reaches_the_closed_form_robust_accuracy_on_a_linear_model(linear):
    rng = np.random.default_rng(1)
    w = np.resize(linear.w, 48)
    lin = type(linear)(w=w, b=linear.b)
    x = rng.uniform(0, 1, size=(200, 4, 4, 3)).astype(np.float32)
    y = lin.labels(x)
    eps = np.array([0.0, 0.02, 0.05, 0.1], np.float32)
    x_adv = square(lin.logits_fn, x, y, eps, key=jax.random.key(0), queries=1000)
    for e, xe in zip(eps, x_adv):
        ra = np.mean(_predict(lin.logits_fn, xe.reshape(len(x), -1)) == y)
        assert abs(ra - np.mean(~lin.linf_adversarial(x, y, e))) <= 2 / len(y), e


def test_deterministic_keys_and_one_compilation(tiny_cnn):
    logits_fn = tiny_cnn((8, 8, 3))
    x = jax.random.uniform(jax.random.key(1), (4, 8, 8, 3))
    y = jnp.array([0, 1, 0, 1], jnp.int32)
    _square_grid.clear_cache()
    a = square(logits_fn, x, y, [0.1, 0.2], key=jax.random.key(7), queries=10, loss="prob_shift")
    b = square(logits_fn, x, y, [0.1, 0.2], key=jax.random.key(7), queries=10, loss="prob_shift")
    c = square(logits_fn, x, y, [0.1, 0.2], key=jax.random.key(8), queries=10, loss="prob_shift")
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    # Sample i uses fold_in(key, i), whatever the batch and the rest of the grid.
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(7), i))(jnp.arange(4, dtype=jnp.uint32))
    part = square(logits_fn, x[1:], y[1:], [0.3, 0.2], key=keys[1:], queries=10, loss="prob_shift")
    np.testing.assert_allclose(np.asarray(part[1]), np.asarray(a[1, 1:]), atol=1e-6)
    assert _square_grid._cache_size() == 2  # N = 4 and N = 3; new grids did not recompile


def test_search_stops_per_sample_for_robust_accuracy_only(linear):
    """Queries are counted by a host callback inside the model: with every sample adversarial
    at the start, a margin search stops at once; a probability-shift search uses its budget."""
    calls = []
    lin = type(linear)(w=np.resize(linear.w, 48), b=linear.b)

    def logits_fn(x):
        jax.debug.callback(lambda: calls.append(1))
        return lin.logits_fn(x)

    x = np.random.default_rng(0).uniform(0.4, 0.6, size=(8, 4, 4, 3)).astype(np.float32)
    y = 1 - lin.labels(x)  # wrong labels: every sample is adversarial everywhere
    for loss, expected in (("margin", 1), ("prob_shift", 1 + 1 + 25)):  # (+ the clean pass), start, queries
        calls.clear()
        x_adv = square(logits_fn, x, y, 0.05, key=jax.random.key(0), queries=25, loss=loss)
        jax.effects_barrier()
        assert len(calls) == expected, loss
        assert np.all(_predict(lin.logits_fn, x_adv) != y)


# --------------------------------------------------------------------------- validation

@pytest.mark.parametrize("hparams, named", [
    (dict(queries=0), "queries"), (dict(p_init=0.0), "p_init"), (dict(p_init=1.5), "p_init"),
    (dict(loss="dlr"), "loss"), (dict(norm="l1"), "norm"), (dict(shift_norm="kl", loss="prob_shift"), "shift_norm"),
    (dict(eps_batch_size=0), "eps_batch_size"), (dict(steps=10), "steps"),
])
def test_bad_hyperparameters_are_refused_by_name(hparams, named):
    with pytest.raises(ValueError, match=named):
        resolve_hparams("square", **hparams)


def test_bad_inputs_are_refused_before_compiling(linear):
    x = np.random.default_rng(0).uniform(0, 1, size=(4, 2, 4, 3)).astype(np.float32)
    y = linear.labels(x.reshape(4, -1))
    fn = lambda a: linear.logits_fn(a.reshape(len(a), -1))  # noqa: E731
    _square_grid.clear_cache()
    for case in (dict(x=x.reshape(4, 24)), dict(x=x + 1), dict(eps=[0.1, -1.0]), dict(queries=0), dict(p_init=2),
                 dict(loss="prob_shift", target=y), dict(y=y[:3])):
        args = dict(x=x, y=y, eps=0.1, key=jax.random.key(0)) | case
        with pytest.raises(ValueError):
            square(fn, args.pop("x"), args.pop("y"), args.pop("eps"), **args)
    assert _square_grid._cache_size() == 0
    assert resolve_hparams("square") == {"queries": 5000, "p_init": 0.8, "norm": "linf", "loss": "margin"}
