"""RR over (ε, tolerance) as heatmaps: one panel per model × attack variant, one 0..1 scale."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from rrjax.plots.query import (
    CONTEXT_FIELDS, as_rows, attack_key, attack_labels, check_unique, curves, distinct, require_single,
    select_attacks,
)
from rrjax.plots.style import HEATMAP_CMAP, health_note, rr_definition, styled, tick_labels, title_context

__all__ = ["rr_heatmaps"]


@styled
def rr_heatmaps(
    records: Any,
    *,
    dataset: str | None = None,
    attacks: str | Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    split: str | None = None,
    threat_norm: str | None = None,
    shift_norm: str | None = None,
    strict: bool | None = None,
    annotate: bool | None = None,
    panel_size: tuple[float, float] = (3.9, 3.2),
) -> Figure:
    """RR over (ε, tolerance): a grid of heatmaps, rows = models, columns = attack variants.

    Every panel shares the colour scale [0, 1] (``cividis``) and one colour bar. The panels of a
    column share the union of their models' ε and tolerance grids; a cell with no record (a model
    not evaluated at that ε) is masked and left blank.

    Args:
      records: record rows or a records path (see :func:`select`).
      dataset, split, shift_norm, strict: selection; ``None`` requires a single value.
      attacks: attack name(s) (default: all); each (attack, threat norm, hyperparameters)
        variant is one column.
      threat_norm: keep only attacks with this threat norm.
      models: models to draw, one row each (default: all).
      annotate: write the RR value in each cell (default: when a panel has at most 64 cells and
        8 tolerances).
      panel_size: inches per panel.

    Returns:
      The figure; each panel's image (gid ``rr_heatmap:<model>:<attack label>``) holds
      ``RR[i, j]`` at ε ``i`` (increasing upwards) and tolerance ``j`` (increasing rightwards).

    Raises:
      ValueError: a selection matches nothing, or is ambiguous.
    """
    all_rows = as_rows(records)
    rows = select_attacks(all_rows, attacks, dataset=dataset, split=split, threat_norm=threat_norm,
                          shift_norm=shift_norm, strict=strict, models=models)
    ctx = require_single(rows, CONTEXT_FIELDS, "rr_heatmaps")
    check_unique(rows, ("model", "attack", "threat_norm", "attack_params", "eps", "tolerance"))
    labels = attack_labels(rows)
    model_names = distinct(rows, "model")
    nr, nc = len(model_names), len(labels)
    fig = Figure(figsize=(panel_size[0] * nc + 1.2, panel_size[1] * nr + 0.9), layout="constrained")
    axes = fig.subplots(nr, nc, squeeze=False)
    image = None
    for j, (key, label) in enumerate(labels.items()):
        # One (ε, b) grid per column, so the rows of every model line up; missing cells stay blank.
        col_rows = [r for r in rows if attack_key(r) == key]
        eps_grid = sorted({r["eps"] for r in col_rows})
        tol_grid = sorted({r["tolerance"] for r in col_rows})
        col_curves = curves(col_rows)
        for i, model in enumerate(model_names):
            ax = axes[i, j]
            ax.grid(False)
            ax.set_title(f"{model} – {label}")
            drawn = _heatmap_panel(ax, col_curves.get(model, []), eps_grid, tol_grid, f"{model}:{label}", annotate)
            if drawn is None:
                continue
            image = drawn
            if i == nr - 1:
                ax.set_xlabel("tolerance b")
            if j == 0:
                ax.set_ylabel("attack budget ε")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="robust ratio RR", shrink=0.9)
    fig.suptitle(f"RR over (ε, tolerance) – {title_context(ctx)}; "
                 f"{rr_definition(ctx['shift_norm'], ctx['strict'])}{health_note(rows)}")
    return fig


def _heatmap_panel(ax, cell_rows: Sequence[dict], eps_grid: Sequence[float], tol_grid: Sequence[float],
                   name: str, annotate: bool | None):
    """Draws one model's RR grid on ``ax`` (gid ``rr_heatmap:<name>``); None for a model without records."""
    if not cell_rows:
        ax.text(0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes, color="#555555")
        ax.set_xticks([])
        ax.set_yticks([])
        return None
    grid = np.full((len(eps_grid), len(tol_grid)), np.nan)
    for r in cell_rows:
        grid[eps_grid.index(r["eps"]), tol_grid.index(r["tolerance"])] = r["rr"]
    image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap=HEATMAP_CMAP,
                      vmin=0.0, vmax=1.0, interpolation="nearest")
    image.set_gid(f"rr_heatmap:{name}")
    # Numbers stay legible up to about 8 columns of a 4-inch panel; larger grids rely on colour.
    if annotate or (annotate is None and grid.size <= 64 and grid.shape[1] <= 8):
        fs = 6.5 if grid.shape[1] > 8 else 8.5
        for (a, b), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=fs,
                        color="white" if v < 0.55 else "black")
    tick_labels(ax, tol_grid, "x")
    tick_labels(ax, eps_grid, "y")
    return image
