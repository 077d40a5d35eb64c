"""Clean metrics against values computed by hand (no reference library is a dependency)."""

import numpy as np
import pytest

from rrjax import clean_metrics as cm

# Worked example 1 (no ties). Sorted by score: 0.8 (fake), 0.4 (real), 0.35 (fake), 0.1 (real).
# ROC points (fpr, tpr): (0,0) (0,.5) (.5,.5) (.5,1) (1,1).
# AUC: fake 0.8 beats both reals, fake 0.35 beats one of two -> 3/4.
# EER: fpr + tpr - 1 = 0 exactly at (.5, .5) -> 0.5.
# AP: recall steps .5 at precision 1 (score .8) and .5 at precision 2/3 (score .35) -> 5/6.
# ACC: 0.35 (fake) is called real, the rest are right -> 3/4.
S1 = [0.1, 0.4, 0.35, 0.8]
Y1 = [0, 0, 1, 1]

# Worked example 2 (a tie across classes). Fakes: 0.9, 0.5; reals: 0.5, 0.5, 0.2.
# AUC pairs: 0.9 beats 3 reals; 0.5 ties two reals (1/2 each) and beats 0.2 -> (3 + 1 + 1) / 6.
# ROC: (0,0) (0,.5) then the 0.5-tie group jumps to (2/3, 1), then (1,1).
# EER: d = fpr + tpr - 1 goes -.5 -> 2/3 on the tie segment; t = .5 / (7/6) = 3/7,
#      fpr = 3/7 * 2/3 = 2/7 (and fnr = 1 - (.5 + 3/7 * .5) = 2/7).
# AP: recall .5 at precision 1 (0.9), then the tie group: recall +.5 at precision 2/4 -> 3/4.
# ACC: 0.5 is not > 0.5, so all three 0.5s are called real: the fake 0.5 is wrong -> 4/5.
S2 = [0.5, 0.5, 0.5, 0.2, 0.9]
Y2 = [1, 0, 0, 0, 1]


def test_worked_example_without_ties():
    assert cm.accuracy(S1, Y1) == pytest.approx(0.75)
    assert cm.roc_auc(S1, Y1) == pytest.approx(0.75)
    assert cm.equal_error_rate(S1, Y1) == pytest.approx(0.5)
    assert cm.average_precision(S1, Y1) == pytest.approx(5 / 6)
    fpr, tpr, thr = cm.roc_curve(S1, Y1)
    np.testing.assert_allclose(fpr, [0, 0, 0.5, 0.5, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(thr, [np.inf, 0.8, 0.4, 0.35, 0.1])


def test_worked_example_with_ties():
    assert cm.accuracy(S2, Y2) == pytest.approx(0.8)
    assert cm.roc_auc(S2, Y2) == pytest.approx(5 / 6)
    assert cm.equal_error_rate(S2, Y2) == pytest.approx(2 / 7)
    assert cm.average_precision(S2, Y2) == pytest.approx(0.75)
    fpr, tpr, _ = cm.roc_curve(S2, Y2)
    np.testing.assert_allclose(fpr, [0, 0, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 0.5, 1, 1])


def test_all_tied_scores_are_chance():
    # One tie group: ROC is the diagonal, AUC 1/2, EER 1/2, AP = prevalence (precision 2/5 at recall 1).
    s, y = [0.3] * 5, [1, 0, 1, 0, 0]
    assert cm.roc_auc(s, y) == pytest.approx(0.5)
    assert cm.equal_error_rate(s, y) == pytest.approx(0.5)
    assert cm.average_precision(s, y) == pytest.approx(0.4)


def test_perfect_and_inverted_scores():
    y = [0, 0, 1, 1, 1]
    good = [0.1, 0.2, 0.7, 0.8, 0.9]
    assert cm.roc_auc(good, y) == 1.0
    assert cm.equal_error_rate(good, y) == 0.0
    assert cm.average_precision(good, y) == 1.0
    assert cm.accuracy(good, y) == 1.0
    bad = [0.9, 0.8, 0.3, 0.2, 0.1]
    assert cm.roc_auc(bad, y) == 0.0
    assert cm.equal_error_rate(bad, y) == 1.0
    # Fakes come last: precision 1/3, 2/4, 3/5 at recalls 1/3, 2/3, 1.
    assert cm.average_precision(bad, y) == pytest.approx((1 / 3 + 2 / 4 + 3 / 5) / 3)
    assert cm.accuracy(bad, y) == 0.0


def test_auc_equals_trapezoid_area_of_the_roc_with_many_ties():
    # Two independent routes to the same number: rank statistic vs the geometry of the curve.
    rng = np.random.default_rng(0)
    s = rng.integers(0, 6, size=200) / 5.0
    y = (rng.random(200) < 0.4 + 0.3 * s).astype(np.int32)
    fpr, tpr, _ = cm.roc_curve(s, y)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert cm.roc_auc(s, y) == pytest.approx(area, abs=1e-12)


def test_eer_is_where_fpr_equals_fnr_on_a_brute_force_grid():
    # Randomising between neighbouring thresholds traces the ROC segments; brute-force the point
    # on those segments where fpr = fnr with a fine grid and compare.
    rng = np.random.default_rng(1)
    s = np.round(rng.random(60), 1)
    y = (rng.random(60) < s).astype(np.int32)
    fpr, tpr, _ = cm.roc_curve(s, y)
    t = np.linspace(0, 1, 20001)[:, None]
    f = fpr[:-1] + t * np.diff(fpr)
    fnr = 1 - (tpr[:-1] + t * np.diff(tpr))
    k = np.unravel_index(np.argmin(np.abs(f - fnr)), f.shape)
    assert cm.equal_error_rate(s, y) == pytest.approx(f[k], abs=1e-3)


def test_video_level_mean_of_frame_probabilities():
    scores = [0.2, 0.4, 0.9, 0.7, 0.8, 0.1]
    labels = [0, 0, 1, 1, 1, 0]
    vids = [7, 7, 3, 3, 3, 9]
    vs, vy, ids = cm.video_scores(scores, labels, vids)
    np.testing.assert_array_equal(ids, [3, 7, 9])
    np.testing.assert_allclose(vs, [0.8, 0.3, 0.1])
    np.testing.assert_array_equal(vy, [1, 0, 0])
    out = cm.clean_metrics(scores, labels, vids)
    assert out["video"]["n"] == 3 and out["video"]["auc"] == 1.0
    assert out["n"] == 6 and out["acc"] == 1.0


def test_video_with_mixed_labels_is_rejected():
    with pytest.raises(ValueError, match=r"video_ids \[3\] have frames labelled both"):
        cm.video_scores([0.1, 0.2, 0.3], [1, 0, 0], [3, 3, 4])


def test_single_class_reports_none_and_direct_calls_raise():
    out = cm.binary_metrics([0.2, 0.9], [1, 1])
    assert out["auc"] is None and out["eer"] is None and out["ap"] is None
    assert out["acc"] == 0.5 and out["n_fake"] == 2 and out["n_real"] == 0
    with pytest.raises(ValueError, match="all fake"):
        cm.roc_auc([0.2, 0.9], [1, 1])


@pytest.mark.parametrize(
    "scores, labels, match",
    [
        ([[0.1, 0.2]], [0], "expected a non-empty 1-D array"),
        ([0.1, np.nan], [0, 1], "NaN or inf"),
        ([0.1, 0.2], [0, 2], "labels in"),
        ([0.1, 0.2], [0], "expected \\(2,\\)"),
    ],
)
def test_bad_inputs_name_the_problem(scores, labels, match):
    with pytest.raises(ValueError, match=match):
        cm.binary_metrics(scores, labels)
