"""Figures of a sweep, drawn from its records alone (never by re-running a model).

Every figure function takes the records (a list of rows as returned by
:func:`rrjax.records.load_records`, or a path that function accepts) and returns a
:class:`matplotlib.figure.Figure` built without pyplot, so nothing global is touched and no
display is needed; :func:`save` writes it as PNG/PDF, atomically. Importing this package does
not load JAX.

* :func:`rr_ra_figure` - the study's figure (Lyu, Jin & Das, NLDL 2025): RR against the
  tolerance ``b`` on the left axis, RA on a right axis, one colour per model, at one ε.
* :func:`rr_vs_eps_figure` - the transposed view: RR against ε, one panel per tolerance, RA
  against ε on each panel's right axis.
* :func:`rr_heatmaps` - RR over (ε, tolerance), one panel per model × attack, shared 0..1 scale.
* :func:`ra_vs_eps_figure` - RA against ε with 95% CI bands, one panel per attack.
* :func:`shift_histograms` - per-sample probability shift ``‖p(x') − p(x)‖`` from the cell files.
* :func:`save_all` - every standard figure of a sweep directory.

Modules: :mod:`~rrjax.plots.query` (rows, :func:`select`, attack variants, curves,
:func:`model_styles`), :mod:`~rrjax.plots.style` (palette, rc style, label text, :func:`save`),
:mod:`~rrjax.plots.curves`, :mod:`~rrjax.plots.heatmaps`, :mod:`~rrjax.plots.histograms` (one
figure family each) and :mod:`~rrjax.plots.standard` (:func:`save_all`, :func:`default_eps`).
Selections, curves and colours are described in :mod:`rrjax.plots.query`.

Element ids (``gid``) name what each artist shows, so the plotted data can be read back:
``rr:<model>``, ``rr_ci:<model>``, ``ra:<model>``, ``ra_ci:<model>``, ``ra_marker:<model>``,
``rr_heatmap:<model>:<attack label>``, ``shift:<model>``; panels of :func:`rr_vs_eps_figure`
append ``@b=<tolerance>``.

References:
  S. Lyu, Y. Jin, S. Das. "Is it the model or the metric - On robustness measures of deepfake
  detectors", NLDL 2025.
  M. Okabe, K. Ito. "Color Universal Design (CUD): how to make figures and presentations that
  are friendly to colorblind people", 2008.
"""

from __future__ import annotations

from rrjax.plots.curves import ra_vs_eps_figure, rr_ra_figure, rr_vs_eps_figure
from rrjax.plots.heatmaps import rr_heatmaps
from rrjax.plots.histograms import shift_histograms
from rrjax.plots.query import EPS_ATOL, EPS_RTOL, model_styles, select
from rrjax.plots.standard import default_eps, save_all
from rrjax.plots.style import FORMATS, HEATMAP_CMAP, MARKERS, OKABE_ITO, save

__all__ = [
    "OKABE_ITO",
    "MARKERS",
    "FORMATS",
    "model_styles",
    "select",
    "rr_ra_figure",
    "rr_vs_eps_figure",
    "rr_heatmaps",
    "ra_vs_eps_figure",
    "shift_histograms",
    "save",
    "default_eps",
    "save_all",
]
