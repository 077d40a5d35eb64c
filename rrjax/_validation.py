"""Host-side validation at the public boundary (before anything is traced).

Every check raises ``ValueError`` naming the argument, the value it got and what
it expects. Reductions over large device arrays run on the device and only a few
scalars come back to the host, so validating a batch costs one small transfer.

JAX is imported by the array checks on first use, not by this module: host-only callers
(``rrjax.plots`` reading records) use the scalar and grid checks without loading JAX.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import jax

__all__ = [
    "as_pixels",
    "as_labels",
    "as_grid",
    "as_probabilities",
    "check_choice",
    "check_int",
    "check_number",
]


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _xp(a):
    import jax

    return jax.numpy if isinstance(a, jax.Array) else np


def as_pixels(
    x: Any, *, name: str = "x", ranks: Sequence[int] = (4, 5)
) -> jax.Array | np.ndarray:
    """Checks a batch of images ``[N,H,W,C]`` or videos ``[N,T,H,W,C]`` in [0, 1].

    Args:
      x: array-like of floating dtype.
      name: argument name used in error messages.
      ranks: accepted ranks.

    Returns:
      ``x`` as float32 (a ``jax.Array`` stays on its device, anything else
      becomes a NumPy array).

    Raises:
      ValueError: wrong type, dtype, rank, empty batch, NaN/inf, or values
        outside [0, 1].
    """
    if isinstance(x, (list, tuple)):
        x = np.asarray(x)
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise ValueError(f"{name} must be an array, got {type(x).__name__}")
    import jax.numpy as jnp

    if not jnp.issubdtype(x.dtype, jnp.floating):
        hint = " (uint8 images: divide by 255)" if x.dtype == np.uint8 else ""
        raise ValueError(
            f"{name} has dtype {x.dtype}; expected floating pixels in [0, 1]{hint}"
        )
    if x.ndim not in ranks:
        layouts = {4: "[N,H,W,C] images", 5: "[N,T,H,W,C] videos", 2: "[N,D] vectors"}
        want = " or ".join(layouts.get(r, f"rank {r}") for r in ranks)
        raise ValueError(f"{name} has shape {tuple(x.shape)} (rank {x.ndim}); expected {want}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(x.shape)}); expected N >= 1")
    xp = _xp(x)
    x = x.astype(xp.float32)
    finite, lo, hi = (
        bool(v) if i == 0 else float(v)
        for i, v in enumerate((xp.isfinite(x).all(), xp.min(x), xp.max(x)))
    )
    if not finite:
        raise ValueError(f"{name} contains NaN or inf; expected finite pixels in [0, 1]")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name} has values in [{lo:.4g}, {hi:.4g}]; expected pixels in [0, 1] "
            "(models own their normalisation, so pass raw pixels scaled to [0, 1])"
        )
    return x


def as_labels(
    y: Any, n: int, *, name: str = "y", num_classes: int = 2
) -> jax.Array | np.ndarray:
    """Checks integer labels ``[N]`` in ``{0, ..., num_classes-1}``; returns int32."""
    if isinstance(y, (list, tuple)):
        y = np.asarray(y)
    if not hasattr(y, "shape") or not hasattr(y, "dtype"):
        raise ValueError(f"{name} must be an array of labels, got {type(y).__name__}")
    if y.ndim != 1 or y.shape[0] != n:
        raise ValueError(f"{name} has shape {tuple(y.shape)}; expected ({n},), one label per sample")
    import jax.numpy as jnp

    xp = _xp(y)
    if jnp.issubdtype(y.dtype, jnp.floating):
        if not bool(xp.all(xp.equal(y, xp.round(y)))):
            raise ValueError(f"{name} has non-integer values; expected integer class labels")
    elif not (jnp.issubdtype(y.dtype, jnp.integer) or y.dtype == bool):
        raise ValueError(f"{name} has dtype {y.dtype}; expected integer class labels")
    y = y.astype(xp.int32)
    lo, hi = int(xp.min(y)), int(xp.max(y))
    if lo < 0 or hi >= num_classes:
        valid = "{0, 1} (0 = real, 1 = fake)" if num_classes == 2 else f"[0, {num_classes - 1}]"
        raise ValueError(f"{name} has labels in [{lo}, {hi}]; expected values in {valid}")
    return y


def as_grid(
    values: Any,
    *,
    name: str,
    lower: float = 0.0,
    upper: float | None = None,
) -> tuple[np.ndarray, bool]:
    """Checks a scalar or a 1-D grid of finite numbers in ``[lower, upper]``.

    Returns:
      ``(grid, was_scalar)``: ``grid`` is a float32 NumPy vector of length >= 1.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number or a 1-D sequence of numbers, got {_short(values)}") from None
    was_scalar = arr.ndim == 0
    if arr.ndim > 1:
        raise ValueError(f"{name} has shape {arr.shape}; expected a scalar or a 1-D grid")
    arr = arr.reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty; expected at least one value")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf ({_short(values)}); expected finite values")
    if np.any(arr < lower):
        raise ValueError(f"{name} has value {arr.min():g} < {lower:g}; expected values >= {lower:g}")
    if upper is not None and np.any(arr > upper):
        raise ValueError(f"{name} has value {arr.max():g} > {upper:g}; expected values <= {upper:g}")
    return arr.astype(np.float32), was_scalar


def as_probabilities(p: Any, *, name: str, ranks: Iterable[int]) -> jax.Array | np.ndarray:
    """Checks a probability array whose last axis is the class axis (rows sum to 1)."""
    import jax.numpy as jnp

    ranks = tuple(ranks)
    if isinstance(p, (list, tuple)):
        p = np.asarray(p, dtype=np.float32)
    if not hasattr(p, "shape") or not jnp.issubdtype(p.dtype, jnp.floating):
        raise ValueError(f"{name} must be a floating array of probabilities, got {_short(p)}")
    if p.ndim not in ranks:
        raise ValueError(f"{name} has shape {tuple(p.shape)}; expected rank in {ranks} with classes last")
    if p.shape[-1] < 2:
        raise ValueError(f"{name} has {p.shape[-1]} class(es) on its last axis; expected >= 2")
    if 0 in p.shape:
        raise ValueError(f"{name} is empty (shape {tuple(p.shape)})")
    xp = _xp(p)
    p = p.astype(xp.float32)
    if not bool(xp.isfinite(p).all()):
        raise ValueError(f"{name} contains NaN or inf")
    lo, hi = float(xp.min(p)), float(xp.max(p))
    dev = float(xp.max(xp.abs(p.sum(-1) - 1.0)))
    if lo < 0 or hi > 1 or dev > 1e-3:
        raise ValueError(
            f"{name} is not a probability array (values in [{lo:.3g}, {hi:.3g}], rows sum to 1 "
            f"within {dev:.3g}); pass softmax outputs, not logits"
        )
    return p


def check_choice(value: Any, choices: Iterable[str], *, name: str) -> str:
    """Checks that ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        raise ValueError(f"{name}={_short(value)} is not valid; expected one of {', '.join(map(repr, choices))}")
    return value


def check_int(value: Any, *, name: str, minimum: int = 0) -> int:
    """Checks a Python/NumPy integer >= ``minimum`` (bools are rejected)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {_short(value)}")
    if value < minimum:
        raise ValueError(f"{name}={value} is too small; expected an integer >= {minimum}")
    return int(value)


def check_number(
    value: Any, *, name: str, lower: float | None = None, upper: float | None = None, strict: bool = False
) -> float:
    """Checks a finite real number within optional bounds (``strict`` excludes ``lower``)."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {_short(value)}") from None
    if not np.isfinite(v):
        raise ValueError(f"{name}={v} is not finite; expected a finite number")
    if lower is not None and (v <= lower if strict else v < lower):
        op = ">" if strict else ">="
        raise ValueError(f"{name}={v:g} is out of range; expected a number {op} {lower:g}")
    if upper is not None and v > upper:
        raise ValueError(f"{name}={v:g} is out of range; expected a number <= {upper:g}")
    return v
