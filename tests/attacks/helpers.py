"""The threat-model checks every attack's tests share."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

# ε grids that include 0 and budgets larger than the box allows.
EPS_GRIDS = {"linf": np.array([0.0, 0.03, 0.2, 0.7], np.float32), "l2": np.array([0.0, 0.1, 1.0, 5.0], np.float32)}


def constraint_problem(tiny_cnn, shape, norm):
    """``(logits_fn, x, y, eps)``: six inputs of ``shape`` (two of them box corners), an ε grid."""
    x = jax.random.uniform(jax.random.key(1), (6,) + tuple(shape))
    x = x.at[0].set(0.0).at[1].set(1.0)
    y = jnp.array([0, 1, 0, 1, 0, 1], jnp.int32)
    return tiny_cnn(shape), x, y, EPS_GRIDS[norm]


def assert_in_threat_model(x_adv, x, eps, norm):
    """``x_adv[E,N,...]`` is f32, in [0, 1], within ε of ``x`` (L∞ exactly, L2 to 1e-5), and ``x`` at ε = 0."""
    e, n = len(eps), len(x)
    assert x_adv.shape == (e,) + tuple(x.shape) and x_adv.dtype == jnp.float32
    assert bool(jnp.all((x_adv >= 0) & (x_adv <= 1)))
    d = x_adv - x[None]
    if norm == "linf":
        assert bool(jnp.all(jnp.abs(d) <= jnp.asarray(eps).reshape(-1, *([1] * (d.ndim - 1)))))
    else:
        norms = jnp.sqrt(jnp.sum(d.reshape(e, n, -1) ** 2, -1))
        assert bool(jnp.all(norms <= jnp.asarray(eps)[:, None] * (1 + 1e-5)))
    zero = np.flatnonzero(np.asarray(eps) == 0)
    for i in zero:
        np.testing.assert_array_equal(np.asarray(x_adv[i]), np.asarray(x))


def assert_restarts_keep_the_worst_case(attack, logits_fn, x, y, key, restarts, loss, **kw):
    """``attack(..., restarts=R)`` keeps, per sample, the worst of its R single runs: restart
    ``r >= 1`` starts from ``fold_in(k_i, r)``, restart 0 from ``k_i`` (or, for prob_shift, from
    ``x`` itself); the worst is a success first, then the highest loss (prob_shift: the largest)."""
    from rrjax.attacks import _common as C

    n = len(x)
    best = attack(logits_fn, x, y, 0.05, key=key, restarts=restarts, loss=loss, **kw)
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(n, dtype=jnp.uint32))
    runs = [attack(logits_fn, x, y, 0.05, key=keys if r == 0 else jax.vmap(lambda k: jax.random.fold_in(k, r))(keys),
                   loss=loss, random_start=not (r == 0 and loss == "prob_shift"), **kw)
            for r in range(restarts)]
    spec = C.LossSpec(name=loss)
    p_ref = jax.nn.softmax(logits_fn(x))
    losses = np.stack([np.asarray(C.per_sample_loss(spec, logits_fn(r), y, p_ref)) for r in runs])
    ok = np.stack([np.asarray(jnp.argmax(logits_fn(r), -1) != y) for r in runs])
    got_loss = np.asarray(C.per_sample_loss(spec, logits_fn(best), y, p_ref))
    if loss == "prob_shift":
        np.testing.assert_allclose(got_loss, losses.max(0), rtol=1e-5)
    else:
        np.testing.assert_array_equal(np.asarray(jnp.argmax(logits_fn(best), -1) != y), ok.any(0))
        expect = np.where(ok.any(0), np.where(ok, losses, -np.inf).max(0), losses.max(0))
        np.testing.assert_allclose(got_loss, expect, rtol=1e-5)
    assert len({losses[:, i].round(6).tobytes() for i in range(n)}) > 1  # restarts differ
