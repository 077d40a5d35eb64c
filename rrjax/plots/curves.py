"""Line figures of RA and RR: against the tolerance ``b`` at one ε, and against ε.

* :func:`rr_ra_figure` - the study's figure (Lyu, Jin & Das, NLDL 2025): RR against the
  tolerance ``b`` on the left axis, RA on a right axis, one colour per model, at one ε.
* :func:`rr_vs_eps_figure` - the transposed view: RR against ε, one panel per tolerance, RA
  against ε on each panel's right axis.
* :func:`ra_vs_eps_figure` - RA against ε with 95% CI bands, one panel per attack.

References:
  S. Lyu, Y. Jin, S. Das. "Is it the model or the metric - On robustness measures of deepfake
  detectors", NLDL 2025.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from rrjax._validation import check_int
from rrjax.plots.query import (
    ATTACK_FIELDS, CONTEXT_FIELDS, as_rows, attack_key, attack_labels, attack_title, check_unique, close, curves,
    ra_points, require_single, select, select_attacks, styles_for, unique_floats,
)
from rrjax.plots.style import (
    Y_LIM, fmt_eps, health_note, legend, model_handles, rr_definition, shift_text, styled, title_context,
)

__all__ = ["rr_ra_figure", "rr_vs_eps_figure", "ra_vs_eps_figure"]

_Styles = Mapping[str, tuple[str, str]]


@styled
def rr_ra_figure(
    records: Any,
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
    styles: _Styles | None = None,
    figsize: tuple[float, float] = (7.6, 5.4),
) -> Figure:
    """RR against tolerance (left axis) and RA (right axis) per model at one ε: the study's figure.

    Each model's RR(b) is a solid line with markers over its tolerance grid and a shaded 95% CI
    band (``rr_lo``..``rr_hi``). RA does not depend on ``b``, so it is a dashed horizontal line in
    the same colour on the right axis, plus a marker with a 95% CI bar in a grey strip right of the
    tolerance range. Both axes span [0, 1] so RR and RA read on one scale.

    Args:
      records: record rows or a records path (see :func:`select`).
      eps: the attack budget ε (matched within rtol 1e-5).
      dataset, attack, split, threat_norm, attack_params, shift_norm, strict: selection (see
        :func:`select`); ``None`` requires a single value in the records.
      models: models to draw (default: all).
      styles: ``{model: (colour, marker)}`` (default :func:`model_styles` of all ``records``).
      figsize: inches.

    Returns:
      The figure; ``fig.axes[0]`` is the RR axis, ``fig.axes[1]`` its right-hand RA twin.

    Raises:
      ValueError: a selection matches nothing, or is ambiguous (the message lists the choices).
    """
    all_rows = as_rows(records)
    rows = select(all_rows, dataset=dataset, split=split, attack=attack, threat_norm=threat_norm,
                  attack_params=attack_params, shift_norm=shift_norm, strict=strict, models=models, eps=eps)
    ctx = require_single(rows, CONTEXT_FIELDS + ATTACK_FIELDS, "rr_ra_figure")
    check_unique(rows, ("model", "tolerance"))
    groups = curves(rows)
    styles = styles_for(all_rows, styles, groups)

    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    ax_ra = ax.twinx()
    tols = unique_floats(r["tolerance"] for r in rows)
    step, strip_end = _rr_ra_lines(ax, ax_ra, groups, styles, tols)
    _rr_ra_axes(ax, ax_ra, tols, step, strip_end, ctx["shift_norm"])
    n = sorted({r["n"] for r in rows})
    fig.suptitle(f"RR and RA vs tolerance – {title_context(ctx)}, {attack_title(all_rows, rows)}, "
                 f"ε = {fmt_eps(rows[0]['eps'])}\n"
                 f"{rr_definition(ctx['shift_norm'], ctx['strict'])}; n = {', '.join(map(str, n))}"
                 f"{health_note(rows)}")
    legend(fig, model_handles(styles, list(groups)))
    return fig


def _rr_ra_lines(ax, ax_ra, groups: Mapping[str, list[dict]], styles: _Styles,
                 tols: Sequence[float]) -> tuple[float, float]:
    """Draws each model's RR line and band, its RA line and its RA marker in the strip.

    Returns:
      ``(step, strip_end)``: the spacing of the RA markers right of the largest tolerance, and
      the right end of the grey strip that holds them.
    """
    lo_t, hi_t = tols[0], tols[-1]
    span = (hi_t - lo_t) or max(hi_t, 1.0)
    step = 0.05 * span
    strip_end = hi_t + step * (len(groups) + 1)
    ax.axvspan(hi_t + 0.5 * step, strip_end, color="#000000", alpha=0.05, lw=0)
    for k, (model, mrows) in enumerate(groups.items()):
        color, marker = styles[model]
        t = np.array([r["tolerance"] for r in mrows])
        ax.fill_between(t, [r["rr_lo"] for r in mrows], [r["rr_hi"] for r in mrows], color=color, alpha=0.18,
                        lw=0, gid=f"rr_ci:{model}")
        ax.plot(t, [r["rr"] for r in mrows], color=color, marker=marker, ms=5, lw=2, gid=f"rr:{model}", label=model)
        ra, ra_lo, ra_hi = mrows[0]["ra"], mrows[0]["ra_lo"], mrows[0]["ra_hi"]
        ax_ra.plot([lo_t, hi_t], [ra, ra], color=color, ls="--", lw=1.6, gid=f"ra:{model}")
        bar = ax_ra.errorbar([hi_t + step * (k + 1)], [ra], yerr=[[max(ra - ra_lo, 0.0)], [max(ra_hi - ra, 0.0)]],
                             fmt=marker, color=color, ms=6, capsize=3, lw=1.5)
        bar.lines[0].set_gid(f"ra_marker:{model}")
        for seg in bar.lines[2]:
            seg.set_gid(f"ra_ci:{model}")
    return step, strip_end


def _rr_ra_axes(ax, ax_ra, tols: Sequence[float], step: float, strip_end: float, shift_norm: str) -> None:
    """Limits, ticks (the tolerance range, plus an "RA" label under the strip) and axis labels."""
    lo_t, hi_t = tols[0], tols[-1]
    span = (hi_t - lo_t) or max(hi_t, 1.0)
    pad = 0.02 * span
    ax.set_xlim(lo_t - pad, strip_end)
    ticks = [v for v in ax.xaxis.get_major_locator().tick_values(lo_t, hi_t) if lo_t - 1e-12 <= v <= hi_t + 1e-12]
    ticks = ticks if len(tols) > 1 and ticks else tols
    ax.set_xticks(ticks, [f"{v:.3g}" for v in ticks])
    # A minor tick names the strip below the axis, where no marker can sit (minor ticks draw no grid line).
    ax.set_xticks([0.5 * (hi_t + 0.5 * step + strip_end)], ["RA"], minor=True)
    ax.tick_params(axis="x", which="minor", length=0, labelcolor="#555555")
    for a in (ax, ax_ra):
        a.set_ylim(*Y_LIM)
    ax_ra.grid(False)
    ax.set_xlabel(f"tolerance b on {shift_text(shift_norm)}")
    # The line styles are explained on the axes themselves, which keeps the legend to one entry per model.
    ax.set_ylabel("robust ratio RR(b): solid, band = 95% CI")
    ax_ra.set_ylabel("robust accuracy RA: dashed, bar = 95% CI")


def _pick_tolerances(rows: Sequence[Mapping], tolerances: Any, count: int = 4) -> list[float]:
    avail = unique_floats(r["tolerance"] for r in rows)
    if tolerances is None:
        idx = np.unique(np.round(np.linspace(0, len(avail) - 1, min(count, len(avail)))).astype(int))
        return [avail[i] for i in idx]
    select(rows, tolerance=tolerances)  # validates, listing the available tolerances
    return unique_floats(np.atleast_1d(np.asarray(tolerances, dtype=np.float64)))


@styled
def rr_vs_eps_figure(
    records: Any,
    *,
    dataset: str | None = None,
    attack: str | None = None,
    tolerances: float | Sequence[float] | None = None,
    models: Sequence[str] | None = None,
    split: str | None = None,
    threat_norm: str | None = None,
    attack_params: Mapping[str, Any] | None = None,
    shift_norm: str | None = None,
    strict: bool | None = None,
    styles: _Styles | None = None,
    panel_size: tuple[float, float] = (4.0, 3.6),
) -> Figure:
    """RR against ε (left axis, 95% CI band) and RA against ε (right axis), one panel per tolerance.

    Args:
      records: record rows or a records path (see :func:`select`).
      dataset, attack, split, threat_norm, attack_params, shift_norm, strict: selection (see
        :func:`select`); ``None`` requires a single value in the records.
      tolerances: tolerances ``b`` to draw, one panel each (default: up to four spread evenly over
        the tolerance grid, both ends included).
      models: models to draw (default: all).
      styles: ``{model: (colour, marker)}`` (default :func:`model_styles` of all ``records``).
      panel_size: inches per panel.

    Returns:
      The figure: with ``k`` tolerances, ``fig.axes[:k]`` are the RR panels left to right in
      increasing tolerance and ``fig.axes[k:]`` their right-hand RA twins, in the same order.

    Raises:
      ValueError: a selection matches nothing, or is ambiguous.
    """
    all_rows = as_rows(records)
    rows = select(all_rows, dataset=dataset, split=split, attack=attack, threat_norm=threat_norm,
                  attack_params=attack_params, shift_norm=shift_norm, strict=strict, models=models)
    ctx = require_single(rows, CONTEXT_FIELDS + ATTACK_FIELDS, "rr_vs_eps_figure")
    check_unique(rows, ("model", "eps", "tolerance"))
    tols = _pick_tolerances(rows, tolerances)
    groups = curves(rows)
    styles = styles_for(all_rows, styles, groups)

    fig = Figure(figsize=(panel_size[0] * len(tols) + 0.6, panel_size[1] + 1.4), layout="constrained")
    axes = fig.subplots(1, len(tols), sharey=True, squeeze=False)[0]
    for j, (ax, b) in enumerate(zip(axes, tols)):
        ax_ra = _rr_vs_eps_panel(ax, b, groups, styles)
        if j == 0:
            ax.set_ylabel("robust ratio RR(b): solid, band = 95% CI")
        if j == len(tols) - 1:
            ax_ra.set_ylabel("robust accuracy RA: dashed")
        else:
            ax_ra.tick_params(labelright=False)
    fig.suptitle(f"RR and RA vs ε – {title_context(ctx)}, {attack_title(all_rows, rows)}\n"
                 f"{rr_definition(ctx['shift_norm'], ctx['strict'])}{health_note(rows)}")
    legend(fig, model_handles(styles, list(groups)))
    return fig


def _rr_vs_eps_panel(ax, b: float, groups: Mapping[str, list[dict]], styles: _Styles):
    """Draws RR(b) against ε on ``ax`` and RA against ε on its new right twin, which it returns."""
    ax_ra = ax.twinx()
    for model, mrows in groups.items():
        color, marker = styles[model]
        at_b = [r for r in mrows if close(r["tolerance"], b)]
        if not at_b:
            continue
        e = [r["eps"] for r in at_b]
        ax.fill_between(e, [r["rr_lo"] for r in at_b], [r["rr_hi"] for r in at_b], color=color, alpha=0.18,
                        lw=0, gid=f"rr_ci:{model}@b={b:g}")
        ax.plot(e, [r["rr"] for r in at_b], color=color, marker=marker, ms=5, lw=2, gid=f"rr:{model}@b={b:g}")
        ra = ra_points(mrows)
        ax_ra.plot([p[0] for p in ra], [p[1] for p in ra], color=color, ls="--", lw=1.6,
                   gid=f"ra:{model}@b={b:g}")
    ax.set_title(f"b = {b:.3g}")
    ax.set_xlabel("attack budget ε")
    ax.set_ylim(*Y_LIM)
    ax_ra.set_ylim(*Y_LIM)
    ax_ra.grid(False)
    return ax_ra


@styled
def ra_vs_eps_figure(
    records: Any,
    *,
    dataset: str | None = None,
    attacks: str | Sequence[str] | None = None,
    models: Sequence[str] | None = None,
    split: str | None = None,
    threat_norm: str | None = None,
    shift_norm: str | None = None,
    strict: bool | None = None,
    styles: _Styles | None = None,
    ncols: int = 3,
    panel_size: tuple[float, float] = (4.2, 3.6),
) -> Figure:
    """RA against ε with 95% CI bands, one line per model, one panel per attack.

    Args:
      records: record rows or a records path (see :func:`select`).
      dataset, split, shift_norm, strict: selection; ``None`` requires a single value.
      attacks: attack name(s) to draw (default: all); each (attack, threat norm, hyperparameters)
        variant gets its own panel.
      threat_norm: keep only attacks with this threat norm.
      models: models to draw (default: all).
      styles: ``{model: (colour, marker)}`` (default :func:`model_styles` of all ``records``).
      ncols: panels per row.
      panel_size: inches per panel.

    Returns:
      The figure, one axis per attack variant in sorted order.

    Raises:
      ValueError: a selection matches nothing, or is ambiguous.
    """
    all_rows = as_rows(records)
    rows = select_attacks(all_rows, attacks, dataset=dataset, split=split, threat_norm=threat_norm,
                          shift_norm=shift_norm, strict=strict, models=models)
    ctx = require_single(rows, CONTEXT_FIELDS, "ra_vs_eps_figure")
    check_unique(rows, ("model", "attack", "threat_norm", "attack_params", "eps", "tolerance"))
    labels = attack_labels(rows)
    styles = styles_for(all_rows, styles, {r["model"] for r in rows})
    ncols = check_int(ncols, name="ncols", minimum=1)
    nc = min(ncols, len(labels))
    nr = math.ceil(len(labels) / nc)
    fig = Figure(figsize=(panel_size[0] * nc + 0.4, panel_size[1] * nr + 1.2), layout="constrained")
    axes = fig.subplots(nr, nc, sharey=True, squeeze=False).ravel()
    models_drawn: list[str] = []
    for ax, (key, label) in zip(axes, labels.items()):
        for model, mrows in curves([r for r in rows if attack_key(r) == key]).items():
            color, marker = styles[model]
            pts = ra_points(mrows)
            e = [p[0] for p in pts]
            ax.fill_between(e, [p[2] for p in pts], [p[3] for p in pts], color=color, alpha=0.18, lw=0,
                            gid=f"ra_ci:{model}")
            ax.plot(e, [p[1] for p in pts], color=color, marker=marker, ms=5, lw=2, gid=f"ra:{model}")
            if model not in models_drawn:
                models_drawn.append(model)
        ax.set_title(label)
        ax.set_xlabel("attack budget ε")
        ax.set_ylim(*Y_LIM)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    for ax in axes[::nc]:
        ax.set_ylabel("robust accuracy RA")
    fig.suptitle(f"Robust accuracy vs ε – {title_context(ctx)}{health_note(rows)}")
    handles = model_handles(styles, sorted(models_drawn))
    handles.append(Patch(color="#555555", alpha=0.25, label="95% CI"))
    legend(fig, handles)
    return fig
