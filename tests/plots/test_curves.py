"""Line figures draw exactly the records: RR/RA against tolerance and against ε."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import to_hex

from rrjax import plots
from tests.plots.fixtures import ATTACKS, EPS, MODELS, TOLS, artist, want


def test_rr_ra_figure_draws_the_records(rows):
    fig = plots.rr_ra_figure(rows, attack="pgd", eps=0.1)  # 0.1 finds the stored float32 0.10000000149
    ax_rr, ax_ra = fig.axes
    assert ax_ra.yaxis.get_label_position() == "right" and "RA" in ax_ra.get_ylabel()
    eps = float(np.float32(0.1))
    for model in MODELS:
        line = artist(fig, f"rr:{model}")
        assert line.axes is ax_rr
        np.testing.assert_array_equal(line.get_xdata(), TOLS)
        np.testing.assert_array_equal(line.get_ydata(), want(rows, model, "pgd", eps, "rr", "tolerance"))
        # the CI band spans rr_lo..rr_hi at every tolerance
        verts = artist(fig, f"rr_ci:{model}").get_paths()[0].vertices
        for t, lo, hi in zip(TOLS, want(rows, model, "pgd", eps, "rr_lo", "tolerance"),
                             want(rows, model, "pgd", eps, "rr_hi", "tolerance")):
            ys = verts[np.isclose(verts[:, 0], t), 1]
            assert np.isclose(ys.min(), lo) and np.isclose(ys.max(), hi)
        (ra,) = set(want(rows, model, "pgd", eps, "ra", "tolerance"))
        ra_line = artist(fig, f"ra:{model}")
        assert ra_line.axes is ax_ra and list(ra_line.get_ydata()) == [ra, ra]
        assert to_hex(ra_line.get_color()) == to_hex(line.get_color())
        (lo,) = set(want(rows, model, "pgd", eps, "ra_lo", "tolerance"))
        (hi,) = set(want(rows, model, "pgd", eps, "ra_hi", "tolerance"))
        bar = artist(fig, f"ra_ci:{model}").get_segments()[0]
        assert np.allclose(sorted(bar[:, 1]), [lo, hi])
        # the RA marker sits right of the tolerance range, not on a tolerance value
        assert artist(fig, f"ra_marker:{model}").get_xdata()[0] > TOLS[-1]
    assert ax_rr.get_ylim() == ax_ra.get_ylim()
    title = fig._suptitle.get_text()
    for word in ("synth", "pgd", "L∞", "ε = 0.1", "‖p(x′) − p(x)‖∞"):
        assert word in title
    assert all(t <= TOLS[-1] for t in ax_rr.get_xticks())


def test_rr_vs_eps_figure_panels_per_tolerance(rows):
    fig = plots.rr_vs_eps_figure(rows, attack="fgsm", tolerances=[0.05, 0.5])
    assert len(fig.axes) == 4
    rr_axes, ra_axes = fig.axes[:2], fig.axes[2:]
    assert [ax.get_title() for ax in rr_axes] == ["b = 0.05", "b = 0.5"]
    for model in MODELS:
        for b, ax_rr, ax_ra in zip((0.05, 0.5), rr_axes, ra_axes):
            line = artist(fig, f"rr:{model}@b={b:g}")
            assert line.axes is ax_rr
            sel = sorted((r for r in rows if r["model"] == model and r["attack"] == "fgsm" and r["tolerance"] == b),
                         key=lambda r: r["eps"])
            np.testing.assert_array_equal(line.get_xdata(), EPS)
            np.testing.assert_array_equal(line.get_ydata(), [r["rr"] for r in sel])
            ra_line = artist(fig, f"ra:{model}@b={b:g}")
            assert ra_line.axes is ax_ra
            np.testing.assert_array_equal(ra_line.get_ydata(), [r["ra"] for r in sel])
    default = plots.rr_vs_eps_figure(rows, attack="fgsm")
    assert [ax.get_title() for ax in default.axes[:4]] == ["b = 0", "b = 0.05", "b = 0.5", "b = 1"]


def test_ra_vs_eps_one_panel_per_attack(rows):
    fig = plots.ra_vs_eps_figure(rows)
    assert [ax.get_title() for ax in fig.axes] == ["fgsm (L∞)", "pgd (L∞)"]
    for ax, attack in zip(fig.axes, ATTACKS):
        for model in MODELS:
            (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == f"ra:{model}"]
            want = [next(r["ra"] for r in rows if r["model"] == model and r["attack"] == attack and r["eps"] == e)
                    for e in EPS]
            np.testing.assert_array_equal(line.get_xdata(), EPS)
            np.testing.assert_array_equal(line.get_ydata(), want)
