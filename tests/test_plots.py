"""Figures from records: the plotted data equal the records, colours are stable, selections fail loudly."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from matplotlib.colors import to_hex

from rrjax import plots
from rrjax import records as R

REPO = pathlib.Path(__file__).resolve().parents[1]
MODELS = ("xception", "meso4")  # deliberately not sorted: colours must follow sorted names
ATTACKS = {"fgsm": {}, "pgd": {"steps": 10, "step_size": 0.01}}
# float32-rounded, as a sweep stores an ε grid it computed in float32
EPS = tuple(float(np.float32(e)) for e in (0.0, 8 / 255, 0.1, 0.2))
TOLS = (0.0, 0.05, 0.25, 0.5, 1.0)
N = 40


def _samples(model, attack, eps):
    """Per-sample arrays whose shift grows with ε; distinct per (model, attack)."""
    seed = MODELS.index(model) * 10 + list(ATTACKS).index(attack)
    rng = np.random.default_rng(seed)
    scale = 0.3 if model == "xception" else 0.9
    shift = np.clip(rng.uniform(0, 1, N) * eps * scale * 5, 0, 1)
    y = (np.arange(N) % 2).astype(np.int32)
    correct = rng.uniform(0, 1, N) > eps * (2 if model == "meso4" else 1) * 2
    p_clean = np.where(y == 1, 0.8, 0.2)
    return {"index": np.arange(N), "y": y, "correct": correct, "shift": shift, "p_fake_clean": p_clean,
            "p_fake_adv": np.clip(p_clean + np.where(y == 1, -shift, shift), 0, 1), "same_label": shift < 0.3}


def _row(cell, model, dataset, attack, eps, tol, s):
    """A record row computed by hand from the per-sample arrays (CIs: ±0.1, clipped)."""
    ra, rr = float(s["correct"].mean()), float((s["shift"] <= tol).mean())
    return dict(model=model, checkpoint=f"ck/{model}", checkpoint_sha256="0" * 64, dataset=dataset, split="test",
                attack=attack, attack_params=ATTACKS[attack], threat_norm="linf", eps=eps, tolerance=tol, n=N,
                n_correct=int(s["correct"].sum()), ra=ra, ra_lo=max(ra - 0.1, 0.0), ra_hi=min(ra + 0.1, 1.0),
                n_robust=int((s["shift"] <= tol).sum()), rr=rr, rr_lo=max(rr - 0.1, 0.0), rr_hi=min(rr + 0.1, 1.0),
                clean_accuracy=0.9, shift_norm="linf", strict=False, ci_method="wilson", seed=0, health="",
                cell=cell)


def make_sweep(out, datasets=("synth",), models=MODELS, attacks=tuple(ATTACKS), eps_grid=EPS):
    for dataset in datasets:
        for model in models:
            for attack in attacks:
                for eps in eps_grid:
                    cell = R.cell_id({"m": model, "d": dataset, "a": attack, "e": eps})
                    s = _samples(model, attack, eps)
                    rows = [_row(cell, model, dataset, attack, eps, t, s) for t in TOLS]
                    R.write_cell(out, cell, {"model": model}, s, rows)
    R.rebuild_tables(out)
    return out


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return make_sweep(tmp_path_factory.mktemp("sweep"))


@pytest.fixture(scope="module")
def rows(sweep):
    return R.load_records(sweep)


def _artist(fig, gid):
    found = [a for ax in fig.axes for a in ax.get_children() if a.get_gid() == gid]
    assert len(found) == 1, (gid, len(found))
    return found[0]


def _want(rows, model, attack, eps, field, over):
    sel = [r for r in rows if r["model"] == model and r["attack"] == attack and abs(r["eps"] - eps) < 1e-9]
    return [r[field] for r in sorted(sel, key=lambda r: r[over])]


def test_rr_ra_figure_draws_the_records(rows):
    fig = plots.rr_ra_figure(rows, attack="pgd", eps=0.1)  # 0.1 finds the stored float32 0.10000000149
    ax_rr, ax_ra = fig.axes
    assert ax_ra.yaxis.get_label_position() == "right" and "RA" in ax_ra.get_ylabel()
    eps = float(np.float32(0.1))
    for model in MODELS:
        line = _artist(fig, f"rr:{model}")
        assert line.axes is ax_rr
        np.testing.assert_array_equal(line.get_xdata(), TOLS)
        np.testing.assert_array_equal(line.get_ydata(), _want(rows, model, "pgd", eps, "rr", "tolerance"))
        # the CI band spans rr_lo..rr_hi at every tolerance
        verts = _artist(fig, f"rr_ci:{model}").get_paths()[0].vertices
        for t, lo, hi in zip(TOLS, _want(rows, model, "pgd", eps, "rr_lo", "tolerance"),
                             _want(rows, model, "pgd", eps, "rr_hi", "tolerance")):
            ys = verts[np.isclose(verts[:, 0], t), 1]
            assert np.isclose(ys.min(), lo) and np.isclose(ys.max(), hi)
        (ra,) = set(_want(rows, model, "pgd", eps, "ra", "tolerance"))
        ra_line = _artist(fig, f"ra:{model}")
        assert ra_line.axes is ax_ra and list(ra_line.get_ydata()) == [ra, ra]
        assert to_hex(ra_line.get_color()) == to_hex(line.get_color())
        (lo,) = set(_want(rows, model, "pgd", eps, "ra_lo", "tolerance"))
        (hi,) = set(_want(rows, model, "pgd", eps, "ra_hi", "tolerance"))
        bar = _artist(fig, f"ra_ci:{model}").get_segments()[0]
        assert np.allclose(sorted(bar[:, 1]), [lo, hi])
        # the RA marker sits right of the tolerance range, not on a tolerance value
        assert _artist(fig, f"ra_marker:{model}").get_xdata()[0] > TOLS[-1]
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
            line = _artist(fig, f"rr:{model}@b={b:g}")
            assert line.axes is ax_rr
            sel = sorted((r for r in rows if r["model"] == model and r["attack"] == "fgsm" and r["tolerance"] == b),
                         key=lambda r: r["eps"])
            np.testing.assert_array_equal(line.get_xdata(), EPS)
            np.testing.assert_array_equal(line.get_ydata(), [r["rr"] for r in sel])
            ra_line = _artist(fig, f"ra:{model}@b={b:g}")
            assert ra_line.axes is ax_ra
            np.testing.assert_array_equal(ra_line.get_ydata(), [r["ra"] for r in sel])
    default = plots.rr_vs_eps_figure(rows, attack="fgsm")
    assert [ax.get_title() for ax in default.axes[:4]] == ["b = 0", "b = 0.05", "b = 0.5", "b = 1"]


def test_rr_heatmaps_hold_the_rr_grid(rows):
    fig = plots.rr_heatmaps(rows)
    for model in MODELS:
        for attack in ATTACKS:
            image = _artist(fig, f"rr_heatmap:{model}:{attack} (L∞)")
            want = np.array([[next(r["rr"] for r in rows if r["model"] == model and r["attack"] == attack
                                   and r["eps"] == e and r["tolerance"] == t) for t in TOLS] for e in EPS])
            np.testing.assert_array_equal(image.get_array(), want)
            assert image.get_clim() == (0.0, 1.0) and image.origin == "lower"
    assert [ax.get_title() for ax in fig.axes[:2]] == ["meso4 – fgsm (L∞)", "meso4 – pgd (L∞)"]
    only = plots.rr_heatmaps(rows, attacks="pgd", models=["xception"])
    assert len([a for ax in only.axes for a in ax.images]) == 1
    # a model lacking the largest ε keeps the column's grid; the missing row is masked
    partial = [r for r in rows if not (r["model"] == "meso4" and r["eps"] == EPS[-1])]
    image = _artist(plots.rr_heatmaps(partial, attacks="fgsm"), "rr_heatmap:meso4:fgsm (L∞)")
    assert image.get_array().shape == (len(EPS), len(TOLS))
    assert image.get_array().mask[-1].all() and not image.get_array().mask[:-1].any()


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


def test_shift_histograms_from_cell_files(sweep, rows):
    eps = float(np.float32(0.2))
    fig = plots.shift_histograms(sweep, attack="pgd", eps=0.2, bins=10)
    shifts = {m: _samples(m, "pgd", eps)["shift"] for m in MODELS}
    edges = np.linspace(0, max(s.max() for s in shifts.values()), 11)
    for model, s in shifts.items():
        values, got_edges, _ = _artist(fig, f"shift:{model}").get_data()
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
        plots.shift_histograms(_copy_table(sweep), attack="pgd", eps=0.2)


def _copy_table(sweep):
    other = sweep.parent / (sweep.name + "_table_only")
    other.mkdir(exist_ok=True)
    (other / "records.csv").write_bytes((sweep / "records.csv").read_bytes())
    return other / "records.csv"


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


def test_save_all_writes_every_figure(sweep, tmp_path):
    # a grid whose default per-ε choice (middle positive and largest, see test_default_eps) is one ε
    small = make_sweep(tmp_path / "small", eps_grid=EPS[::3])
    written = plots.save_all(small, tmp_path / "figs", formats=["png"])
    per_attack = ["rr_vs_eps_synth_{}", "rr_ra_synth_{}_eps0.2", "shift_hist_synth_{}_eps0.2"]
    want = ["ra_vs_eps_synth.png", "rr_heatmaps_synth.png"]
    want += [k.format(a) + ".png" for k in per_attack for a in ATTACKS]
    assert sorted(p.name for p in written) == sorted(want)
    assert all(p.parent == tmp_path / "figs" and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    assert all(p.stat().st_size > 10_000 for p in written)
    with pytest.raises(ValueError, match="format='gif' is not valid"):
        plots.save_all(small, tmp_path / "x", formats=["gif"])
    with pytest.raises(ValueError, match="eps=0.15 is not in the records"):
        plots.save_all(small, tmp_path / "x", eps=[0.2, 0.15])


def test_save_all_filters_and_a_table_without_cells(sweep):
    table = _copy_table(sweep)  # a records.csv on its own: no per-sample cells, so no histograms
    only = plots.save_all(table, formats=["pdf"], attack="pgd", eps=[0.2], models=["meso4"])
    assert sorted(p.name for p in only) == sorted(["ra_vs_eps_synth.pdf", "rr_heatmaps_synth.pdf",
                                                   "rr_vs_eps_synth_pgd.pdf", "rr_ra_synth_pgd_eps0.2.pdf"])
    assert all(p.parent == table.parent / "figures" and p.read_bytes()[:5] == b"%PDF-" for p in only)
    assert all(p.stat().st_size > 5_000 for p in only)
    with pytest.raises(ValueError, match="no cells/ directory"):
        plots.save_all(table, histograms=True)


def test_default_eps():
    assert plots.default_eps([0.0, 0.05, 0.1, 0.15, 0.2]) == [0.1, 0.2]
    assert plots.default_eps([0.0, 0.1]) == [0.1]
    assert plots.default_eps([0.0]) == [0.0]


def _script(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO), JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, str(REPO / "experiments" / "plot.py"), *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)


def test_script_writes_figures_and_reports_a_corrupt_table(tmp_path):
    sweep = make_sweep(tmp_path / "s", models=("meso4",), attacks=("fgsm",))
    ok = _script(f"--records={sweep}", f"--out_dir={tmp_path / 'out'}", "--format=pdf", "--eps=0.2",
                 "--models=meso4")
    assert ok.returncode == 0, ok.stderr
    assert f"wrote 5 figure files to {tmp_path / 'out'}" in ok.stdout
    assert str(tmp_path / "out" / "rr_ra_synth_fgsm_eps0.2.pdf") in ok.stdout.splitlines()
    assert (tmp_path / "out" / "rr_ra_synth_fgsm_eps0.2.pdf").read_bytes()[:5] == b"%PDF-"
    # absl shows INFO logs; PDF font subsetting must not flood them
    assert "subsetted" not in ok.stderr and len(ok.stderr.splitlines()) < 20, ok.stderr[:2000]
    table = sweep / "records.jsonl"
    table.write_text(table.read_text()[:-3] + "\n")  # truncated: no longer matches the manifest
    bad = _script(f"--records={sweep}")
    assert bad.returncode == 2
    assert "plot.py: error:" in bad.stderr and "does not match records.manifest.json" in bad.stderr
    assert "rebuild_tables" in bad.stderr
