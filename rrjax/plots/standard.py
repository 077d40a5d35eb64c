"""The standard figures of a sweep directory, written in one call (:func:`save_all`)."""

from __future__ import annotations

import functools
import json
import os
import pathlib
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from rrjax import records as R
from rrjax.plots.curves import ra_vs_eps_figure, rr_ra_figure, rr_vs_eps_figure
from rrjax.plots.heatmaps import rr_heatmaps
from rrjax.plots.histograms import shift_histograms
from rrjax.plots.query import (
    CONTEXT_FIELDS, as_rows, attack_key, cells_root, close, distinct, field_key, model_styles, only_cells,
    select, unique_floats,
)
from rrjax.plots.style import check_formats, save, slug

__all__ = ["default_eps", "save_all"]


def default_eps(eps_values: Iterable[float]) -> list[float]:
    """The ε values :func:`save_all` draws by default: the middle positive ε and the largest."""
    grid = unique_floats(eps_values)
    positive = [e for e in grid if e > 0] or grid
    middle = positive[(len(positive) - 1) // 2]
    return unique_floats([middle, grid[-1]])


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
    colours (:func:`model_styles` over all records). Each file is written atomically
    (:func:`save`).

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
    formats = check_formats(formats)
    all_rows = only_cells(as_rows(sweep_dir), cells)
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
        cells_root(sweep_dir)
    styles = model_styles(all_rows)
    # File names name a field only where the records hold several values of it (threat norm and
    # hyperparameters: several for the same attack name).
    varies = {f: len(distinct(all_rows, f)) > 1 for f in CONTEXT_FIELDS}
    variants = {attack_key(r) for r in all_rows}
    draw_hist = functools.partial(shift_histograms, sweep_dir, models=models, log=hist_log, styles=styles,
                                  cells=cells) if histograms else None
    written: list[pathlib.Path] = []
    contexts = sorted({tuple(field_key(f, r[f]) for f in CONTEXT_FIELDS) for r in rows}, key=str)
    for cvals in contexts:
        cfilt = dict(zip(CONTEXT_FIELDS, cvals))
        crows = select(rows, **cfilt)
        ctag = [cfilt["dataset"]] + [cfilt[f] if f == "split" else f"{f}={cfilt[f]}"
                                     for f in CONTEXT_FIELDS[1:] if varies[f]]
        written += save(ra_vs_eps_figure(crows, styles=styles, **cfilt), out / slug("ra_vs_eps", *ctag),
                        formats=formats)
        written += save(rr_heatmaps(crows, **cfilt), out / slug("rr_heatmaps", *ctag), formats=formats)
        for key in sorted({attack_key(r) for r in crows}):
            norms = {k[1] for k in variants if k[0] == key[0]}
            params = {k[2] for k in variants if k[:2] == key[:2]}
            atag = ctag + [key[0]] + ([key[1]] if len(norms) > 1 else []) + (
                [R.cell_id(json.loads(key[2]))[:8]] if len(params) > 1 else [])
            written += _variant_figures([r for r in crows if attack_key(r) == key], key, cfilt, atag, out,
                                        formats, styles, wanted_eps, draw_hist)
    return written


def _variant_figures(arows: list[dict], key: tuple, cfilt: Mapping[str, Any], atag: list, out: pathlib.Path,
                     formats: Sequence[str], styles: Mapping[str, tuple[str, str]], wanted_eps: list[float] | None,
                     draw_hist: Callable[..., Any] | None) -> list[pathlib.Path]:
    """RR vs ε of one attack variant, then its RR/RA figure (and histograms, with ``draw_hist``) per chosen ε."""
    afilt = dict(cfilt, attack=key[0], threat_norm=key[1], attack_params=json.loads(key[2]))
    written = save(rr_vs_eps_figure(arows, styles=styles, **afilt), out / slug("rr_vs_eps", *atag), formats=formats)
    have = unique_floats(r["eps"] for r in arows)
    chosen = default_eps(have) if wanted_eps is None else [e for e in have if any(close(e, w) for w in wanted_eps)]
    for e in chosen:
        etag = atag + [f"eps{e:.4g}"]
        written += save(rr_ra_figure(arows, eps=e, styles=styles, **afilt), out / slug("rr_ra", *etag),
                        formats=formats)
        if draw_hist is not None:
            written += save(draw_hist(eps=e, **afilt), out / slug("shift_hist", *etag), formats=formats)
    return written
