"""RA and RR: the output change, per-sample outcomes, counts and the host-side summary.

The one path every consumer takes (``rrjax.evaluate``, the sweep, the public ratio functions):

1. :func:`outcomes` (device, jitted): from clean and attacked probabilities, per sample and ε
   the output change ``‖p(x') − p(x)‖`` (:func:`output_change`), whether the attacked
   prediction is correct, whether the label stayed, and whether both outputs are finite.
2. φ_rob and its counts: :func:`robust_outcomes` is the definition,
   ``φ = 1[shift ≤ b]`` (and the label unchanged for strict RR); :func:`robust_counts` counts
   it for a tolerance grid by sorting each row of shifts once (``O(N log N + B log N)`` instead
   of an ``N×B`` comparison), traceable, so counts can also be formed inside a jitted program.
3. :func:`summarise` (host): counts -> RA, RR and their confidence intervals.

Non-finite outputs (a NaN or ±inf logit turns into a NaN probability) never become a verdict:
such a sample is *invalid* at that ε (clean output non-finite: at every ε) and is left out of
``n``, of the correct count and of the robust count, and the number left out is reported.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

from rrjax import _validation as V
from rrjax.metrics.intervals import CI_METHODS, binomial_ci

__all__ = [
    "DEFAULT_SHIFT_NORM", "SHIFT_NORMS", "SHIFT_ATOL", "probability_shift", "output_change", "prob_shift",
    "Outcomes", "outcomes", "robust_outcomes", "robust_counts", "accuracy_counts", "robust_ratio_counts",
    "robust_accuracy", "robust_ratio", "Summary", "summarise", "softmax_or_nan",
]

DEFAULT_SHIFT_NORM = "linf"
SHIFT_NORMS = ("linf", "l1", "l2")
# Output changes at or below this are float32 noise: clean and attacked probabilities come
# from differently batched programs (chunks, devices, the ε grid folded into the batch) and
# can differ by a few ulp even for an unmoved input. They count as exactly zero, so RR at
# b = 0 means "unchanged" rather than "bit-identical".
SHIFT_ATOL = 1e-6


def softmax_or_nan(logits: jax.Array) -> jax.Array:
    """Class probabilities ``f32[..., C]`` from logits, NaN on every row with a non-finite logit.

    The one way rrjax turns logits into the probabilities it scores (traceable). Compiled, XLA's
    softmax can turn a NaN logit into a confident class (its max reduction skips NaN), so a
    broken output would become a verdict; an explicit NaN row is what :func:`outcomes` then
    leaves out.
    """
    logits = logits.astype(jnp.float32)
    finite = jnp.all(jnp.isfinite(logits), axis=-1, keepdims=True)
    return jnp.where(finite, jax.nn.softmax(logits, axis=-1), jnp.nan)


def probability_shift(p_ref: jax.Array, p: jax.Array, norm: str) -> jax.Array:
    """``‖p − p_ref‖`` over the class axis (last), in ``linf``, ``l1`` or ``l2`` (traceable).

    Differentiable everywhere, including at ``p = p_ref`` for ``l2`` (attacks maximise it).
    """
    d = p - p_ref
    if norm == "linf":
        return jnp.max(jnp.abs(d), axis=-1)
    if norm == "l1":
        return jnp.sum(jnp.abs(d), axis=-1)
    ss = jnp.sum(d * d, axis=-1)
    # Double where: sqrt has an infinite derivative at 0, which would turn into NaN gradients.
    return jnp.where(ss > 0, jnp.sqrt(jnp.where(ss > 0, ss, 1.0)), 0.0)


def output_change(p_clean: jax.Array, p_adv: jax.Array, norm: str) -> jax.Array:
    """Per-sample ``‖p_adv − p_clean‖`` ``[E,N]`` from ``p_clean[N,C]``, ``p_adv[E,N,C]`` (traceable);
    changes ``≤ SHIFT_ATOL`` (float noise) are exactly 0."""
    s = probability_shift(p_clean[None], p_adv, norm)
    return jnp.where(s <= SHIFT_ATOL, 0.0, s)


def _with_grid(p_adv: jax.Array) -> tuple[jax.Array, bool]:
    return (p_adv, False) if p_adv.ndim == 3 else (p_adv[None], True)


def prob_shift(p_clean: ArrayLike, p_adv: ArrayLike, *, norm: str = DEFAULT_SHIFT_NORM) -> jax.Array:
    """Per-sample output change ``‖p_adv − p_clean‖``: ``[E,N]`` (or ``[N]`` for ``p_adv[N,C]``).

    Args:
      p_clean: f32[N,C] clean probabilities.
      p_adv: f32[E,N,C] (or f32[N,C]) probabilities on attacked inputs.
      norm: ``"linf"`` (default), ``"l1"`` or ``"l2"``.

    Returns:
      Changes, with those ``≤ SHIFT_ATOL`` (1e-6, float32 noise) reported as 0.
    """
    V.check_choice(norm, SHIFT_NORMS, name="norm")
    p, squeeze = _with_grid(jnp.asarray(p_adv, jnp.float32))
    out = output_change(jnp.asarray(p_clean, jnp.float32), p, norm)
    return out[0] if squeeze else out


class Outcomes(NamedTuple):
    """Per-sample outcomes (a pytree, so it crosses ``jit``). Invalid entries (a non-finite
    clean or attacked output) are 0 in ``shift`` and False in ``correct`` and ``same_label``."""

    shift: jax.Array  # f32[E,N] ‖p(x') − p(x)‖ in the RR norm, floored at SHIFT_ATOL
    correct: jax.Array  # bool[E,N] attacked prediction is the label
    same_label: jax.Array  # bool[E,N] attacked prediction equals the clean one
    valid: jax.Array  # bool[E,N] clean and attacked outputs finite
    clean_correct: jax.Array  # bool[N]
    clean_valid: jax.Array  # bool[N]


@functools.partial(jax.jit, static_argnames=("norm",))
def outcomes(p_clean: jax.Array, p_adv: jax.Array, y: jax.Array, *, norm: str = DEFAULT_SHIFT_NORM) -> Outcomes:
    """Per-sample outcomes behind RA and RR (device side, traceable; no validation).

    Args:
      p_clean: f32[N,C] clean probabilities. p_adv: f32[E,N,C] attacked. y: int[N] labels.
      norm: the output-change norm of RR.

    Returns:
      :class:`Outcomes`. Ties in ``argmax`` resolve to the lower class index (0 = real).
    """
    clean_valid = jnp.all(jnp.isfinite(p_clean), axis=-1)
    valid = jnp.all(jnp.isfinite(p_adv), axis=-1) & clean_valid[None]
    pred, pred_clean = jnp.argmax(p_adv, -1), jnp.argmax(p_clean, -1)
    shift = output_change(p_clean, p_adv, norm)
    return Outcomes(
        shift=jnp.where(valid, shift, 0.0), correct=(pred == y[None]) & valid,
        same_label=(pred == pred_clean[None]) & valid, valid=valid,
        clean_correct=(pred_clean == y) & clean_valid, clean_valid=clean_valid,
    )


def robust_outcomes(shift: ArrayLike, tolerance: ArrayLike, *, same_label: ArrayLike | None = None,
                    valid: ArrayLike | None = None) -> np.ndarray:
    """φ_rob per tolerance and sample: the definition of "robust" (host, NumPy).

    Args:
      shift: f[..., N] output changes (as :func:`output_change` gives them).
      tolerance: f[B] tolerances, compared as float32; φ = 1[shift ≤ b] (inclusive).
      same_label: optional bool[..., N]; given, the strict variant also requires it.
      valid: optional bool[..., N]; invalid samples are never robust.

    Returns:
      bool[..., B, N]. Summing the last axis gives :func:`robust_counts`.
    """
    shift = np.asarray(shift)
    # Tolerances are float32 values everywhere (records store them so): a float32 shift equal to
    # float32(b) is robust whatever precision the caller holds the shifts in.
    ok = shift[..., None, :] <= np.asarray(tolerance, np.float32).reshape((-1, 1))
    for extra in (same_label, valid):
        if extra is not None:
            ok &= np.asarray(extra, bool)[..., None, :]
    return ok


@jax.jit
def _counts_within(shift: jax.Array, tolerance: jax.Array, keep: jax.Array) -> jax.Array:
    # Excluded samples sort last (inf is never <= a finite tolerance); the count of shifts <= b
    # is then one binary search per tolerance.
    lead = shift.shape[:-1]
    ordered = jnp.sort(jnp.where(keep, shift, jnp.inf), axis=-1).reshape((-1, shift.shape[-1]))
    counts = jax.vmap(lambda row: jnp.searchsorted(row, tolerance, side="right"))(ordered)
    return counts.astype(jnp.int32).reshape(lead + tolerance.shape)


def robust_counts(shift: ArrayLike, tolerance: ArrayLike, *, same_label: ArrayLike | None = None,
                  mask: ArrayLike | None = None) -> jax.Array:
    """Samples with φ_rob = 1 per tolerance: ``int32[..., B]`` from ``shift[..., N]`` (traceable).

    Equals ``robust_outcomes(shift, tolerance, same_label=..., valid=mask).sum(-1)`` (tested)
    in ``O(N log N + B log N)`` per row. ``mask`` drops samples (padding, invalid outputs).
    """
    shift = jnp.asarray(shift)
    keep = jnp.ones(shift.shape, bool)
    for extra in (same_label, mask):
        if extra is not None:
            keep = keep & jnp.broadcast_to(jnp.asarray(extra, bool), shift.shape)
    return _counts_within(shift, jnp.atleast_1d(jnp.asarray(tolerance, shift.dtype)), keep)


def accuracy_counts(p_adv: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Correct (and valid) predictions per grid point: ``int32[E]`` from ``p_adv[E,N,C]`` (traceable)."""
    p, squeeze = _with_grid(jnp.asarray(p_adv))
    keep = jnp.all(jnp.isfinite(p), axis=-1)
    if mask is not None:
        keep = keep & jnp.asarray(mask, bool)[None]
    out = jnp.sum((jnp.argmax(p, -1) == jnp.asarray(y)[None]) & keep, axis=-1, dtype=jnp.int32)
    return out[0] if squeeze else out


def robust_ratio_counts(p_clean: jax.Array, p_adv: jax.Array, tolerance: jax.Array, *,
                        norm: str = DEFAULT_SHIFT_NORM, require_same_label: bool = False,
                        mask: jax.Array | None = None) -> jax.Array:
    """Samples with ``‖p_adv − p_clean‖ ≤ b``: ``int32[E,B]`` (traceable, no validation).

    ``p_clean: f32[N,C]``, ``p_adv: f32[E,N,C]``, ``tolerance: f32[B]``, ``mask: bool[N]``.
    """
    p, squeeze = _with_grid(jnp.asarray(p_adv))
    o = outcomes(jnp.asarray(p_clean), p, jnp.zeros(p.shape[1], jnp.int32), norm=norm)
    keep = o.valid if mask is None else o.valid & jnp.asarray(mask, bool)[None]
    out = robust_counts(o.shift, jnp.asarray(tolerance, p.dtype),
                        same_label=o.same_label if require_same_label else None, mask=keep)
    return out[0] if squeeze else out


def _check_pair(p_clean: Any, p_adv: Any) -> tuple[jax.Array, jax.Array]:
    p_clean = jnp.asarray(V.as_probabilities(p_clean, name="p_clean", ranks=(2,)))
    p_adv = jnp.asarray(V.as_probabilities(p_adv, name="p_adv", ranks=(2, 3)))
    if p_adv.shape[-2:] != p_clean.shape:
        raise ValueError(
            f"p_adv has shape {tuple(p_adv.shape)} but p_clean has {tuple(p_clean.shape)}; "
            "expected p_adv [E,N,C] or [N,C] with the same N and C"
        )
    return p_clean, p_adv


def robust_accuracy(p_adv: ArrayLike, y: ArrayLike) -> jax.Array:
    """Robust accuracy ``RA = (1/N) Σ 1[argmax p_adv_i = y_i]``.

    Args:
      p_adv: f32[E,N,C] (or f32[N,C]) probabilities on attacked inputs.
      y: int[N] labels (0 = real, 1 = fake).

    Returns:
      f32[E] (or a scalar).

    Example:
      >>> robust_accuracy([[0.9, 0.1], [0.4, 0.6]], [0, 0])
      Array(0.5, dtype=float32)
    """
    p = jnp.asarray(V.as_probabilities(p_adv, name="p_adv", ranks=(2, 3)))
    y = jnp.asarray(V.as_labels(y, p.shape[-2], name="y", num_classes=p.shape[-1]))
    return accuracy_counts(p, y).astype(jnp.float32) / p.shape[-2]


def robust_ratio(p_clean: ArrayLike, p_adv: ArrayLike, tolerance: ArrayLike, *, norm: str = DEFAULT_SHIFT_NORM,
                 require_same_label: bool = False) -> jax.Array:
    """Robust ratio ``RR(b) = (1/N) Σ 1[‖p_adv_i − p_clean_i‖ ≤ b]`` over a tolerance grid.

    Args:
      p_clean: f32[N,C] clean probabilities.
      p_adv: f32[E,N,C] (or f32[N,C]) probabilities on attacked inputs.
      tolerance: scalar or f32[B] grid of tolerances ``b ≥ 0`` (inclusive: shift = b is robust).
      norm: output-change norm over the class axis: ``"linf"`` (default), ``"l1"``, ``"l2"``.
      require_same_label: the strict variant: a sample also needs its predicted label unchanged.

    Returns:
      f32[E,B]; the ``E`` axis is dropped for ``p_adv[N,C]`` and the ``B`` axis for a scalar
      tolerance.

    Example:
      >>> robust_ratio([[0.5, 0.5], [1.0, 0.0]], [[[0.75, 0.25], [0.5, 0.5]]], [0.25, 0.5])
      Array([[0.5, 1. ]], dtype=float32)
    """
    V.check_choice(norm, SHIFT_NORMS, name="norm")
    p_clean, p_adv = _check_pair(p_clean, p_adv)
    tol, scalar = V.as_grid(tolerance, name="tolerance", lower=0.0)
    rr = robust_ratio_counts(
        p_clean, p_adv, jnp.asarray(tol), norm=norm, require_same_label=require_same_label
    ).astype(jnp.float32) / p_clean.shape[0]
    return rr[..., 0] if scalar else rr


@dataclasses.dataclass(frozen=True)
class Summary:
    """RA and RR with confidence intervals from counts (host, NumPy).

    Attributes:
      n: int[E] samples with a verdict (finite clean and attacked outputs) at each ε.
      n_correct: int[E]; n_robust: int[E,B].
      ra: f64[E] = n_correct / n; ra_ci: f64[E,2].
      rr: f64[E,B] = n_robust / n; rr_ci: f64[E,B,2].
      ci_method: the interval method.
    """

    n: np.ndarray
    n_correct: np.ndarray
    n_robust: np.ndarray
    ra: np.ndarray
    ra_ci: np.ndarray
    rr: np.ndarray
    rr_ci: np.ndarray
    ci_method: str


def summarise(n_correct: ArrayLike, n_robust: ArrayLike, n: ArrayLike, *, ci_method: str = "wilson") -> Summary:
    """Counts -> RA, RR and their intervals: the one summariser of ``evaluate`` and the sweep.

    Args:
      n_correct: int[E] correct predictions under attack.
      n_robust: int[E,B] samples within each tolerance.
      n: int[E] (or a scalar) samples with a verdict at each ε. Where ``n = 0`` (every output
        non-finite) the ratios and intervals are NaN: there is nothing to estimate.
      ci_method: ``"wilson"`` or ``"clopper_pearson"``.
    """
    V.check_choice(ci_method, CI_METHODS, name="ci_method")
    k_ra = np.asarray(n_correct, np.int64)
    k_rr = np.asarray(n_robust, np.int64)
    n = np.broadcast_to(np.asarray(n, np.int64), k_ra.shape)
    empty = n == 0
    safe = np.where(empty, 1, n)
    ra_ci = np.where(empty[..., None], np.nan, binomial_ci(np.where(empty, 0, k_ra), safe, method=ci_method))
    rr_ci = np.where(empty[..., None, None], np.nan,
                     binomial_ci(np.where(empty[..., None], 0, k_rr), safe[..., None], method=ci_method))
    with np.errstate(invalid="ignore", divide="ignore"):
        ra = np.where(empty, np.nan, k_ra / safe)
        rr = np.where(empty[..., None], np.nan, k_rr / safe[..., None])
    return Summary(n.copy(), k_ra, k_rr, ra, ra_ci, rr, rr_ci, ci_method)
