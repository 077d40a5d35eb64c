"""RR heatmaps hold the records' RR grid, with missing cells masked."""

from __future__ import annotations

import numpy as np

from rrjax import plots
from tests.plots.fixtures import ATTACKS, EPS, MODELS, TOLS, artist


def test_rr_heatmaps_hold_the_rr_grid(rows):
    fig = plots.rr_heatmaps(rows)
    for model in MODELS:
        for attack in ATTACKS:
            image = artist(fig, f"rr_heatmap:{model}:{attack} (L∞)")
            want = np.array([[next(r["rr"] for r in rows if r["model"] == model and r["attack"] == attack
                                   and r["eps"] == e and r["tolerance"] == t) for t in TOLS] for e in EPS])
            np.testing.assert_array_equal(image.get_array(), want)
            assert image.get_clim() == (0.0, 1.0) and image.origin == "lower"
    assert [ax.get_title() for ax in fig.axes[:2]] == ["meso4 – fgsm (L∞)", "meso4 – pgd (L∞)"]
    only = plots.rr_heatmaps(rows, attacks="pgd", models=["xception"])
    assert len([a for ax in only.axes for a in ax.images]) == 1
    # a model lacking the largest ε keeps the column's grid; the missing row is masked
    partial = [r for r in rows if not (r["model"] == "meso4" and r["eps"] == EPS[-1])]
    image = artist(plots.rr_heatmaps(partial, attacks="fgsm"), "rr_heatmap:meso4:fgsm (L∞)")
    assert image.get_array().shape == (len(EPS), len(TOLS))
    assert image.get_array().mask[-1].all() and not image.get_array().mask[:-1].any()
