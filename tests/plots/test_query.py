"""The record query: selections fail loudly, attack variants stay apart, colours are stable."""

from __future__ import annotations

import pytest
from matplotlib.colors import to_hex

from rrjax import plots
from rrjax import records as R
from tests.plots.fixtures import make_sweep


def test_model_colour_is_the_same_in_every_figure(sweep, rows):
    want = {"meso4": plots.OKABE_ITO[0], "xception": plots.OKABE_ITO[1]}  # sorted-name order
    figs = {
        "rr": plots.rr_ra_figure(rows, attack="fgsm", eps=0.2),
        "rr_only_xception": plots.rr_ra_figure(rows, attack="fgsm", eps=0.2, models=["xception"]),
        "eps": plots.rr_vs_eps_figure(rows, attack="fgsm", tolerances=0.25),
        "ra": plots.ra_vs_eps_figure(rows),
        "hist": plots.shift_histograms(sweep, attack="fgsm", eps=0.2),
    }
    gids = {"rr": "rr:{}", "rr_only_xception": "rr:{}", "eps": "rr:{}@b=0.25", "ra": "ra:{}", "hist": "shift:{}"}
    for name, fig in figs.items():
        for model, colour in want.items():
            if name == "rr_only_xception" and model == "meso4":
                continue
            found = [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gids[name].format(model)]
            assert found, (name, model)
            for a in found:
                c = a.get_edgecolor() if name == "hist" else a.get_color()
                assert to_hex(c) == to_hex(colour), (name, model)


def test_filters_and_bad_selections(tmp_path):
    two = make_sweep(tmp_path / "two", datasets=("celebdf", "synth"))
    rows = R.load_records(two)
    with pytest.raises(ValueError, match="needs one dataset.*'celebdf', 'synth'; pass dataset="):
        plots.rr_ra_figure(rows, attack="pgd", eps=0.1)
    fig = plots.rr_ra_figure(rows, dataset="celebdf", attack="pgd", eps=0.1)
    assert "celebdf" in fig._suptitle.get_text()
    with pytest.raises(ValueError, match="needs one attack.*'fgsm', 'pgd'"):
        plots.rr_ra_figure(rows, dataset="synth", eps=0.1)
    with pytest.raises(ValueError, match="dataset='ff' matches no records; available: 'celebdf', 'synth'"):
        plots.ra_vs_eps_figure(rows, dataset="ff")
    with pytest.raises(ValueError,
                       match="attack='cw' matches no records with dataset='synth'; available: 'fgsm', 'pgd'"):
        plots.rr_ra_figure(rows, dataset="synth", attack="cw", eps=0.1)
    # 8/255 stored as float32 prints as 0.0313726
    with pytest.raises(ValueError, match=r"eps=0.3 is not in the records.*eps values: 0, 0.0313726, 0.1, 0.2"):
        plots.rr_ra_figure(rows, dataset="synth", attack="pgd", eps=0.3)
    with pytest.raises(ValueError, match="no records for 'resnet'.*available models: 'meso4', 'xception'"):
        plots.rr_heatmaps(rows, dataset="synth", models=["meso4", "resnet"])
    with pytest.raises(ValueError, match="attacks=\\['cw'\\]: no records for 'cw'; available attacks: 'fgsm', 'pgd'"):
        plots.ra_vs_eps_figure(rows, dataset="synth", attacks=["cw"])
    with pytest.raises(ValueError, match="tolerance=0.3 is not in the records.*0, 0.05, 0.25, 0.5, 1"):
        plots.rr_vs_eps_figure(rows, dataset="synth", attack="pgd", tolerances=[0.3])
    with pytest.raises(ValueError, match="eps has value -0.1 < 0"):
        plots.select(rows, eps=-0.1)
    assert {r["attack"] for r in plots.select(rows, attack_params={"steps": 10})} == {"pgd"}
    sel = plots.select(rows, dataset="synth", models="meso4", eps=[0.1, 0.2], tolerance=0.5)
    assert len(sel) == 4 and {r["model"] for r in sel} == {"meso4"}
    with pytest.raises(ValueError, match="records is empty"):
        plots.select([])


def test_attack_variants_are_distinguished(tmp_path):
    out = make_sweep(tmp_path / "norms", attacks=("pgd",))
    rows = R.load_records(out)
    l2 = [dict(r, threat_norm="l2", eps=r["eps"] * 10, cell=r["cell"] + "l2") for r in rows]
    both = rows + l2
    with pytest.raises(ValueError, match="needs one threat_norm.*'l2', 'linf'; pass threat_norm="):
        plots.rr_ra_figure(both, attack="pgd", eps=0.0)
    fig = plots.ra_vs_eps_figure(both)
    assert [ax.get_title() for ax in fig.axes] == ["pgd (L₂)", "pgd (L∞)"]
    fig = plots.rr_ra_figure(both, attack="pgd", threat_norm="l2", eps=1.0)
    assert "pgd (L₂), ε = 1" in fig._suptitle.get_text()
    # two hyperparameter settings of one attack: the labels name only the one that differs
    steps40 = [dict(r, attack_params={"steps": 40, "step_size": 0.01}, cell=r["cell"] + "s40") for r in rows]
    with pytest.raises(ValueError, match="needs one attack_params.*pass attack_params=.*subset"):
        plots.rr_ra_figure(rows + steps40, eps=0.1)
    fig = plots.rr_ra_figure(rows + steps40, eps=0.1, attack_params={"steps": 40})
    assert "pgd (L∞) steps=40, ε = 0.1" in fig._suptitle.get_text()
    assert [ax.get_title() for ax in plots.ra_vs_eps_figure(rows + steps40).axes] == [
        "pgd (L∞) steps=10", "pgd (L∞) steps=40"]


def test_one_line_per_model_is_one_curve(rows):
    # xception's larger ε come from another checkpoint: two curves (rrjax.records.curve_key) that
    # share no (ε, tolerance), which one line per model would silently join into one.
    other = [dict(r, checkpoint_sha256="1" * 64) if r["model"] == "xception" and r["eps"] > 0.05 else r
             for r in rows]
    msg = r"2 curves of model 'xception' that differ in \['checkpoint_sha256'\]"
    with pytest.raises(ValueError, match=msg):
        plots.rr_vs_eps_figure(other, attack="pgd")
    with pytest.raises(ValueError, match=msg):
        plots.ra_vs_eps_figure(other)
    with pytest.raises(ValueError, match=msg):
        plots.rr_heatmaps(other)
    # filtering to one curve draws it
    one = [r for r in other if r["checkpoint_sha256"] == "0" * 64]
    assert len(plots.rr_vs_eps_figure(one, attack="pgd").axes) == 8
