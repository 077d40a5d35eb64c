"""Histograms of the per-sample probability shift ``‖p(x') − p(x)‖``, read from a sweep's cell files."""

from __future__ import annotations

import math
import os
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from rrjax import records as R
from rrjax._validation import check_choice, check_int
from rrjax.plots.query import (
    ATTACK_FIELDS, CONTEXT_FIELDS, as_rows, attack_title, by_model, cells_root, only_cells, require_single, select,
    styles_for,
)
from rrjax.plots.style import fmt_eps, health_note, legend, shift_text, styled, title_context

__all__ = ["shift_histograms"]


@styled
def shift_histograms(
    out_dir: str | os.PathLike,
    *,
    eps: float,
    dataset: str | None = None,
    attack: str | None = None,
    models: Sequence[str] | None = None,
    split: str | None = None,
    threat_norm: str | None = None,
    attack_params: Mapping[str, Any] | None = None,
    shift_norm: str | None = None,
    strict: bool | None = None,
    layout: str = "overlay",
    log: bool = False,
    bins: int = 40,
    styles: Mapping[str, tuple[str, str]] | None = None,
    figsize: tuple[float, float] | None = None,
    cells: Collection[str] | None = None,
) -> Figure:
    """Histograms of the per-sample probability shift ``‖p(x') − p(x)‖`` at one attack and ε.

    Reads the per-sample arrays of each model's cell (``rrjax.records.load_samples``); RR(b) is
    the share of this histogram's mass at or below ``b``. Bars are fractions of each model's
    samples, over common bins from 0 to the largest shift, so models with different n compare.

    Args:
      out_dir: the sweep directory (holding ``records.jsonl`` and ``cells/``).
      eps: the attack budget ε (matched within rtol 1e-5).
      dataset, attack, split, threat_norm, attack_params, shift_norm, strict: selection (see
        :func:`select`); ``None`` requires a single value.
      cells: only these cell ids (see :func:`save_all`).
      models: models to draw (default: all).
      layout: ``"overlay"`` (one axis, outlines) or ``"grid"`` (one filled panel per model).
      log: logarithmic count axis (shows the tail of large shifts).
      bins: number of bins.
      styles: ``{model: (colour, marker)}`` (default :func:`model_styles` of the records).
      figsize: inches (default depends on the layout).

    Returns:
      The figure; each histogram is a ``StepPatch`` with gid ``shift:<model>``.

    Raises:
      ValueError: a selection matches nothing or is ambiguous; a cell file is missing or corrupt.
    """
    check_choice(layout, ("overlay", "grid"), name="layout")
    bins = check_int(bins, name="bins", minimum=1)
    all_rows = only_cells(as_rows(out_dir), cells)
    rows = select(all_rows, dataset=dataset, split=split, attack=attack, threat_norm=threat_norm,
                  attack_params=attack_params, shift_norm=shift_norm, strict=strict, models=models, eps=eps)
    ctx = require_single(rows, CONTEXT_FIELDS + ATTACK_FIELDS, "shift_histograms")
    # One cell per model (a stricter condition than one curve per model, see query.curves).
    groups = by_model(rows)
    styles = styles_for(all_rows, styles, groups)
    shifts = _load_shifts(cells_root(out_dir), groups, eps)
    top = max(float(s.max()) for s in shifts.values())
    edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)

    fig, axes = _histogram_axes(layout, len(shifts), figsize)
    handles = []
    for ax, (model, s) in zip(axes, shifts.items()):
        color, _ = styles[model]
        counts, _ = np.histogram(s, bins=edges)
        frac = counts / s.size
        if layout == "overlay":
            ax.stairs(frac, edges, color=color, lw=2, gid=f"shift:{model}")
        else:
            ax.stairs(frac, edges, color=color, fill=True, alpha=0.75, gid=f"shift:{model}")
            ax.set_title(model)
        label = f"{model} (n = {s.size}, median {np.median(s):.3g})"
        handles.append(Line2D([], [], color=color, lw=2, label=label))
        if log:
            ax.set_yscale("log")
    for ax in set(axes):
        ax.set_xlabel(shift_text(ctx["shift_norm"]))
        ax.set_ylabel("fraction of samples")
    fig.suptitle(f"Per-sample probability shift – {title_context(ctx)}, {attack_title(all_rows, rows)}, "
                 f"ε = {fmt_eps(rows[0]['eps'])}{health_note(rows)}")
    legend(fig, handles, ncols=min(len(handles), 2))
    return fig


def _load_shifts(root, groups: Mapping[str, list[dict]], eps: float) -> dict[str, np.ndarray]:
    """``{model: f64[n] per-sample shifts}`` from the one cell of each model's rows."""
    shifts = {}
    for model, mrows in groups.items():
        cells = {r["cell"] for r in mrows}
        if len(cells) != 1:
            raise ValueError(f"model {model!r} at eps={eps:g} spans several cells {sorted(cells)}; filter the records")
        s = np.asarray(R.load_samples(root, cells.pop())["shift"], dtype=np.float64)
        if s.size == 0 or not np.all(np.isfinite(s)):
            raise ValueError(f"cell of model {model!r} at eps={eps:g} has no finite per-sample shifts")
        shifts[model] = s
    return shifts


def _histogram_axes(layout: str, count: int, figsize: tuple[float, float] | None) -> tuple[Figure, list]:
    """The figure and one axis per histogram: the same axis ``count`` times for ``"overlay"``."""
    if layout == "overlay":
        fig = Figure(figsize=figsize or (7.4, 5.0), layout="constrained")
        return fig, [fig.add_subplot()] * count
    nc = min(3, count)
    nr = math.ceil(count / nc)
    fig = Figure(figsize=figsize or (3.9 * nc + 0.4, 3.2 * nr + 1.2), layout="constrained")
    grid = fig.subplots(nr, nc, sharex=True, sharey=True, squeeze=False).ravel()
    for ax in grid[count:]:
        ax.set_visible(False)
    return fig, list(grid[:count])
