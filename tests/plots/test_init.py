"""The package's public API, and that plotting records never loads JAX."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

from rrjax import plots

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_public_api():
    assert plots.__all__ == ["OKABE_ITO", "MARKERS", "FORMATS", "model_styles", "select", "rr_ra_figure",
                             "rr_vs_eps_figure", "rr_heatmaps", "ra_vs_eps_figure", "shift_histograms", "save",
                             "default_eps", "save_all"]
    assert all(callable(getattr(plots, n)) for n in plots.__all__[3:])
    assert plots.FORMATS == ("png", "pdf", "svg") and len(plots.OKABE_ITO) == len(plots.MARKERS) == 8


def test_importing_plots_does_not_load_jax():
    code = "import sys, rrjax.plots; from rrjax import plots; print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'jaxlib', 'flax')))"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
