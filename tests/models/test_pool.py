"""``max_pool_2d``: flax's values, PyTorch's gradient (first maximum of each window)."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from rrjax.models._layers import max_pool_2d

SHAPES = [((2, 8, 8, 3), 2), ((1, 9, 7, 2), 2), ((2, 16, 12, 4), 4), ((1, 10, 13, 1), 4)]


@pytest.mark.parametrize("shape, k", SHAPES)
def test_values_match_flax_max_pool(shape, k):
    x = jax.random.normal(jax.random.key(0), shape)
    np.testing.assert_array_equal(np.asarray(max_pool_2d(x, k)), np.asarray(nn.max_pool(x, (k, k), strides=(k, k))))
    np.testing.assert_array_equal(np.asarray(jax.jit(max_pool_2d, static_argnums=1)(x, k)),
                                  np.asarray(max_pool_2d(x, k)))


def _torch_grad(x: np.ndarray, k: int, weights: np.ndarray) -> np.ndarray:
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    out = torch.nn.functional.max_pool2d(xt, k)
    (out * torch.from_numpy(weights.transpose(0, 3, 1, 2).copy())).sum().backward()
    return xt.grad.numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("shape, k", SHAPES)
def test_gradient_matches_pytorch_with_ties(shape, k):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, size=shape).astype(np.float32)  # values in {0, 1, 2}: ties in most windows
    n, h, w, c = shape
    weights = rng.normal(size=(n, h // k, w // k, c)).astype(np.float32)
    g = jax.grad(lambda z: jnp.sum(max_pool_2d(z, k) * weights))(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(g), _torch_grad(x, k, weights), atol=1e-6)


@pytest.mark.parametrize("shape, k", SHAPES)
def test_gradient_matches_flax_without_ties(shape, k):
    x = jax.random.normal(jax.random.key(2), shape)  # continuous values: no ties
    weights = jax.random.normal(jax.random.key(3), (shape[0], shape[1] // k, shape[2] // k, shape[3]))
    ours = jax.grad(lambda z: jnp.sum(max_pool_2d(z, k) * weights))(x)
    ref = jax.grad(lambda z: jnp.sum(nn.max_pool(z, (k, k), strides=(k, k)) * weights))(x)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(ref))


def test_vmap_and_nested_jit():
    x = jax.random.normal(jax.random.key(4), (3, 2, 8, 8, 2))
    per = jax.vmap(lambda z: jnp.sum(jax.grad(lambda u: jnp.sum(max_pool_2d(u, 2) ** 2))(z)))(x)
    loop = [jnp.sum(jax.grad(lambda u: jnp.sum(max_pool_2d(u, 2) ** 2))(z)) for z in x]
    np.testing.assert_allclose(np.asarray(per), np.asarray(loop), rtol=1e-6)
