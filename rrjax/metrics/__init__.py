"""Robust accuracy, robust ratio, their confidence intervals and model comparisons.

Robust accuracy ``RA = (1/N) Σ 1[argmax p(x_i') = y_i]`` and robust ratio
``RR(b) = (1/N) Σ 1[‖p(x_i') − p(x_i)‖ ≤ b]`` (Lyu, Jin & Das, NLDL 2025), vectorised over the
ε grid (axis ``E``) and a tolerance grid (axis ``B``).

* :mod:`rrjax.metrics.robustness`: the output change, per-sample outcomes (device), φ_rob and
  its counts, the public ratio functions and the host-side :func:`summarise` (counts -> RA/RR
  with intervals) that ``rrjax.evaluate`` and the sweep share. Counts add across batches,
  devices and hosts (a boolean ``mask`` drops padding); ratios are formed on the host.
* :mod:`rrjax.metrics.intervals`: Wilson / Clopper–Pearson intervals.
* :mod:`rrjax.metrics.paired`: exact McNemar and the paired bootstrap (two models, same samples).
* :mod:`rrjax.metrics.linearity`: how linearly RR grows with the tolerance.

Default output-change norm: ``linf`` (see BUILD_NOTES.md). For two classes,
``‖Δp‖_∞ = |Δ p_fake|``: the tolerance ``b`` reads directly as "the predicted probability of
*fake* moves by at most ``b``", and the grid ``b ∈ [0, 1]`` covers every possible shift.
``l1`` (total variation ×2) and ``l2`` are available.
"""

from rrjax.metrics.intervals import CI_METHODS, binomial_ci
from rrjax.metrics.linearity import LinearityResult, linearity_bootstrap, tolerance_linearity
from rrjax.metrics.paired import BootstrapResult, McNemarResult, mcnemar_exact, paired_bootstrap
from rrjax.metrics.robustness import (
    DEFAULT_SHIFT_NORM,
    SHIFT_ATOL,
    SHIFT_NORMS,
    Outcomes,
    Summary,
    accuracy_counts,
    output_change,
    outcomes,
    prob_shift,
    probability_shift,
    robust_accuracy,
    robust_counts,
    robust_outcomes,
    robust_ratio,
    robust_ratio_counts,
    softmax_or_nan,
    summarise,
)

__all__ = [
    "robust_accuracy", "robust_ratio", "accuracy_counts", "robust_ratio_counts", "robust_counts",
    "robust_outcomes", "prob_shift", "probability_shift", "output_change", "outcomes", "Outcomes",
    "summarise", "Summary", "softmax_or_nan", "binomial_ci", "McNemarResult", "mcnemar_exact", "BootstrapResult",
    "paired_bootstrap", "tolerance_linearity", "LinearityResult", "linearity_bootstrap",
    "DEFAULT_SHIFT_NORM", "SHIFT_ATOL", "SHIFT_NORMS", "CI_METHODS",
]
