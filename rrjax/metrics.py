"""Robust accuracy, robust ratio, their confidence intervals and paired model comparisons.

Robust accuracy ``RA = (1/N) Σ 1[argmax p(x_i') = y_i]`` and robust ratio
``RR(b) = (1/N) Σ 1[‖p(x_i') − p(x_i)‖ ≤ b]`` (Lyu, Jin & Das, NLDL 2025), vectorised over the
ε grid (axis ``E``) and a tolerance grid (axis ``B``).

Both reduce to counts first (``*_counts``: ``n_ok`` out of ``n``) so that partial results add
across batches, devices and hosts; the ratios are formed on the host. A boolean ``mask[N]``
drops padding samples from every count.

Default output-change norm: ``linf`` (see BUILD_NOTES.md). For two classes,
``‖Δp‖_∞ = |Δ p_fake|``: the tolerance ``b`` reads directly as "the predicted probability of
*fake* moves by at most ``b``", and the grid ``b ∈ [0, 1]`` covers every possible shift.
``l1`` (total variation ×2) and ``l2`` are available.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike
from scipy import stats

from rrjax import _validation as V
from rrjax.attacks._common import SHIFT_NORMS, probability_shift

__all__ = [
    "robust_accuracy",
    "robust_ratio",
    "accuracy_counts",
    "robust_ratio_counts",
    "prob_shift",
    "per_sample_outcomes",
    "binomial_ci",
    "McNemarResult",
    "mcnemar_exact",
    "BootstrapResult",
    "paired_bootstrap",
    "tolerance_linearity",
    "LinearityResult",
    "linearity_bootstrap",
    "robust_outcomes",
    "DEFAULT_SHIFT_NORM",
    "SHIFT_ATOL",
]

DEFAULT_SHIFT_NORM = "linf"
# Output changes at or below this are float32 noise: clean and attacked probabilities come
# from differently batched programs (chunks, devices, the ε grid folded into the batch) and
# can differ by a few ulp even for an unmoved input. They count as exactly zero, so RR at
# b = 0 means "unchanged" rather than "bit-identical".
SHIFT_ATOL = 1e-6
CI_METHODS = ("wilson", "clopper_pearson")


# --------------------------------------------------------------------------- device-side counts

def _with_grid(p_adv: jax.Array) -> tuple[jax.Array, bool]:
    return (p_adv, False) if p_adv.ndim == 3 else (p_adv[None], True)


def _mask(mask: jax.Array | None, n: int) -> jax.Array:
    return jnp.ones((n,), bool) if mask is None else mask.astype(bool)


@jax.jit
def _accuracy_counts(p_adv: jax.Array, y: jax.Array, mask: jax.Array) -> jax.Array:
    correct = (jnp.argmax(p_adv, axis=-1) == y[None]) & mask[None]
    return jnp.sum(correct, axis=-1, dtype=jnp.int32)


def accuracy_counts(p_adv: jax.Array, y: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Correct predictions per grid point: ``int32[E]`` from ``p_adv[E,N,C]`` (traceable).

    Ties in ``argmax`` resolve to the lower class index (0 = real), as ``jnp.argmax`` does.
    """
    p, squeeze = _with_grid(p_adv)
    out = _accuracy_counts(p, y, _mask(mask, p.shape[1]))
    return out[0] if squeeze else out


def _output_change(p_clean: jax.Array, p_adv: jax.Array, norm: str) -> jax.Array:
    """``‖p_adv − p_clean‖`` per sample, ``[E,N]``, with float noise (≤ SHIFT_ATOL) set to 0."""
    s = probability_shift(p_clean[None], p_adv, norm)
    return jnp.where(s <= SHIFT_ATOL, 0.0, s)


def prob_shift(p_clean: ArrayLike, p_adv: ArrayLike, *, norm: str = DEFAULT_SHIFT_NORM) -> jax.Array:
    """Per-sample output change ``‖p_adv − p_clean‖`` over classes: ``[E,N]`` (or ``[N]``).

    Changes ``≤ SHIFT_ATOL`` (1e-6, float32 noise) are reported as 0.

    Args:
      p_clean: f32[N,C] clean probabilities.
      p_adv: f32[E,N,C] (or f32[N,C]) probabilities on attacked inputs.
      norm: ``"linf"`` (default), ``"l1"`` or ``"l2"``.
    """
    V.check_choice(norm, SHIFT_NORMS, name="norm")
    p, squeeze = _with_grid(jnp.asarray(p_adv, jnp.float32))
    out = _output_change(jnp.asarray(p_clean, jnp.float32), p, norm)
    return out[0] if squeeze else out


@functools.partial(jax.jit, static_argnames=("norm", "require_same_label"))
def _robust_counts(p_clean, p_adv, tolerance, mask, *, norm, require_same_label):
    shift = _output_change(p_clean, p_adv, norm)  # [E,N]
    keep = jnp.broadcast_to(mask[None], shift.shape)
    if require_same_label:
        keep = keep & (jnp.argmax(p_adv, -1) == jnp.argmax(p_clean, -1)[None])
    # Excluded samples sort last and are never <= any tolerance; the count of shifts <= b is
    # then a binary search per tolerance: O(E·N log N + E·B log N) instead of O(E·N·B).
    ordered = jnp.sort(jnp.where(keep, shift, jnp.inf), axis=-1)
    return jax.vmap(lambda row: jnp.searchsorted(row, tolerance, side="right"))(ordered).astype(jnp.int32)


def robust_ratio_counts(
    p_clean: jax.Array,
    p_adv: jax.Array,
    tolerance: jax.Array,
    *,
    norm: str = DEFAULT_SHIFT_NORM,
    require_same_label: bool = False,
    mask: jax.Array | None = None,
) -> jax.Array:
    """Samples with ``‖p_adv − p_clean‖ ≤ b``: ``int32[E,B]`` (traceable, no validation).

    ``p_clean: f32[N,C]``, ``p_adv: f32[E,N,C]``, ``tolerance: f32[B]``, ``mask: bool[N]``.
    The comparison is inclusive: a shift exactly equal to ``b`` counts as robust; shifts
    ``≤ SHIFT_ATOL`` count as 0.
    """
    p, squeeze = _with_grid(p_adv)
    out = _robust_counts(
        p_clean, p, jnp.atleast_1d(tolerance).astype(p.dtype), _mask(mask, p.shape[1]),
        norm=norm, require_same_label=bool(require_same_label),
    )
    return out[0] if squeeze else out


@functools.partial(jax.jit, static_argnames=("norm", "require_same_label"))
def per_sample_outcomes(
    p_clean: jax.Array,
    p_adv: jax.Array,
    y: jax.Array,
    tolerance: jax.Array,
    *,
    norm: str = DEFAULT_SHIFT_NORM,
    require_same_label: bool = False,
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per-sample outcomes behind RA and RR, for paired tests and histograms (traceable).

    Args:
      p_clean: f32[N,C]; p_adv: f32[E,N,C]; y: int[N]; tolerance: f32[B].

    Returns:
      ``shift f32[E,N]``, ``correct bool[E,N]`` (under attack), ``robust bool[E,B,N]``
      (φ_rob) and ``clean_correct bool[N]``. Summing the last axis gives the counts of
      :func:`accuracy_counts` and :func:`robust_ratio_counts`.
    """
    shift = _output_change(p_clean, p_adv, norm)
    correct = jnp.argmax(p_adv, -1) == y[None]
    robust = shift[:, None, :] <= tolerance[None, :, None]
    if require_same_label:
        same = jnp.argmax(p_adv, -1) == jnp.argmax(p_clean, -1)[None]
        robust = robust & same[:, None, :]
    return shift, correct, robust, jnp.argmax(p_clean, -1) == y


def robust_outcomes(
    shift: ArrayLike, tolerance: ArrayLike, *, same_label: ArrayLike | None = None
) -> np.ndarray:
    """φ_rob per tolerance and sample from stored per-sample shifts (host, NumPy).

    Args:
      shift: f[..., N] output changes ``‖p(x') − p(x)‖`` (already floored at ``SHIFT_ATOL``).
      tolerance: f[B] tolerances.
      same_label: optional bool[..., N]; given, the strict variant also requires it.

    Returns:
      bool[..., B, N]: ``shift ≤ b`` (inclusive), and ``same_label`` when given. Summing the last
      axis gives the counts of :func:`robust_ratio_counts`.
    """
    shift = np.asarray(shift)
    tol = np.asarray(tolerance, np.float32).reshape((-1, 1))
    ok = shift[..., None, :] <= tol
    if same_label is not None:
        ok &= np.asarray(same_label, bool)[..., None, :]
    return ok


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


def robust_ratio(
    p_clean: ArrayLike,
    p_adv: ArrayLike,
    tolerance: ArrayLike,
    *,
    norm: str = DEFAULT_SHIFT_NORM,
    require_same_label: bool = False,
) -> jax.Array:
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


# --------------------------------------------------------------------------- intervals (host)

def binomial_ci(
    successes: ArrayLike, n: ArrayLike, *, level: float = 0.95, method: str = "wilson"
) -> np.ndarray:
    """Two-sided confidence interval for a binomial proportion, element-wise.

    Args:
      successes: int array of counts ``k``.
      n: int array (broadcastable) of trials, ``n ≥ 1``.
      level: confidence level in (0, 1).
      method: ``"wilson"`` (score interval; default, good coverage at small n and near 0/1)
        or ``"clopper_pearson"`` (exact, conservative).

    Returns:
      f64[..., 2] with ``(lower, upper)``.

    References:
      Wilson (1927), JASA 22:209; Clopper & Pearson (1934), Biometrika 26:404.
    """
    V.check_choice(method, CI_METHODS, name="method")
    level = V.check_number(level, name="level", lower=0.0, upper=1.0, strict=True)
    if level >= 1.0:
        raise ValueError(f"level={level} must be < 1")
    k = np.asarray(successes, np.float64)
    n = np.broadcast_to(np.asarray(n, np.float64), k.shape)
    if np.any(n < 1) or np.any(k < 0) or np.any(k > n):
        raise ValueError("binomial_ci needs 0 <= successes <= n and n >= 1")
    alpha = 1.0 - level
    if method == "wilson":
        z = stats.norm.ppf(1.0 - alpha / 2.0)
        centre = (k + z * z / 2.0) / (n + z * z)
        half = z / (n + z * z) * np.sqrt(k * (n - k) / n + z * z / 4.0)
        # Exactly, the interval contains k/n and reaches 0 (1) at k = 0 (n); in floating point
        # centre - half can come out as 3e-18 at k = 0, so both facts are imposed.
        p = k / n
        lo = np.where(k == 0, 0.0, np.clip(np.minimum(centre - half, p), 0.0, 1.0))
        hi = np.where(k == n, 1.0, np.clip(np.maximum(centre + half, p), 0.0, 1.0))
    else:
        with np.errstate(invalid="ignore"):
            lo = np.where(k > 0, stats.beta.ppf(alpha / 2.0, k, n - k + 1), 0.0)
            hi = np.where(k < n, stats.beta.ppf(1.0 - alpha / 2.0, k + 1, n - k), 1.0)
    return np.stack([lo, hi], axis=-1)


# --------------------------------------------------------------------------- paired comparisons

def _paired(a: Any, b: Any, name_a: str, name_b: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has shape {a.shape} but {name_b} has {b.shape}; a paired comparison "
            "needs both models evaluated on the same samples (samples on the last axis)"
        )
    if a.ndim == 0 or a.shape[-1] == 0:
        raise ValueError(f"{name_a} must have a non-empty sample axis (last), got shape {a.shape}")
    return a, b


@dataclasses.dataclass(frozen=True)
class McNemarResult:
    """Exact McNemar test of two models' correctness on the same samples.

    Attributes:
      difference: ``RA_a − RA_b``.
      a_only: samples model a gets right and model b wrong (``b`` in McNemar's notation).
      b_only: samples model b gets right and model a wrong (``c``).
      p_value: two-sided exact binomial p-value of ``a_only`` vs ``b_only`` (1 when no discordant pairs).
    """

    difference: np.ndarray
    a_only: np.ndarray
    b_only: np.ndarray
    p_value: np.ndarray


def mcnemar_exact(correct_a: ArrayLike, correct_b: ArrayLike) -> McNemarResult:
    """Exact McNemar test for a difference in robust accuracy between two models.

    Args:
      correct_a: bool[..., N], whether model a is correct on each sample (e.g. under attack).
      correct_b: bool[..., N], the same for model b on the same samples in the same order.

    Returns:
      :class:`McNemarResult` with arrays of the leading shape ``[...]``.

    References:
      McNemar (1947), Psychometrika 12:153; exact form: a two-sided binomial test on the
      discordant pairs with p = 1/2.
    """
    a, b = _paired(correct_a, correct_b, "correct_a", "correct_b")
    a, b = a.astype(bool), b.astype(bool)
    a_only = np.sum(a & ~b, axis=-1)
    b_only = np.sum(~a & b, axis=-1)
    discordant = a_only + b_only
    p = np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(a_only, b_only), discordant, 0.5))
    p = np.where(discordant == 0, 1.0, p)
    diff = (a_only - b_only) / a.shape[-1]
    return McNemarResult(np.asarray(diff), np.asarray(a_only), np.asarray(b_only), np.asarray(p))


@dataclasses.dataclass(frozen=True)
class BootstrapResult:
    """Paired bootstrap of a difference of per-sample means (e.g. ``RR_a − RR_b``).

    Attributes:
      difference: observed ``mean(a) − mean(b)``.
      ci: ``[..., 2]`` percentile interval of the bootstrap differences.
      p_value: two-sided bootstrap p-value, ``2·min(P*(d ≤ 0), P*(d ≥ 0))`` capped at 1.
      n_boot: number of resamples.
    """

    difference: np.ndarray
    ci: np.ndarray
    p_value: np.ndarray
    n_boot: int


def paired_bootstrap(
    values_a: ArrayLike,
    values_b: ArrayLike,
    *,
    n_boot: int = 10_000,
    level: float = 0.95,
    seed: int = 0,
    block: int = 1000,
) -> BootstrapResult:
    """Paired bootstrap CI for a difference of means on the same samples.

    Resamples *samples* (not models): every resample draws the same N sample indices for
    both models, so the correlation between the models' outcomes is kept. All leading grid
    cells (e.g. every ε and tolerance) share the resamples.

    Args:
      values_a: [..., N] per-sample values of model a (e.g. φ_rob as 0/1 for RR).
      values_b: [..., N] the same for model b, on the same samples in the same order.
      n_boot: number of bootstrap resamples.
      level: confidence level of the percentile interval.
      seed: NumPy seed of the resampling (recorded, deterministic).
      block: resamples drawn per block (bounds memory to ``block × N`` counts).

    Returns:
      :class:`BootstrapResult` with leading shape ``[...]``.

    References:
      Efron & Tibshirani, "An Introduction to the Bootstrap" (1993), ch. 13 (percentile CI).
    """
    a, b = _paired(values_a, values_b, "values_a", "values_b")
    n_boot = V.check_int(n_boot, name="n_boot", minimum=1)
    level = V.check_number(level, name="level", lower=0.0, upper=1.0, strict=True)
    d = (a.astype(np.float64) - b.astype(np.float64))
    lead, n = d.shape[:-1], d.shape[-1]
    d = d.reshape(-1, n)
    rng = np.random.default_rng(seed)
    draws = []
    for start in range(0, n_boot, block):
        m = min(block, n_boot - start)
        counts = rng.multinomial(n, np.full(n, 1.0 / n), size=m)  # resample weights [m, N]
        draws.append(counts @ d.T / n)
    boot = np.concatenate(draws, axis=0)  # [n_boot, M]
    alpha = 1.0 - level
    ci = np.quantile(boot, [alpha / 2.0, 1.0 - alpha / 2.0], axis=0).T
    p = np.minimum(1.0, 2.0 * np.minimum((boot <= 0).mean(0), (boot >= 0).mean(0)))
    return BootstrapResult(
        d.mean(-1).reshape(lead), ci.reshape(lead + (2,)), p.reshape(lead), n_boot
    )


def tolerance_linearity(tolerance: ArrayLike, rr: ArrayLike) -> tuple[float, float]:
    """How linearly RR grows with the tolerance (the paper's image-vs-video question).

    Args:
      tolerance: f[B] increasing tolerances (B >= 2).
      rr: f[B] robust ratio at those tolerances.

    Returns:
      ``(r2, max_gap)``: R² of the least-squares line through ``(b, RR(b))`` (1 = a straight
      line; defined as 1 when RR is constant), and the largest ``|RR(b) − chord(b)|`` where the
      chord joins the first and last points.
    """
    b, r = np.asarray(tolerance, np.float64), np.asarray(rr, np.float64)
    if b.ndim != 1 or b.shape != r.shape or len(b) < 2 or np.any(np.diff(b) <= 0):
        raise ValueError(f"tolerance and rr must be 1-D of equal length >= 2 with increasing tolerances; "
                         f"got shapes {b.shape} and {r.shape}")
    slope, intercept = np.polyfit(b, r, 1)
    total = np.sum((r - r.mean()) ** 2)
    r2 = 1.0 if total == 0 else 1.0 - np.sum((r - (slope * b + intercept)) ** 2) / total
    chord = r[0] + (r[-1] - r[0]) * (b - b[0]) / (b[-1] - b[0])
    return float(r2), float(np.max(np.abs(r - chord)))


@dataclasses.dataclass(frozen=True)
class LinearityResult:
    """R² of RR(b) for two sample sets, and bootstrap CIs of each and of ``r2_a − r2_b``."""

    r2_a: float
    r2_b: float
    r2_a_ci: np.ndarray  # f64[2]
    r2_b_ci: np.ndarray  # f64[2]
    diff_ci: np.ndarray  # f64[2]
    n_boot: int


def _r2_rows(b: np.ndarray, rr: np.ndarray) -> np.ndarray:
    """R² of the least-squares line through ``(b, rr[k])`` for every row ``k`` (1 where constant)."""
    bc = b - b.mean()
    rc = rr - rr.mean(axis=-1, keepdims=True)
    total = np.sum(rc**2, axis=-1)
    explained = np.sum(rc * bc, axis=-1) ** 2 / np.sum(bc**2)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total <= 1e-15, 1.0, explained / np.where(total <= 1e-15, 1.0, total))


def linearity_bootstrap(
    shift_a: ArrayLike,
    shift_b: ArrayLike,
    tolerance: ArrayLike,
    *,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> LinearityResult:
    """How sure is "RR grows more linearly for a than for b"? Bootstrap CIs of the R² of RR(b).

    The two sample sets may differ (e.g. a video detector on clips and an image detector on
    images), so each is resampled independently (an unpaired bootstrap); R² is that of
    :func:`tolerance_linearity`, computed from ``RR(b) = mean(shift ≤ b)`` per resample.

    Args:
      shift_a, shift_b: f[N_a], f[N_b] per-sample output changes ``‖p(x') − p(x)‖`` (as stored
        by the sweep, floored at ``SHIFT_ATOL``).
      tolerance: f[B] increasing tolerances (B ≥ 2).
      n_boot, level, seed: resamples, confidence level (percentile intervals), NumPy seed.

    Returns:
      :class:`LinearityResult`: point R² of each set and percentile CIs of each and of
      ``r2_a − r2_b``.
    """
    b = np.asarray(tolerance, np.float64)
    if b.ndim != 1 or len(b) < 2 or np.any(np.diff(b) <= 0):
        raise ValueError(f"tolerance must be 1-D, increasing, with >= 2 values; got {np.asarray(tolerance)!r}")
    n_boot = V.check_int(n_boot, name="n_boot", minimum=1)
    level = V.check_number(level, name="level", lower=0.0, upper=1.0, strict=True)
    rng = np.random.default_rng(seed)
    points, boots = [], []
    for name, shift in (("shift_a", shift_a), ("shift_b", shift_b)):
        s = np.asarray(shift, np.float64)
        if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or np.any(s < 0):
            raise ValueError(f"{name} must be a non-empty 1-D array of finite shifts >= 0; got shape {s.shape}")
        phi = robust_outcomes(s, b).astype(np.float64)  # [B, N]
        points.append(float(_r2_rows(b, phi.mean(-1)[None])[0]))
        weights = rng.multinomial(s.size, np.full(s.size, 1.0 / s.size), size=n_boot)  # [n_boot, N]
        boots.append(_r2_rows(b, weights @ phi.T / s.size))
    q = [(1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0]
    return LinearityResult(
        points[0], points[1], np.quantile(boots[0], q), np.quantile(boots[1], q),
        np.quantile(boots[0] - boots[1], q), n_boot,
    )

