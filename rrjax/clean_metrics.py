"""Clean (no-attack) detection metrics: ACC, AUC, EER, AP, and video-level aggregation.

These are the numbers deepfake-detection papers report for a detector on unperturbed data
(DeepfakeBench reports frame-level ACC, AUC, EER, AP and video-level AUC). They are host-side
NumPy functions of one score per sample: at most a few hundred thousand scores, computed once
per evaluation, so there is nothing to gain from jit and exact tie handling is easier on the host.

Conventions:
  * ``scores: f[N]``: any real score where higher means "more likely fake" (the probability of
    class 1, or the logit margin ``logits[:, 1] - logits[:, 0]``; ranking metrics only depend on
    the order). ``labels: int[N]`` in {0, 1}, 0 = real, 1 = fake (the positive class).
  * ACC thresholds probabilities: a sample is called fake when ``score > threshold`` (0.5). With
    two classes this is ``argmax`` of the probability vector with ties going to class 0, as
    ``jnp.argmax`` breaks them.
  * AUC is the Mann-Whitney U statistic over average ranks, so tied scores count one half: the
    exact area under the ROC curve with ties drawn as diagonal segments.
  * EER is read off the ROC curve with linear interpolation (see ``equal_error_rate``).
  * AP is the step-wise sum ``sum_k (R_k - R_{k-1}) P_k`` over distinct thresholds, the
    definition of scikit-learn's ``average_precision_score`` (no trapezoid, no interpolation).
  * AUC, EER and AP need both classes; with one class they raise (``binary_metrics`` reports
    them as ``None`` instead, so an evaluation loop on a one-class split does not crash).

References:
  Fawcett, "An introduction to ROC analysis", Pattern Recognition Letters 27 (2006).
  Mann & Whitney, "On a test of whether one of two random variables is stochastically larger
  than the other", Ann. Math. Statist. 18 (1947).
  Yan et al., "DeepfakeBench: A Comprehensive Benchmark of Deepfake Detection", NeurIPS 2023.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from rrjax._validation import as_labels, check_number

__all__ = [
    "accuracy",
    "roc_curve",
    "roc_auc",
    "equal_error_rate",
    "average_precision",
    "video_scores",
    "binary_metrics",
    "clean_metrics",
]


def _as_scores(scores: Any, *, name: str = "scores") -> np.ndarray:
    arr = np.asarray(scores)
    if arr.ndim != 1 or arr.shape[0] == 0:
        raise ValueError(f"{name} has shape {arr.shape}; expected a non-empty 1-D array [N], one score per sample")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{name} has dtype {arr.dtype}; expected real-valued scores")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf; expected finite scores")
    return arr


def _inputs(scores: Any, labels: Any, *, both_classes: bool) -> tuple[np.ndarray, np.ndarray]:
    s = _as_scores(scores)
    y = np.asarray(as_labels(np.asarray(labels), s.shape[0], name="labels"))
    if both_classes:
        n_pos = int(y.sum())
        if n_pos == 0 or n_pos == y.shape[0]:
            only = "fake (1)" if n_pos else "real (0)"
            raise ValueError(
                f"labels are all {only}; AUC, EER and AP need at least one real and one fake sample"
            )
    return s, y


def accuracy(scores: Any, labels: Any, *, threshold: float = 0.5) -> float:
    """Fraction of samples classified correctly when ``score > threshold`` means fake.

    Args:
      scores: f[N], probability of fake (class 1).
      labels: int[N] in {0, 1}.
      threshold: decision threshold; 0.5 on probabilities equals ``argmax`` (ties -> real).

    Returns:
      ACC in [0, 1].
    """
    s, y = _inputs(scores, labels, both_classes=False)
    threshold = check_number(threshold, name="threshold")
    return float(np.mean((s > threshold).astype(np.int32) == y))


def roc_curve(scores: Any, labels: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC curve with one point per distinct score, from (0, 0) to (1, 1).

    Args:
      scores: f[N], higher = more likely fake.
      labels: int[N] in {0, 1}, both classes present.

    Returns:
      ``(fpr, tpr, thresholds)``, each ``f64[K+1]`` for K distinct scores: point ``k`` classifies
      ``score >= thresholds[k]`` as fake; ``thresholds[0] = +inf`` gives the point (0, 0).
      Tied samples move the curve together (a diagonal segment).
    """
    s, y = _inputs(scores, labels, both_classes=True)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    # The last index of each run of equal scores: the curve only moves between distinct scores.
    ends = np.flatnonzero(np.diff(s) != 0)
    ends = np.append(ends, s.shape[0] - 1)
    tps = np.cumsum(y)[ends].astype(np.float64)
    fps = (ends + 1) - tps
    tpr = np.concatenate([[0.0], tps / tps[-1]])
    fpr = np.concatenate([[0.0], fps / fps[-1]])
    thresholds = np.concatenate([[np.inf], s[ends]])
    return fpr, tpr, thresholds


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC curve as the Mann-Whitney statistic with average ranks.

    ``AUC = (sum of the ranks of the fakes - P(P+1)/2) / (P * N)``: the probability that a random
    fake scores above a random real, ties counting 1/2. Exact, O(N log N).

    Args:
      scores: f[N], higher = more likely fake.
      labels: int[N] in {0, 1}, both classes present.

    Returns:
      AUC in [0, 1].
    """
    s, y = _inputs(scores, labels, both_classes=True)
    ranks = stats.rankdata(s, method="average")
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    u = ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def equal_error_rate(scores: Any, labels: Any) -> float:
    """Equal error rate: where the false-positive rate equals the false-negative rate.

    Method: the ROC points ``(fpr_k, tpr_k)`` from ``roc_curve`` are joined by straight segments
    (a segment is what randomising between two neighbouring thresholds achieves, and a tie group
    is one segment). Along the curve ``d = fpr - fnr = fpr + tpr - 1`` rises monotonically from
    -1 to 1, so it crosses 0 exactly once; the EER is ``fpr`` at that crossing, interpolated
    linearly inside the segment where the sign changes. This is the common
    ``brentq(lambda x: 1 - x - interp(x, fpr, tpr))`` recipe without a root finder, and it also
    handles vertical segments. DeepfakeBench instead takes ``fpr`` at the ROC *point* nearest the
    crossing, which can differ by up to half a segment on small sets.

    Args:
      scores: f[N], higher = more likely fake.
      labels: int[N] in {0, 1}, both classes present.

    Returns:
      EER in [0, 1] (0 for perfectly separated scores, 1 for perfectly inverted ones).
    """
    fpr, tpr, _ = roc_curve(scores, labels)
    d = fpr + tpr - 1.0
    i = int(np.argmax(d >= 0.0))  # d[0] = -1 and d[-1] = 1, so 1 <= i < len(d).
    if d[i] == 0.0:
        return float(fpr[i])
    t = -d[i - 1] / (d[i] - d[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def average_precision(scores: Any, labels: Any) -> float:
    """Average precision, step-wise: ``AP = sum_k (R_k - R_{k-1}) * P_k``.

    ``P_k`` and ``R_k`` are precision and recall when every sample scoring ``>=`` the k-th
    largest distinct score is called fake (``R_0 = 0``); tied samples enter together. This is the
    definition scikit-learn's ``average_precision_score`` uses (no interpolation).

    Args:
      scores: f[N], higher = more likely fake.
      labels: int[N] in {0, 1}, both classes present.

    Returns:
      AP in (0, 1].
    """
    s, y = _inputs(scores, labels, both_classes=True)
    fpr, tpr, _ = roc_curve(s, y)
    n_pos = int(y.sum())
    n_neg = y.shape[0] - n_pos
    tps, fps = tpr[1:] * n_pos, fpr[1:] * n_neg
    precision = tps / (tps + fps)
    recall_steps = np.diff(tpr)
    return float(np.sum(recall_steps * precision))


def video_scores(
    scores: Any, labels: Any, video_ids: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Aggregates frame scores to one score per video: the mean of its frame scores.

    DeepfakeBench's video-level metrics average the frame probabilities of each video, so pass
    probabilities here (the mean of logit margins is a different detector).

    Args:
      scores: f[N], per-frame probability of fake.
      labels: int[N] in {0, 1}; every frame of a video must carry the video's label.
      video_ids: int[N], the same id for the frames of one video.

    Returns:
      ``(video_scores f64[V], video_labels int32[V], ids int64[V])`` sorted by id.

    Raises:
      ValueError: shapes disagree, or one video has frames of both labels.
    """
    s, y = _inputs(scores, labels, both_classes=False)
    ids = np.asarray(video_ids)
    if ids.shape != s.shape or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(
            f"video_ids has shape {ids.shape} and dtype {ids.dtype}; expected integers of shape {s.shape}"
        )
    unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=s, minlength=unique.shape[0])
    fakes = np.bincount(inverse, weights=y, minlength=unique.shape[0])
    mixed = (fakes != 0) & (fakes != counts)
    if np.any(mixed):
        bad = unique[mixed][:5].tolist()
        raise ValueError(
            f"video_ids {bad} have frames labelled both real and fake; every frame of a video "
            "must share the video's label"
        )
    return sums / counts, (fakes > 0).astype(np.int32), unique.astype(np.int64)


def binary_metrics(scores: Any, labels: Any, *, threshold: float = 0.5) -> dict[str, Any]:
    """ACC, AUC, EER and AP of one set of scores.

    Args:
      scores: f[N], probability of fake.
      labels: int[N] in {0, 1}.
      threshold: ACC decision threshold.

    Returns:
      ``{"acc", "auc", "eer", "ap", "n", "n_real", "n_fake"}``; ``auc``, ``eer`` and ``ap`` are
      ``None`` when only one class is present.
    """
    s, y = _inputs(scores, labels, both_classes=False)
    n_fake = int(y.sum())
    out: dict[str, Any] = {
        "acc": accuracy(s, y, threshold=threshold),
        "auc": None,
        "eer": None,
        "ap": None,
        "n": int(y.shape[0]),
        "n_real": int(y.shape[0]) - n_fake,
        "n_fake": n_fake,
    }
    if 0 < n_fake < y.shape[0]:
        out.update(auc=roc_auc(s, y), eer=equal_error_rate(s, y), ap=average_precision(s, y))
    return out


def clean_metrics(
    scores: Any, labels: Any, video_ids: Any = None, *, threshold: float = 0.5
) -> dict[str, Any]:
    """Frame-level metrics and, when ``video_ids`` is given, video-level metrics.

    Args:
      scores: f[N], probability of fake.
      labels: int[N] in {0, 1}.
      video_ids: optional int[N] group ids (frames of one video share an id).
      threshold: ACC decision threshold.

    Returns:
      ``binary_metrics`` of the samples, plus ``"video": binary_metrics`` of the per-video mean
      probabilities when ``video_ids`` is given.
    """
    out = binary_metrics(scores, labels, threshold=threshold)
    if video_ids is not None:
        vs, vy, _ = video_scores(scores, labels, video_ids)
        out["video"] = binary_metrics(vs, vy, threshold=threshold)
    return out
