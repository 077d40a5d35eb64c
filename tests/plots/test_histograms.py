"""Shift histograms are the histograms of the per-sample shifts in the cell files."""

from __future__ import annotations

import numpy as np
import pytest

from rrjax import plots
from tests.plots.fixtures import MODELS, N, artist, copy_table, samples


def test_shift_histograms_from_cell_files(sweep, rows):
    eps = float(np.float32(0.2))
    fig = plots.shift_histograms(sweep, attack="pgd", eps=0.2, bins=10)
    shifts = {m: samples(m, "pgd", eps)["shift"] for m in MODELS}
    edges = np.linspace(0, max(s.max() for s in shifts.values()), 11)
    for model, s in shifts.items():
        values, got_edges, _ = artist(fig, f"shift:{model}").get_data()
        np.testing.assert_allclose(got_edges, edges)
        np.testing.assert_allclose(values, np.histogram(s, edges)[0] / N)
        assert values.sum() == pytest.approx(1.0)
    assert fig.axes[0].get_yscale() == "linear"
    grid = plots.shift_histograms(sweep, attack="pgd", eps=0.2, layout="grid", log=True)
    assert [ax.get_title() for ax in grid.axes if ax.get_visible()] == ["meso4", "xception"]
    assert all(ax.get_yscale() == "log" for ax in grid.axes if ax.get_visible())
    with pytest.raises(ValueError, match="layout='bars' is not valid; expected one of 'overlay', 'grid'"):
        plots.shift_histograms(sweep, attack="pgd", eps=0.2, layout="bars")
    with pytest.raises(ValueError, match="no cells/ directory"):
        plots.shift_histograms(copy_table(sweep), attack="pgd", eps=0.2)
