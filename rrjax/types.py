"""Function types shared across rrjax (structural, via ``typing.Protocol``)."""

from __future__ import annotations

from typing import Any, Protocol

import jax
from jax.typing import ArrayLike


class LogitsFn(Protocol):
    """A pure function ``x: f32[N,...] in [0,1] -> logits: f32[N,C]`` (C >= 2, index 1 = fake)."""

    def __call__(self, x: jax.Array, /) -> jax.Array: ...


class ApplyFn(Protocol):
    """``apply(variables, x) -> logits[N,C]``: eval mode, pure, jit-able."""

    def __call__(self, variables: Any, x: jax.Array, /) -> jax.Array: ...


class Attack(Protocol):
    """``attack(logits_fn, x, y, eps, *, key, **hparams) -> x_adv``.

    ``eps`` is a scalar (result ``[N,...]``) or a 1-D grid (result ``[E,N,...]``).
    Every output satisfies ``||x_adv - x|| <= eps`` in the attack's norm and ``0 <= x_adv <= 1``.
    """

    def __call__(
        self, logits_fn: LogitsFn, x: ArrayLike, y: ArrayLike, eps: ArrayLike, *, key: ArrayLike, **hparams: Any
    ) -> jax.Array: ...
