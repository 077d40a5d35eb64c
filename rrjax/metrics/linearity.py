"""How linearly RR grows with the tolerance (the paper's image-vs-video question): R² of a
straight line through RR(b), and bootstrap intervals for comparing two sample sets."""

from __future__ import annotations

import dataclasses

import numpy as np
from jax.typing import ArrayLike

from rrjax import _validation as V
from rrjax.metrics.robustness import robust_outcomes

__all__ = ["tolerance_linearity", "LinearityResult", "linearity_bootstrap"]


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
    r2 = _r2_rows(b, r[None])[0]
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
    """R² of the least-squares line through ``(b, rr[k])`` for every row ``k`` (1 where constant):
    the squared correlation of ``b`` and ``rr[k]``, which equals ``1 − SSE/SST`` of that line."""
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
