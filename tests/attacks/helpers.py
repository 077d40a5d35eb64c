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
