"""Paired comparisons of two models on the same samples: exact McNemar (RA) and the paired
bootstrap (any per-sample mean, e.g. φ_rob for an RR difference)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from jax.typing import ArrayLike
from scipy import stats

from rrjax import _validation as V

__all__ = ["McNemarResult", "mcnemar_exact", "BootstrapResult", "paired_bootstrap"]


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
