"""Small building blocks shared by the detector families."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from rrjax._validation import check_int, check_number

__all__ = ["normalise", "batch_norm", "config_tuple", "image_size_arg", "rate_arg"]


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
