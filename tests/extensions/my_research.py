"""A researcher's own attack and detector, registered from outside rrjax (the README's example).

Importing this module registers ``random_sign`` (an attack) and ``linear_detector`` (a detector);
``experiments/sweep.py --extra_modules=tests.extensions.my_research`` makes both usable by name.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from rrjax import attacks, models
from rrjax.models.base import Detector


def random_sign(logits_fn, x, y, eps, *, key, fraction=1.0):
    """A random corner of the L∞ ε-ball on a ``fraction`` of the pixels (a baseline, not a search)."""
    keys = attacks.sample_keys(key, x.shape[0])  # one key per sample (the sweep passes [N] keys)
    draw = jax.vmap(lambda k: jax.random.uniform(k, x.shape[1:], x.dtype, -1.0, 1.0))(keys)
    step = jnp.where(jnp.abs(draw) <= fraction, jnp.sign(draw), 0.0)
    e = jnp.asarray(eps, x.dtype)
    x_adv = jnp.clip(x[None] + e.reshape((-1,) + (1,) * x.ndim) * step[None], 0.0, 1.0)
    return x_adv if e.ndim else x_adv[0]


def check_random_sign(*, fraction):
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction={fraction!r}; expected a share of pixels in (0, 1]")
    return {"fraction": float(fraction)}


class _Linear(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        s = nn.Dense(1)(x.reshape(x.shape[0], -1) - 0.5)[:, 0]
        return jnp.stack([-s, s], -1)


def linear_detector(*, image_size: int = 8) -> Detector:
    """A logistic-regression detector on raw pixels (``image_size`` x ``image_size`` x 3)."""
    return Detector("linear_detector", _Linear(), (image_size, image_size, 3), (("image_size", int(image_size)),))


attacks.register("random_sign", random_sign, check=check_random_sign, overwrite=True)
models.register("linear_detector", linear_detector, overwrite=True)
