"""Confidence intervals for binomial proportions (RA and RR are proportions of samples)."""

from __future__ import annotations

import numpy as np
from jax.typing import ArrayLike
from scipy import stats

from rrjax import _validation as V

__all__ = ["CI_METHODS", "binomial_ci"]

CI_METHODS = ("wilson", "clopper_pearson")


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
