"""Finalisation: health flags, summary and paired comparisons."""

from __future__ import annotations

import json

import numpy as np

import rrjax
from rrjax import records as R
from rrjax.sweep import report

def test_summary_and_comparisons(reference):
    summary = json.loads((reference / "summary.json").read_text())
    assert len(summary["groups"]) == 6
    comps = [json.loads(line) for line in (reference / "comparisons.jsonl").read_text().splitlines()]
    assert len(comps) == 3 * 3  # one pair of models per (attack, eps)
    c = comps[0]
    assert {"ra_diff", "mcnemar_p", "rr_diff", "rr_diff_ci"} <= set(c) and len(c["rr_diff"]) == 4
    assert "Paired comparisons" in (reference / "summary.md").read_text()
    assert not (reference / "partial").exists()



def test_health_logic_on_hand_built_cells():
    def cell(eps, correct, clean_correct=None):
        n = len(correct)
        correct = np.asarray(correct, bool)
        cc = np.ones(n, bool) if clean_correct is None else np.asarray(clean_correct, bool)
        y = np.ones(n, int)
        s = {"index": np.arange(n), "y": y, "correct": correct, "shift": np.zeros(n),
             "p_fake_clean": np.where(cc, 0.9, 0.1), "p_fake_adv": np.zeros(n), "same_label": np.ones(n, bool)}
        k = int(correct.sum())
        lo, hi = rrjax.metrics.binomial_ci(k, n)
        return {"meta": {"eps": eps, "threat_norm": "linf"}, "samples": s, "rows": [{"ra": k / n, "ra_lo": lo, "ra_hi": hi}]}

    n = 40
    good = [cell(0.0, [1] * n), cell(0.1, [1] * 20 + [0] * 20), cell(0.2, [1] * 5 + [0] * 35)]
    rising = [cell(0.0, [1] * n), cell(0.1, [1] * 5 + [0] * 35), cell(0.2, [1] * 38 + [0] * 2)]
    changed = [cell(0.0, [1] * 30 + [0] * 10, clean_correct=[1] * n), cell(0.2, [0] * n, clean_correct=[1] * n)]
    key = lambda attack, params="{}": R.CurveKey("m", "", "d", "s", attack, params, 0, "linf", n)  # noqa: E731
    groups = {key("fgsm"): good, key("pgd"): rising, key("cw_bounded"): changed}
    flags = report.health(groups, {k: 0.0 for k in groups})
    assert flags[key("fgsm")] == []
    assert "ra_increases_with_eps" in flags[key("pgd")] and "iterative_weaker_than_fgsm" in flags[key("pgd")]
    assert "eps0_differs_from_clean" in flags[key("cw_bounded")]



def test_nonfinite_probabilities_are_flagged():
    n = 6
    s = {"index": np.arange(n), "y": np.ones(n, int), "correct": np.ones(n, bool), "shift": np.zeros(n),
         "p_fake_clean": np.full(n, 0.9), "p_fake_adv": np.r_[np.full(n - 1, 0.9), np.nan],
         "same_label": np.ones(n, bool)}
    lo, hi = rrjax.metrics.binomial_ci(n, n)
    cell = {"meta": {"eps": 0.1, "threat_norm": "linf"}, "samples": s, "rows": [{"ra": 1.0, "ra_lo": lo, "ra_hi": hi}]}
    key = R.CurveKey("m", "", "d", "s", "fgsm", "{}", 0, "linf", n)
    assert "nonfinite_probabilities" in report.health({key: [cell]}, {})[key]
