"""Figures of a sweep, drawn from its records alone (never by re-running a model).

Every figure function takes the records (a list of rows as returned by
:func:`rrjax.records.load_records`, or a path that function accepts) and returns a
:class:`matplotlib.figure.Figure` built without pyplot, so nothing global is touched and no
display is needed; :func:`save` writes it as PNG/PDF.

* :func:`rr_ra_figure` - the study's figure (Lyu, Jin & Das, NLDL 2025): RR against the
  tolerance ``b`` on the left axis, RA on a right axis, one colour per model, at one ε.
* :func:`rr_vs_eps_figure` - the transposed view: RR against ε, one panel per tolerance, RA
  against ε on each panel's right axis.
* :func:`rr_heatmaps` - RR over (ε, tolerance), one panel per model × attack, shared 0..1 scale.
* :func:`ra_vs_eps_figure` - RA against ε with 95% CI bands, one panel per attack.
* :func:`shift_histograms` - per-sample probability shift ``‖p(x') − p(x)‖`` from the cell files.
* :func:`save_all` - every standard figure of a sweep directory.

Selections. ``dataset``, ``split``, ``attack``, ``threat_norm``, ``attack_params``,
``shift_norm`` and ``strict`` filter the rows; left as ``None`` a field may take only one value
in the selected rows (or, for faceted figures, one panel is drawn per value), otherwise a
``ValueError`` lists the values to choose from. ``eps`` and ``tolerance`` match stored values
within a relative tolerance of 1e-5 (so ``0.1`` finds the float32-rounded ``0.10000000149``).

Colours. Models take colours from the Okabe-Ito palette (safe for the common colour-vision
deficiencies) and a distinct marker, assigned in sorted-name order over *all* models in the
records (:func:`model_styles`), so a model keeps its colour when others are filtered out and
across every figure of one sweep.

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

import contextlib
import functools
import json
import logging
import math
import os
import pathlib
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import matplotlib as mpl
import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from rrjax import records as R
from rrjax._validation import as_grid, check_choice, check_int

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

# Okabe-Ito, reordered so the first colours are the most distinct on white; yellow (weak on
# white) and black (reads as an annotation) come last.
OKABE_ITO = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
FORMATS = ("png", "pdf", "svg")
HEATMAP_CMAP = "cividis"  # perceptually uniform and designed for colour-vision deficiencies
EPS_RTOL, EPS_ATOL = 1e-5, 1e-8
_NORM_SYMBOL = {"linf": "∞", "l1": "₁", "l2": "₂", "l0": "₀"}
_STYLE = {
    "font.size": 11, "axes.titlesize": 11.5, "axes.labelsize": 11, "xtick.labelsize": 10,
    "ytick.labelsize": 10, "legend.fontsize": 10, "figure.titlesize": 12.5, "axes.grid": True,
    "grid.alpha": 0.3, "grid.linewidth": 0.6, "savefig.dpi": 150,
    # TrueType in PDFs keeps the text selectable and editable.
    "pdf.fonttype": 42,
}
_Y_LIM = (-0.02, 1.02)
_CONTEXT_FIELDS = ("dataset", "split", "shift_norm", "strict")
_ATTACK_FIELDS = ("attack", "threat_norm", "attack_params")


def _styled(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(_STYLE):
            return fn(*args, **kwargs)

    return wrapper


# ------------------------------------------------------------------------------- selection

def _only_cells(rows: list[dict], cells: Collection[str] | None) -> list[dict]:
    if cells is None:
        return rows
    keep = set(cells)
    rows = [r for r in rows if r["cell"] in keep]
    if not rows:
        raise ValueError(f"the records hold none of the {len(keep)} requested cells")
    return rows


def _as_rows(records: Any) -> list[dict]:
    if isinstance(records, (str, os.PathLike)):
        rows = R.load_records(records)
    elif isinstance(records, Iterable) and not isinstance(records, Mapping):
        rows = list(records)
    else:
        raise ValueError(f"records must be a list of record rows or a path to a sweep directory / records file, "
                         f"got {type(records).__name__}")
    if not rows:
        raise ValueError("records is empty: the sweep has no finished cells to plot")
    bad = [i for i, r in enumerate(rows) if not isinstance(r, Mapping) or set(R.RECORD_FIELDS) - set(r)]
    if bad:
        raise ValueError(f"records row {bad[0]} is not a record (expected a dict with the fields of "
                         "rrjax.records.RECORD_FIELDS)")
    return rows


def _key(field: str, value: Any) -> Any:
    return R.canonical_json(value) if field == "attack_params" else value


def _show(field: str, value: Any) -> str:
    if field == "attack_params":
        return R.canonical_json(value)
    if field in ("eps", "tolerance"):
        return f"{value:.6g}"
    return repr(value)


def _distinct(rows: Sequence[Mapping], field: str) -> list:
    seen: dict[Any, Any] = {}
    for r in rows:
        seen.setdefault(_key(field, r[field]), r[field])
    return [seen[k] for k in sorted(seen, key=lambda k: (str(type(k)), k))]


def _unique_floats(values: Iterable[float]) -> list[float]:
    out: list[float] = []
    for v in sorted(float(x) for x in values):
        if not out or not math.isclose(v, out[-1], rel_tol=EPS_RTOL, abs_tol=EPS_ATOL):
            out.append(v)
    return out


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=EPS_RTOL, abs_tol=EPS_ATOL)


def _context(chosen: Sequence[str]) -> str:
    return f" with {', '.join(chosen)}" if chosen else ""


def select(
    records: Any,
    *,
    dataset: str | None = None,
    split: str | None = None,
    attack: str | None = None,
    threat_norm: str | None = None,
    attack_params: Mapping[str, Any] | None = None,
    shift_norm: str | None = None,
    strict: bool | None = None,
    models: str | Sequence[str] | None = None,
    eps: float | Sequence[float] | None = None,
    tolerance: float | Sequence[float] | None = None,
) -> list[dict]:
    """Rows of ``records`` that match every given filter (``None`` = no filter).

    Args:
      records: record rows, or a sweep directory / ``records.jsonl`` / ``records.csv`` path.
      dataset, split, attack, threat_norm, shift_norm, strict: exact values of those fields.
      attack_params: rows whose ``attack_params`` contain these items (a subset is enough).
      models: one model name or several.
      eps: one ε or several, matched within rtol 1e-5.
      tolerance: one tolerance ``b`` or several, matched within rtol 1e-5.

    Returns:
      The matching rows, in the order of ``records``.

    Raises:
      ValueError: a filter matches nothing; the message lists the values available under the
        filters applied before it.
    """
    rows = _as_rows(records)
    chosen: list[str] = []
    for field, want in (("dataset", dataset), ("split", split), ("attack", attack), ("threat_norm", threat_norm),
                        ("shift_norm", shift_norm), ("strict", strict), ("attack_params", attack_params)):
        if want is None:
            continue
        if field == "attack_params":
            if not isinstance(want, Mapping):
                raise ValueError(f"attack_params={want!r} must be a dict of hyperparameters, e.g. {{'steps': 10}}")
            kept = [r for r in rows if all(k in r[field] and r[field][k] == v for k, v in want.items())]
        else:
            kept = [r for r in rows if r[field] == want]
        if not kept:
            avail = ", ".join(_show(field, v) for v in _distinct(rows, field))
            raise ValueError(f"{field}={want!r} matches no records{_context(chosen)}; available: {avail}")
        rows = kept
        chosen.append(f"{field}={want!r}")
    if models is not None:
        names = [models] if isinstance(models, str) else list(models)
        if not names:
            raise ValueError("models is empty; expected one or more model names (or None for all)")
        avail = _distinct(rows, "model")
        unknown = [m for m in names if m not in avail]
        if unknown:
            raise ValueError(f"models={names!r}: no records for {', '.join(map(repr, unknown))}{_context(chosen)}; "
                             f"available models: {', '.join(map(repr, avail))}")
        rows = [r for r in rows if r["model"] in names]
        chosen.append(f"models={names!r}")
    for field, want in (("eps", eps), ("tolerance", tolerance)):
        if want is None:
            continue
        as_grid(want, name=field)  # shape, finiteness and sign; as_grid rounds to float32, so
        # matching below uses the caller's own float64 numbers.
        values = np.atleast_1d(np.asarray(want, dtype=np.float64))
        avail = _unique_floats(r[field] for r in rows)
        missing = [v for v in values if not any(_close(v, a) for a in avail)]
        if missing:
            raise ValueError(f"{field}={', '.join(f'{v:g}' for v in missing)} is not in the records{_context(chosen)}; "
                             f"available {field} values: {', '.join(f'{a:.6g}' for a in avail)}")
        rows = [r for r in rows if any(_close(r[field], v) for v in values)]
        chosen.append(f"{field}={want!r}")
    return rows


def _require_single(rows: Sequence[Mapping], fields: Sequence[str], what: str) -> dict[str, Any]:
    out = {}
    for field in fields:
        values = _distinct(rows, field)
        if len(values) > 1:
            shown = ", ".join(_show(field, v) for v in values)
            hint = " (a subset of the hyperparameters is enough)" if field == "attack_params" else ""
            raise ValueError(f"{what} needs one {field}, but the selected records hold {len(values)}: {shown}; "
                             f"pass {field}=... to choose one{hint}")
        out[field] = values[0]
    return out


def _attack_key(row: Mapping) -> tuple:
    return row["attack"], row["threat_norm"], R.canonical_json(row["attack_params"])


def _attack_labels(rows: Sequence[Mapping]) -> dict[tuple, str]:
    """Short labels for each (attack, threat norm, params) variant; params only where needed."""
    keys = sorted({_attack_key(r) for r in rows})
    labels = {}
    for key in keys:
        attack, norm, params = key
        label = f"{attack} ({_norm_name(norm)})"
        same = [k for k in keys if k[:2] == key[:2]]
        if len(same) > 1:
            mine = json.loads(params)
            group = [json.loads(k[2]) for k in same]
            differing = [p for p in sorted(set().union(*group))
                         if len({R.canonical_json(g.get(p)) for g in group}) > 1]
            label += " " + ",".join(f"{p}={mine.get(p)}" for p in differing)
        labels[key] = label
    return labels


def _attack_title(all_rows: Sequence[Mapping], rows: Sequence[Mapping]) -> str:
    """The attack label of ``rows`` (one variant), naming hyperparameters if the records need them."""
    ds = rows[0]["dataset"]
    return _attack_labels([r for r in all_rows if r["dataset"] == ds])[_attack_key(rows[0])]


def _norm_name(norm: str) -> str:
    return f"L{_NORM_SYMBOL.get(norm, norm)}" if norm in _NORM_SYMBOL else str(norm)


def _fmt_eps(eps: float) -> str:
    text = f"{eps:.4g}"
    k = eps * 255
    if eps > 0 and abs(round(eps, 3) - eps) > 1e-6 and abs(k - round(k)) < 1e-3:
        text += f" ({round(k)}/255)"
    return text


def _shift_text(shift_norm: str) -> str:
    return f"‖p(x′) − p(x)‖{_NORM_SYMBOL.get(shift_norm, '_' + str(shift_norm))}"


def _rr_definition(shift_norm: str, strict: bool) -> str:
    text = f"RR(b): share of samples with {_shift_text(shift_norm)} ≤ b"
    return text + " and the label unchanged" if strict else text


def _health_note(rows: Sequence[Mapping]) -> str:
    flagged = sorted({(r["model"], r["attack"], r["health"]) for r in rows if r["health"]})
    if not flagged:
        return ""
    return "\nattack-health flags: " + "; ".join(f"{m}/{a}: {h}" for m, a, h in flagged)


def _by_model(rows: Sequence[Mapping]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["model"], r["eps"], r["tolerance"])):
        out.setdefault(r["model"], []).append(r)
    return out


def _check_unique(rows: Sequence[Mapping], fields: Sequence[str]) -> None:
    seen: dict[tuple, Mapping] = {}
    for r in rows:
        k = tuple(_key(f, r[f]) for f in fields)
        if k in seen:
            other = seen[k]
            differ = [f for f in R.RECORD_FIELDS if f not in fields and other[f] != r[f]]
            raise ValueError(f"the records hold two rows for {dict(zip(fields, k))} that differ in {differ}; "
                             "filter them (e.g. plot one sweep directory at a time)")
        seen[k] = r


def _ra_points(rows: Sequence[Mapping]) -> list[tuple[float, float, float, float]]:
    """``(eps, ra, ra_lo, ra_hi)`` per ε of one model, RA being the same on all tolerance rows."""
    per_eps: dict[float, set] = {}
    for r in rows:
        per_eps.setdefault(r["eps"], set()).add((r["ra"], r["ra_lo"], r["ra_hi"]))
    out = []
    for e in sorted(per_eps):
        vals = per_eps[e]
        if len(vals) > 1:
            raise ValueError(f"model {rows[0]['model']!r} at eps={e:g} has differing RA on its tolerance rows "
                             f"({sorted(vals)}); the records are inconsistent")
        out.append((e,) + next(iter(vals)))
    return out


# ------------------------------------------------------------------------------- styles

def model_styles(records_or_models: Any) -> dict[str, tuple[str, str]]:
    """Colour and marker of each model, fixed by its rank among all model names.

    Args:
      records_or_models: record rows, a records path, or an iterable of model names.

    Returns:
      ``{model: (colour hex, marker)}`` over the Okabe-Ito palette and :data:`MARKERS`; past
      eight models the colours repeat with a different marker.
    """
    items = records_or_models
    if not isinstance(items, (str, os.PathLike)):
        items = list(items)
    if isinstance(items, (str, os.PathLike)) or (items and isinstance(items[0], Mapping)):
        names = {r["model"] for r in _as_rows(items)}
    else:
        names = set(items)
    return {m: (OKABE_ITO[i % len(OKABE_ITO)], MARKERS[(i + i // len(OKABE_ITO)) % len(MARKERS)])
            for i, m in enumerate(sorted(names))}


def _styles_for(rows_all: Sequence[Mapping], styles: Mapping[str, tuple[str, str]] | None, models: Iterable[str]):
    styles = dict(model_styles(rows_all) if styles is None else styles)
    missing = [m for m in models if m not in styles]
    if missing:
        raise ValueError(f"styles has no entry for model(s) {missing}; pass model_styles(records) or a dict "
                         "{model: (colour, marker)} covering every plotted model")
    return styles


def _title_context(ctx: Mapping[str, Any]) -> str:
    return f"{ctx['dataset']} ({ctx['split']})"


def _legend(fig: Figure, handles: list, ncols: int | None = None) -> None:
    # Below the axes, outside them, so no data point is ever hidden behind it.
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols or min(len(handles), 5), frameon=False)


# ------------------------------------------------------------------------------- figures

@_styled
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
    styles: Mapping[str, tuple[str, str]] | None = None,
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
    all_rows = _as_rows(records)
    rows = select(all_rows, dataset=dataset, split=split, attack=attack, threat_norm=threat_norm,
                  attack_params=attack_params, shift_norm=shift_norm, strict=strict, models=models, eps=eps)
    ctx = _require_single(rows, _CONTEXT_FIELDS + _ATTACK_FIELDS, "rr_ra_figure")
    _check_unique(rows, ("model", "tolerance"))
    groups = _by_model(rows)
    styles = _styles_for(all_rows, styles, groups)

    fig = Figure(figsize=figsize, layout="constrained")
    ax = fig.add_subplot()
    ax_ra = ax.twinx()
    tols = _unique_floats(r["tolerance"] for r in rows)
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
        bar = ax_ra.errorbar([hi_t + step * (k + 1)], [ra], yerr=[[max(ra - ra_lo, 0.0)], [max(ra_hi - ra, 0.0)]], fmt=marker,
                             color=color, ms=6, capsize=3, lw=1.5)
        bar.lines[0].set_gid(f"ra_marker:{model}")
        for seg in bar.lines[2]:
            seg.set_gid(f"ra_ci:{model}")
    pad = 0.02 * span
    ax.set_xlim(lo_t - pad, strip_end)
    ticks = [v for v in ax.xaxis.get_major_locator().tick_values(lo_t, hi_t) if lo_t - 1e-12 <= v <= hi_t + 1e-12]
    ticks = ticks if len(tols) > 1 and ticks else tols
    ax.set_xticks(ticks, [f"{v:.3g}" for v in ticks])
    # A minor tick names the strip below the axis, where no marker can sit (minor ticks draw no grid line).
    ax.set_xticks([0.5 * (hi_t + 0.5 * step + strip_end)], ["RA"], minor=True)
    ax.tick_params(axis="x", which="minor", length=0, labelcolor="#555555")
    for a in (ax, ax_ra):
        a.set_ylim(*_Y_LIM)
    ax_ra.grid(False)
    ax.set_xlabel(f"tolerance b on {_shift_text(ctx['shift_norm'])}")
    # The line styles are explained on the axes themselves, which keeps the legend to one entry per model.
    ax.set_ylabel("robust ratio RR(b): solid, band = 95% CI")
    ax_ra.set_ylabel("robust accuracy RA: dashed, bar = 95% CI")
    n = sorted({r["n"] for r in rows})
    fig.suptitle(f"RR and RA vs tolerance – {_title_context(ctx)}, {_attack_title(all_rows, rows)}, "
                 f"ε = {_fmt_eps(rows[0]['eps'])}\n"
                 f"{_rr_definition(ctx['shift_norm'], ctx['strict'])}; n = {', '.join(map(str, n))}"
                 f"{_health_note(rows)}")
    handles = [Line2D([], [], color=styles[m][0], marker=styles[m][1], lw=2, label=m) for m in groups]
    _legend(fig, handles)
    return fig


def _pick_tolerances(rows: Sequence[Mapping], tolerances: Any, count: int = 4) -> list[float]:
    avail = _unique_floats(r["tolerance"] for r in rows)
    if tolerances is None:
        idx = np.unique(np.round(np.linspace(0, len(avail) - 1, min(count, len(avail)))).astype(int))
        return [avail[i] for i in idx]
    select(rows, tolerance=tolerances)  # validates, listing the available tolerances
    return _unique_floats(np.atleast_1d(np.asarray(tolerances, dtype=np.float64)))


@_styled
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
    styles: Mapping[str, tuple[str, str]] | None = None,
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
    all_rows = _as_rows(records)
    rows = select(all_rows, dataset=dataset, split=split, attack=attack, threat_norm=threat_norm,
                  attack_params=attack_params, shift_norm=shift_norm, strict=strict, models=models)
    ctx = _require_single(rows, _CONTEXT_FIELDS + _ATTACK_FIELDS, "rr_vs_eps_figure")
    _check_unique(rows, ("model", "eps", "tolerance"))
    tols = _pick_tolerances(rows, tolerances)
    groups = _by_model(rows)
    styles = _styles_for(all_rows, styles, groups)

    fig = Figure(figsize=(panel_size[0] * len(tols) + 0.6, panel_size[1] + 1.4), layout="constrained")
    axes = fig.subplots(1, len(tols), sharey=True, squeeze=False)[0]
    for j, (ax, b) in enumerate(zip(axes, tols)):
        ax_ra = ax.twinx()
        for model, mrows in groups.items():
            color, marker = styles[model]
            at_b = [r for r in mrows if _close(r["tolerance"], b)]
            if not at_b:
                continue
            e = [r["eps"] for r in at_b]
            ax.fill_between(e, [r["rr_lo"] for r in at_b], [r["rr_hi"] for r in at_b], color=color, alpha=0.18,
                            lw=0, gid=f"rr_ci:{model}@b={b:g}")
            ax.plot(e, [r["rr"] for r in at_b], color=color, marker=marker, ms=5, lw=2, gid=f"rr:{model}@b={b:g}")
            ra = _ra_points(mrows)
            ax_ra.plot([p[0] for p in ra], [p[1] for p in ra], color=color, ls="--", lw=1.6,
                       gid=f"ra:{model}@b={b:g}")
        ax.set_title(f"b = {b:.3g}")
        ax.set_xlabel("attack budget ε")
        ax.set_ylim(*_Y_LIM)
        ax_ra.set_ylim(*_Y_LIM)
        ax_ra.grid(False)
        if j == 0:
            ax.set_ylabel("robust ratio RR(b): solid, band = 95% CI")
        if j == len(tols) - 1:
            ax_ra.set_ylabel("robust accuracy RA: dashed")
        else:
            ax_ra.tick_params(labelright=False)
    fig.suptitle(f"RR and RA vs ε – {_title_context(ctx)}, {_attack_title(all_rows, rows)}\n"
                 f"{_rr_definition(ctx['shift_norm'], ctx['strict'])}{_health_note(rows)}")
    handles = [Line2D([], [], color=styles[m][0], marker=styles[m][1], lw=2, label=m) for m in groups]
    _legend(fig, handles)
    return fig


@_styled
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
    styles: Mapping[str, tuple[str, str]] | None = None,
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
    all_rows = _as_rows(records)
    rows = _select_attacks(all_rows, attacks, dataset=dataset, split=split, threat_norm=threat_norm,
                           shift_norm=shift_norm, strict=strict, models=models)
    ctx = _require_single(rows, _CONTEXT_FIELDS, "ra_vs_eps_figure")
    _check_unique(rows, ("model", "attack", "threat_norm", "attack_params", "eps", "tolerance"))
    labels = _attack_labels(rows)
    styles = _styles_for(all_rows, styles, {r["model"] for r in rows})
    ncols = check_int(ncols, name="ncols", minimum=1)
    nc = min(ncols, len(labels))
    nr = math.ceil(len(labels) / nc)
    fig = Figure(figsize=(panel_size[0] * nc + 0.4, panel_size[1] * nr + 1.2), layout="constrained")
    axes = fig.subplots(nr, nc, sharey=True, squeeze=False).ravel()
    models_drawn: list[str] = []
    for ax, (key, label) in zip(axes, labels.items()):
        for model, mrows in _by_model([r for r in rows if _attack_key(r) == key]).items():
            color, marker = styles[model]
            pts = _ra_points(mrows)
            e = [p[0] for p in pts]
            ax.fill_between(e, [p[2] for p in pts], [p[3] for p in pts], color=color, alpha=0.18, lw=0,
                            gid=f"ra_ci:{model}")
            ax.plot(e, [p[1] for p in pts], color=color, marker=marker, ms=5, lw=2, gid=f"ra:{model}")
            if model not in models_drawn:
                models_drawn.append(model)
        ax.set_title(label)
        ax.set_xlabel("attack budget ε")
        ax.set_ylim(*_Y_LIM)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    for ax in axes[::nc]:
        ax.set_ylabel("robust accuracy RA")
    fig.suptitle(f"Robust accuracy vs ε – {_title_context(ctx)}{_health_note(rows)}")
    handles = [Line2D([], [], color=styles[m][0], marker=styles[m][1], lw=2, label=m) for m in sorted(models_drawn)]
    handles.append(Patch(color="#555555", alpha=0.25, label="95% CI"))
    _legend(fig, handles)
    return fig


def _select_attacks(rows, attacks, **filters) -> list[dict]:
    if attacks is None:
        return select(rows, **filters)
    names = [attacks] if isinstance(attacks, str) else list(attacks)
    if not names:
        raise ValueError("attacks is empty; expected one or more attack names (or None for all)")
    base = select(rows, **filters)
    avail = _distinct(base, "attack")
    unknown = [a for a in names if a not in avail]
    if unknown:
        raise ValueError(f"attacks={names!r}: no records for {', '.join(map(repr, unknown))}; "
                         f"available attacks: {', '.join(map(repr, avail))}")
    return [r for r in base if r["attack"] in names]


def _tick_labels(ax, values: Sequence[float], axis: str, max_ticks: int = 11) -> None:
    stride = max(1, math.ceil(len(values) / max_ticks))
    pos = list(range(0, len(values), stride))
    labels = [f"{values[i]:.3g}" for i in pos]
    if axis == "x":
        ax.set_xticks(pos, labels, rotation=45 if len(pos) > 6 else 0, ha="right" if len(pos) > 6 else "center")
    else:
        ax.set_yticks(pos, labels)


@_styled
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
    all_rows = _as_rows(records)
    rows = _select_attacks(all_rows, attacks, dataset=dataset, split=split, threat_norm=threat_norm,
                           shift_norm=shift_norm, strict=strict, models=models)
    ctx = _require_single(rows, _CONTEXT_FIELDS, "rr_heatmaps")
    _check_unique(rows, ("model", "attack", "threat_norm", "attack_params", "eps", "tolerance"))
    labels = _attack_labels(rows)
    model_names = _distinct(rows, "model")
    nr, nc = len(model_names), len(labels)
    fig = Figure(figsize=(panel_size[0] * nc + 1.2, panel_size[1] * nr + 0.9), layout="constrained")
    axes = fig.subplots(nr, nc, squeeze=False)
    image = None
    for j, (key, label) in enumerate(labels.items()):
        # One (ε, b) grid per column, so the rows of every model line up; missing cells stay blank.
        col_rows = [r for r in rows if _attack_key(r) == key]
        eps_grid = sorted({r["eps"] for r in col_rows})
        tol_grid = sorted({r["tolerance"] for r in col_rows})
        for i, model in enumerate(model_names):
            ax = axes[i, j]
            ax.grid(False)
            cell_rows = [r for r in col_rows if r["model"] == model]
            ax.set_title(f"{model} – {label}")
            if not cell_rows:
                ax.text(0.5, 0.5, "no records", ha="center", va="center", transform=ax.transAxes, color="#555555")
                ax.set_xticks([])
                ax.set_yticks([])
                continue
            grid = np.full((len(eps_grid), len(tol_grid)), np.nan)
            for r in cell_rows:
                grid[eps_grid.index(r["eps"]), tol_grid.index(r["tolerance"])] = r["rr"]
            image = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap=HEATMAP_CMAP,
                              vmin=0.0, vmax=1.0, interpolation="nearest")
            image.set_gid(f"rr_heatmap:{model}:{label}")
            # Numbers stay legible up to about 8 columns of a 4-inch panel; larger grids rely on colour.
            if annotate or (annotate is None and grid.size <= 64 and grid.shape[1] <= 8):
                fs = 6.5 if grid.shape[1] > 8 else 8.5
                for (a, b), v in np.ndenumerate(grid):
                    if np.isfinite(v):
                        ax.text(b, a, f"{v:.2f}", ha="center", va="center", fontsize=fs,
                                color="white" if v < 0.55 else "black")
            _tick_labels(ax, tol_grid, "x")
            _tick_labels(ax, eps_grid, "y")
            if i == nr - 1:
                ax.set_xlabel("tolerance b")
            if j == 0:
                ax.set_ylabel("attack budget ε")
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), label="robust ratio RR", shrink=0.9)
    fig.suptitle(f"RR over (ε, tolerance) – {_title_context(ctx)}; "
                 f"{_rr_definition(ctx['shift_norm'], ctx['strict'])}{_health_note(rows)}")
    return fig


@_styled
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
    all_rows = _only_cells(_as_rows(out_dir), cells)
    rows = select(all_rows, dataset=dataset, split=split, attack=attack, threat_norm=threat_norm,
                  attack_params=attack_params, shift_norm=shift_norm, strict=strict, models=models, eps=eps)
    ctx = _require_single(rows, _CONTEXT_FIELDS + _ATTACK_FIELDS, "shift_histograms")
    groups = _by_model(rows)
    styles = _styles_for(all_rows, styles, groups)
    cells_dir = _cells_root(out_dir)
    shifts = {}
    for model, mrows in groups.items():
        cells = {r["cell"] for r in mrows}
        if len(cells) != 1:
            raise ValueError(f"model {model!r} at eps={eps:g} spans several cells {sorted(cells)}; filter the records")
        s = np.asarray(R.load_samples(cells_dir, cells.pop())["shift"], dtype=np.float64)
        if s.size == 0 or not np.all(np.isfinite(s)):
            raise ValueError(f"cell of model {model!r} at eps={eps:g} has no finite per-sample shifts")
        shifts[model] = s
    top = max(float(s.max()) for s in shifts.values())
    edges = np.linspace(0.0, top if top > 0 else 1.0, bins + 1)

    if layout == "overlay":
        fig = Figure(figsize=figsize or (7.4, 5.0), layout="constrained")
        axes = [fig.add_subplot()] * len(shifts)
    else:
        nc = min(3, len(shifts))
        nr = math.ceil(len(shifts) / nc)
        fig = Figure(figsize=figsize or (3.9 * nc + 0.4, 3.2 * nr + 1.2), layout="constrained")
        grid = fig.subplots(nr, nc, sharex=True, sharey=True, squeeze=False).ravel()
        for ax in grid[len(shifts):]:
            ax.set_visible(False)
        axes = list(grid[:len(shifts)])
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
        ax.set_xlabel(_shift_text(ctx["shift_norm"]))
        ax.set_ylabel("fraction of samples")
    fig.suptitle(f"Per-sample probability shift – {_title_context(ctx)}, {_attack_title(all_rows, rows)}, "
                 f"ε = {_fmt_eps(rows[0]['eps'])}{_health_note(rows)}")
    _legend(fig, handles, ncols=min(len(handles), 2))
    return fig


def _cells_root(path: str | os.PathLike) -> pathlib.Path:
    p = pathlib.Path(path)
    root = p if p.is_dir() else p.parent
    if not (root / "cells").is_dir():
        raise ValueError(f"{str(path)!r} has no cells/ directory next to its records; per-sample histograms need "
                         "the sweep directory itself (records.jsonl with its cells/)")
    return root


# ------------------------------------------------------------------------------- saving

def save(fig: Figure, path: str | os.PathLike, *, formats: Sequence[str] = ("png", "pdf")) -> list[pathlib.Path]:
    """Writes ``fig`` as ``<path>.<fmt>`` for each format; returns the written paths.

    Args:
      fig: a figure from this module.
      path: target path without extension (its parent directories are created).
      formats: any of :data:`FORMATS`.
    """
    out = []
    base = pathlib.Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    for fmt in _check_formats(formats):
        target = base.with_name(f"{base.name}.{fmt}")
        with mpl.rc_context(_STYLE), _quiet_font_subsetting():
            fig.savefig(target, format=fmt)
        out.append(target)
    return out


@contextlib.contextmanager
def _quiet_font_subsetting():
    # PDF output subsets fonts with fontTools, which logs every table at INFO; under absl (whose
    # handler shows INFO) that is thousands of lines per figure. Scoped, and restored afterwards.
    logger = logging.getLogger("fontTools")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def _check_formats(formats: Sequence[str]) -> list[str]:
    formats = [formats] if isinstance(formats, str) else list(formats)
    if not formats:
        raise ValueError(f"formats is empty; expected one or more of {', '.join(FORMATS)}")
    for f in formats:
        check_choice(f, FORMATS, name="format")
    return formats


def _slug(*parts: Any) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9._=-]+", "-", str(p)).strip("-") for p in parts if p != "")


def default_eps(eps_values: Iterable[float]) -> list[float]:
    """The ε values :func:`save_all` draws by default: the middle positive ε and the largest."""
    grid = _unique_floats(eps_values)
    positive = [e for e in grid if e > 0] or grid
    middle = positive[(len(positive) - 1) // 2]
    return _unique_floats([middle, grid[-1]])


def save_all(
    sweep_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    formats: Sequence[str] = ("png", "pdf"),
    dataset: str | None = None,
    attack: str | None = None,
    eps: float | Sequence[float] | None = None,
    models: Sequence[str] | None = None,
    histograms: bool | None = None,
    hist_log: bool = False,
    cells: Collection[str] | None = None,
) -> list[pathlib.Path]:
    """Writes every standard figure of a sweep; returns the written files.

    For each (dataset, split, shift norm, strictness) in the records: RA vs ε (all attacks),
    RR heatmaps (all models × attacks), and for each attack variant RR vs ε, plus the study's
    RR/RA vs tolerance figure and the shift histograms at each chosen ε (default: the middle
    positive ε and the largest, see :func:`default_eps`). Every figure uses the same model
    colours (:func:`model_styles` over all records).

    Args:
      sweep_dir: a sweep directory, or a ``records.jsonl`` / ``records.csv`` file.
      out_dir: where to write (default ``<sweep dir>/figures``).
      formats: file formats, any of :data:`FORMATS`.
      dataset, attack, models: optional filters (see :func:`select`).
      eps: ε value(s) for the per-ε figures (default: per attack, :func:`default_eps`).
      histograms: draw shift histograms (default: when ``cells/`` exists next to the records;
        ``True`` without it raises).
      hist_log: logarithmic count axis for the histograms.
      cells: only the rows of these cell ids (e.g. ``rrjax.sweep.cell_ids`` of one run, in a
        directory that also holds other runs' cells).

    Returns:
      Paths of the written files, in writing order.

    Raises:
      ValueError: unreadable or manifest-mismatched records, or a selection matching nothing.
    """
    formats = _check_formats(formats)
    all_rows = _only_cells(_as_rows(sweep_dir), cells)
    rows = select(all_rows, dataset=dataset, attack=attack, models=models)
    wanted_eps = None
    if eps is not None:
        select(rows, eps=eps)  # every requested ε must exist somewhere; the message lists them
        wanted_eps = [float(e) for e in np.atleast_1d(np.asarray(eps, dtype=np.float64))]
    src = pathlib.Path(sweep_dir)
    root = src if src.is_dir() else src.parent
    out = pathlib.Path(out_dir) if out_dir is not None else root / "figures"
    if histograms is None:
        histograms = (root / "cells").is_dir()
    elif histograms:
        _cells_root(sweep_dir)
    styles = model_styles(all_rows)
    # File names name a field only where the records hold several values of it (threat norm and
    # hyperparameters: several for the same attack name).
    varies = {f: len(_distinct(all_rows, f)) > 1 for f in _CONTEXT_FIELDS}
    variants = {_attack_key(r) for r in all_rows}
    written: list[pathlib.Path] = []
    contexts = sorted({tuple(_key(f, r[f]) for f in _CONTEXT_FIELDS) for r in rows}, key=str)
    for cvals in contexts:
        cfilt = dict(zip(_CONTEXT_FIELDS, cvals))
        crows = select(rows, **cfilt)
        ctag = [cfilt["dataset"]] + [cfilt[f] if f == "split" else f"{f}={cfilt[f]}"
                                     for f in _CONTEXT_FIELDS[1:] if varies[f]]
        written += save(ra_vs_eps_figure(crows, styles=styles, **cfilt), out / _slug("ra_vs_eps", *ctag),
                        formats=formats)
        written += save(rr_heatmaps(crows, **cfilt), out / _slug("rr_heatmaps", *ctag), formats=formats)
        for key in sorted({_attack_key(r) for r in crows}):
            arows = [r for r in crows if _attack_key(r) == key]
            afilt = dict(cfilt, attack=key[0], threat_norm=key[1], attack_params=json.loads(key[2]))
            norms = {k[1] for k in variants if k[0] == key[0]}
            params = {k[2] for k in variants if k[:2] == key[:2]}
            atag = ctag + [key[0]] + ([key[1]] if len(norms) > 1 else []) + (
                [R.cell_id(json.loads(key[2]))[:8]] if len(params) > 1 else [])
            written += save(rr_vs_eps_figure(arows, styles=styles, **afilt), out / _slug("rr_vs_eps", *atag),
                            formats=formats)
            have = _unique_floats(r["eps"] for r in arows)
            chosen = default_eps(have) if wanted_eps is None else [
                e for e in have if any(_close(e, w) for w in wanted_eps)]
            for e in chosen:
                etag = atag + [f"eps{e:.4g}"]
                written += save(rr_ra_figure(arows, eps=e, styles=styles, **afilt), out / _slug("rr_ra", *etag),
                                formats=formats)
                if histograms:
                    fig = shift_histograms(sweep_dir, eps=e, models=models, log=hist_log, styles=styles, cells=cells,
                                           **afilt)
                    written += save(fig, out / _slug("shift_hist", *etag), formats=formats)
    return written
