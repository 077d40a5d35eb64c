"""Small building blocks shared by the detector families."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rrjax._validation import check_int, check_number

__all__ = [
    "normalise", "batch_norm", "config_tuple", "image_size_arg", "rate_arg", "global_avg_pool", "max_pool_2d",
]


def normalise(x: jax.Array, mean: float = 0.5, std: float = 0.5) -> jax.Array:
    """Maps pixels in [0, 1] to the network's input range, ``(x - mean) / std``.

    Every detector here was trained (DeepfakeBench, FaceForensics++, I3D) with
    ``mean = std = 0.5`` on all channels, i.e. inputs in [-1, 1].
    """
    return (x - mean) / std


def batch_norm(train: bool, *, name: str, torch_momentum: float = 0.1, epsilon: float = 1e-5) -> nn.BatchNorm:
    """A Linen BatchNorm configured like ``torch.nn.BatchNorm{2,3}d``.

    PyTorch's ``momentum`` weighs the *new* batch statistic; Flax's weighs the running
    average, so ``flax_momentum = 1 - torch_momentum``.
    """
    return nn.BatchNorm(
        use_running_average=not train, momentum=1.0 - torch_momentum, epsilon=epsilon, name=name
    )


def config_tuple(**kwargs: Any) -> tuple[tuple[str, Any], ...]:
    """``Detector.config``: the factory's resolved keyword arguments, sorted by name."""
    return tuple(sorted(kwargs.items()))


def image_size_arg(value: Any, *, minimum: int, name: str = "image_size") -> int:
    return check_int(value, name=name, minimum=minimum)


def rate_arg(value: Any, *, name: str) -> float:
    rate = check_number(value, name=name, lower=0.0)
    if rate >= 1.0:
        raise ValueError(f"{name}={rate:g} is out of range; expected a rate in [0, 1)")
    return rate


def global_avg_pool(x: jax.Array) -> jax.Array:
    """Mean over every axis between batch and channels: ``[N, ..., C] -> [N, C]``."""
    return jnp.mean(x, axis=tuple(range(1, x.ndim - 1)))


def max_pool_2d(x: jax.Array, k: int) -> jax.Array:
    """Non-overlapping ``k × k`` max pooling of ``[N, H, W, C]`` (stride ``k``, VALID: a remainder
    of ``H`` or ``W`` not divisible by ``k`` is dropped), as ``torch.nn.functional.max_pool2d(x, k)``.

    The same values as ``flax.linen.max_pool(x, (k, k), strides=(k, k))``, computed as a reshape
    and a max. Its gradient goes, like PyTorch's, to the first maximum of each window in
    row-major order, but as an elementwise mask instead of XLA's select-and-scatter, which
    XLA:CPU runs slowly: a PGD step on Meso4 is about 1.3x faster (BUILD_NOTES.md, "Max pooling").
    """
    return _max_pool_2d(x, k)


def _windows(x: jax.Array, k: int) -> jax.Array:
    n, h, w, c = x.shape
    ho, wo = h // k, w // k
    return x[:, : ho * k, : wo * k, :].reshape(n, ho, k, wo, k, c)


def _first_max_mask(xw: jax.Array, m: jax.Array, k: int) -> jax.Array:
    """One-hot of the first maximum (row-major in the window) of each window of ``xw``."""
    order = (jnp.arange(k)[:, None] * k + jnp.arange(k)[None, :]).reshape(1, 1, k, 1, k, 1)
    hit = xw == m[:, :, None, :, None, :]
    first = jnp.min(jnp.where(hit, order, k * k), axis=(2, 4), keepdims=True)
    return order == first


@functools.partial(jax.custom_vjp, nondiff_argnums=(1,))
def _max_pool_2d(x: jax.Array, k: int) -> jax.Array:
    return jnp.max(_windows(x, k), axis=(2, 4))


def _max_pool_2d_fwd(x: jax.Array, k: int):
    xw = _windows(x, k)
    m = jnp.max(xw, axis=(2, 4))
    return m, (xw, m, x.shape)


def _max_pool_2d_bwd(k: int, res, g: jax.Array):
    xw, m, shape = res
    gw = jnp.where(_first_max_mask(xw, m, k), g[:, :, None, :, None, :], jnp.zeros((), g.dtype))
    n, ho, _, wo, _, c = gw.shape
    gx = gw.reshape(n, ho * k, wo * k, c)
    gx = jnp.pad(gx, ((0, 0), (0, shape[1] - ho * k), (0, shape[2] - wo * k), (0, 0)))
    return (gx,)


_max_pool_2d.defvjp(_max_pool_2d_fwd, _max_pool_2d_bwd)
