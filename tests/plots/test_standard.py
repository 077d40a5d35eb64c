"""save_all writes every standard figure of a sweep; the plot script wraps it."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from rrjax import plots
from tests.plots.fixtures import ATTACKS, EPS, copy_table, make_sweep

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_save_all_writes_every_figure(sweep, tmp_path):
    # a grid whose default per-ε choice (middle positive and largest, see test_default_eps) is one ε
    small = make_sweep(tmp_path / "small", eps_grid=EPS[::3])
    written = plots.save_all(small, tmp_path / "figs", formats=["png"])
    per_attack = ["rr_vs_eps_synth_{}", "rr_ra_synth_{}_eps0.2", "shift_hist_synth_{}_eps0.2"]
    want = ["ra_vs_eps_synth.png", "rr_heatmaps_synth.png"]
    want += [k.format(a) + ".png" for k in per_attack for a in ATTACKS]
    assert sorted(p.name for p in written) == sorted(want)
    assert sorted(p.name for p in (tmp_path / "figs").iterdir()) == sorted(want)  # no temporary files left
    assert all(p.parent == tmp_path / "figs" and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in written)
    assert all(p.stat().st_size > 10_000 for p in written)
    with pytest.raises(ValueError, match="format='gif' is not valid"):
        plots.save_all(small, tmp_path / "x", formats=["gif"])
    with pytest.raises(ValueError, match="eps=0.15 is not in the records"):
        plots.save_all(small, tmp_path / "x", eps=[0.2, 0.15])


def test_save_all_filters_and_a_table_without_cells(sweep):
    table = copy_table(sweep)  # a records.csv on its own: no per-sample cells, so no histograms
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
