"""The detector contract: a Flax Linen module plus its default input shape.

A detector is used by the attack side only through ``apply(variables, x)`` (eval mode,
pure) or ``logits_fn(variables)``; training uses ``apply_train``. Modules follow one
calling convention: ``module(x, train: bool) -> logits[N, 2]`` with ``x`` raw pixels in
[0, 1] (the module owns its normalisation), dropout / drop-connect drawing from the
``"dropout"`` RNG stream and BatchNorm statistics in the ``"batch_stats"`` collection.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.tree_util import Partial

__all__ = ["Detector"]


@dataclasses.dataclass(frozen=True)
class Detector:
    """A deepfake detector: module, registry name and per-sample input shape.

    Attributes:
      name: registry name (``rrjax.models.MODELS``).
      module: Linen module, ``module(x, train) -> logits[N, 2]`` (index 1 = fake).
      input_shape: per-sample shape, ``(H, W, C)`` for frame detectors or
        ``(T, H, W, C)`` for clip detectors.
      config: the keyword arguments the registry factory was called with, so
        ``get_model(name, **config)`` rebuilds the same detector (stored in checkpoints).

    Frozen and hashable: ``apply`` and ``logits_fn`` are stable callables, so a jitted
    caller that receives ``detector.logits_fn(variables)`` as a pytree argument compiles
    once per detector and shape, with the weights as traced arguments.
    """

    name: str
    module: nn.Module
    input_shape: tuple[int, ...]
    config: tuple[tuple[str, Any], ...] = ()

    @property
    def is_video(self) -> bool:
        return len(self.input_shape) == 4

    def check_input(self, x: Any) -> None:
        """Raises ``ValueError`` unless ``x`` has shape ``[N, *input_shape]`` (static check)."""
        shape = tuple(getattr(x, "shape", ()))
        want = ("N",) + tuple(self.input_shape)
        if len(shape) != len(want) or shape[1:] != tuple(self.input_shape):
            kind = "[N,T,H,W,C] clips" if self.is_video else "[N,H,W,C] images"
            raise ValueError(
                f"{self.name} expects input of shape {want} ({kind}, pixels in [0,1]); got {shape}"
            )

    def init(self, key: jax.Array, batch_size: int = 1) -> dict:
        """Returns freshly initialised variables (``params`` and ``batch_stats`` if any)."""
        params_key, dropout_key = jax.random.split(key)
        x = jnp.zeros((batch_size,) + tuple(self.input_shape), jnp.float32)
        variables = self.module.init({"params": params_key, "dropout": dropout_key}, x, train=False)
        return dict(variables)

    def apply(self, variables: Any, x: jax.Array) -> jax.Array:
        """Eval-mode logits ``f32[N, 2]`` for ``x: f32[N, *input_shape]`` in [0, 1]."""
        self.check_input(x)
        return self.module.apply(variables, x, train=False)

    def apply_train(self, variables: Any, x: jax.Array, *, key: jax.Array) -> tuple[jax.Array, dict]:
        """Training-mode logits and the updated mutable collections (``batch_stats``)."""
        self.check_input(x)
        mutable = [c for c in variables if c != "params"]
        logits, updates = self.module.apply(
            variables, x, train=True, rngs={"dropout": key}, mutable=mutable
        )
        return logits, dict(updates)

    def logits_fn(self, variables: Any) -> Partial:
        """``x -> logits`` with the weights as pytree leaves (pass it to attacks / jit)."""
        return Partial(self.apply, variables)

    def param_count(self, variables: Any) -> int:
        """Number of trainable parameters (the ``params`` collection only)."""
        return int(sum(p.size for p in jax.tree_util.tree_leaves(variables["params"])))
