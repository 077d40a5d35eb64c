"""The record query behind every figure: load and check rows, select them, group them.

Selections. ``dataset``, ``split``, ``attack``, ``threat_norm``, ``attack_params``,
``shift_norm`` and ``strict`` filter the rows; left as ``None`` a field may take only one value
in the selected rows (or, for faceted figures, one panel is drawn per value), otherwise a
``ValueError`` lists the values to choose from. ``eps`` and ``tolerance`` match stored values
within a relative tolerance of 1e-5 (so ``0.1`` finds the float32-rounded ``0.10000000149``).

Curves. A figure draws one line (or panel) per model, and the rows of that line are one RA/RR
curve in the sense of :func:`rrjax.records.curve_key`: rows of the same model from another
checkpoint, seed or sample count are refused, never joined into one line.

Colours. :func:`model_styles` assigns colours and markers in sorted-name order over *all*
models in the records, so a model keeps its colour when others are filtered out and across
every figure of one sweep.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from rrjax import records as R
from rrjax._validation import as_grid
from rrjax.plots.style import MARKERS, OKABE_ITO, norm_name

__all__ = [
    "EPS_RTOL", "EPS_ATOL", "CONTEXT_FIELDS", "ATTACK_FIELDS", "as_rows", "only_cells", "select",
    "select_attacks", "field_key", "distinct", "unique_floats", "close", "require_single", "check_unique", "attack_key",
    "attack_labels", "attack_title", "by_model", "curves", "ra_points", "model_styles", "styles_for",
    "cells_root",
]

EPS_RTOL, EPS_ATOL = 1e-5, 1e-8
CONTEXT_FIELDS = ("dataset", "split", "shift_norm", "strict")
ATTACK_FIELDS = ("attack", "threat_norm", "attack_params")


# ------------------------------------------------------------------------------- rows

def only_cells(rows: list[dict], cells: Collection[str] | None) -> list[dict]:
    """The rows of the given cell ids (all rows when ``cells`` is None)."""
    if cells is None:
        return rows
    keep = set(cells)
    rows = [r for r in rows if r["cell"] in keep]
    if not rows:
        raise ValueError(f"the records hold none of the {len(keep)} requested cells")
    return rows


def as_rows(records: Any) -> list[dict]:
    """Record rows from rows or a path (:func:`rrjax.records.load_records`), checked non-empty and complete."""
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


def cells_root(path: str | os.PathLike) -> pathlib.Path:
    """The sweep directory of a records path, which must hold the per-sample ``cells/``."""
    p = pathlib.Path(path)
    root = p if p.is_dir() else p.parent
    if not (root / "cells").is_dir():
        raise ValueError(f"{str(path)!r} has no cells/ directory next to its records; per-sample histograms need "
                         "the sweep directory itself (records.jsonl with its cells/)")
    return root


# ------------------------------------------------------------------------------- values

def field_key(field: str, value: Any) -> Any:
    """A hashable, comparable form of a field's value (``attack_params`` as canonical JSON)."""
    return R.canonical_json(value) if field == "attack_params" else value


def _show(field: str, value: Any) -> str:
    if field == "attack_params":
        return R.canonical_json(value)
    if field in ("eps", "tolerance"):
        return f"{value:.6g}"
    return repr(value)


def distinct(rows: Sequence[Mapping], field: str) -> list:
    """The distinct values of ``field`` in ``rows``, sorted (dict values compared as canonical JSON)."""
    seen: dict[Any, Any] = {}
    for r in rows:
        seen.setdefault(field_key(field, r[field]), r[field])
    return [seen[k] for k in sorted(seen, key=lambda k: (str(type(k)), k))]


def unique_floats(values: Iterable[float]) -> list[float]:
    """Sorted values with those equal within rtol 1e-5 merged (the first of each run kept)."""
    out: list[float] = []
    for v in sorted(float(x) for x in values):
        if not out or not math.isclose(v, out[-1], rel_tol=EPS_RTOL, abs_tol=EPS_ATOL):
            out.append(v)
    return out


def close(a: float, b: float) -> bool:
    """Whether two ε (or tolerance) values match within rtol 1e-5."""
    return math.isclose(float(a), float(b), rel_tol=EPS_RTOL, abs_tol=EPS_ATOL)


def _context(chosen: Sequence[str]) -> str:
    return f" with {', '.join(chosen)}" if chosen else ""


# ------------------------------------------------------------------------------- selection

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
    rows = as_rows(records)
    chosen: list[str] = []
    for field, want in (("dataset", dataset), ("split", split), ("attack", attack), ("threat_norm", threat_norm),
                        ("shift_norm", shift_norm), ("strict", strict), ("attack_params", attack_params)):
        if want is not None:
            rows = _filter_field(rows, field, want, chosen)
            chosen.append(f"{field}={want!r}")
    if models is not None:
        names = [models] if isinstance(models, str) else list(models)
        rows = _keep_named(rows, "model", names, _context(chosen))
        chosen.append(f"models={names!r}")
    for field, want in (("eps", eps), ("tolerance", tolerance)):
        if want is not None:
            rows = _filter_float(rows, field, want, chosen)
            chosen.append(f"{field}={want!r}")
    return rows


def _filter_field(rows: list[dict], field: str, want: Any, chosen: Sequence[str]) -> list[dict]:
    if field == "attack_params":
        if not isinstance(want, Mapping):
            raise ValueError(f"attack_params={want!r} must be a dict of hyperparameters, e.g. {{'steps': 10}}")
        kept = [r for r in rows if all(k in r[field] and r[field][k] == v for k, v in want.items())]
    else:
        kept = [r for r in rows if r[field] == want]
    if not kept:
        avail = ", ".join(_show(field, v) for v in distinct(rows, field))
        raise ValueError(f"{field}={want!r} matches no records{_context(chosen)}; available: {avail}")
    return kept


def _keep_named(rows: list[dict], field: str, names: list[str], context: str = "") -> list[dict]:
    """The rows whose ``field`` (``model``/``attack``) is one of ``names``; a name without rows
    raises ``ValueError`` listing the available ones."""
    plural = f"{field}s"
    if not names:
        raise ValueError(f"{plural} is empty; expected one or more {field} names (or None for all)")
    avail = distinct(rows, field)
    unknown = [m for m in names if m not in avail]
    if unknown:
        raise ValueError(f"{plural}={names!r}: no records for {', '.join(map(repr, unknown))}{context}; "
                         f"available {plural}: {', '.join(map(repr, avail))}")
    return [r for r in rows if r[field] in names]


def _filter_float(rows: list[dict], field: str, want: Any, chosen: Sequence[str]) -> list[dict]:
    as_grid(want, name=field)  # shape, finiteness and sign; as_grid rounds to float32, so
    # matching below uses the caller's own float64 numbers.
    values = np.atleast_1d(np.asarray(want, dtype=np.float64))
    avail = unique_floats(r[field] for r in rows)
    missing = [v for v in values if not any(close(v, a) for a in avail)]
    if missing:
        raise ValueError(f"{field}={', '.join(f'{v:g}' for v in missing)} is not in the records{_context(chosen)}; "
                         f"available {field} values: {', '.join(f'{a:.6g}' for a in avail)}")
    return [r for r in rows if any(close(r[field], v) for v in values)]


def select_attacks(rows: Any, attacks: str | Sequence[str] | None, **filters: Any) -> list[dict]:
    """:func:`select` with ``filters``, then only the rows of the named attacks (all when None)."""
    if attacks is None:
        return select(rows, **filters)
    names = [attacks] if isinstance(attacks, str) else list(attacks)
    return _keep_named(select(rows, **filters), "attack", names)


def require_single(rows: Sequence[Mapping], fields: Sequence[str], what: str) -> dict[str, Any]:
    """``{field: its one value}``; raises naming the values when a field holds several."""
    out = {}
    for field in fields:
        values = distinct(rows, field)
        if len(values) > 1:
            shown = ", ".join(_show(field, v) for v in values)
            hint = " (a subset of the hyperparameters is enough)" if field == "attack_params" else ""
            raise ValueError(f"{what} needs one {field}, but the selected records hold {len(values)}: {shown}; "
                             f"pass {field}=... to choose one{hint}")
        out[field] = values[0]
    return out


def check_unique(rows: Sequence[Mapping], fields: Sequence[str]) -> None:
    """Raises when two rows agree on ``fields`` (one figure position would hold two values)."""
    seen: dict[tuple, Mapping] = {}
    for r in rows:
        k = tuple(field_key(f, r[f]) for f in fields)
        if k in seen:
            other = seen[k]
            differ = [f for f in R.RECORD_FIELDS if f not in fields and other[f] != r[f]]
            raise ValueError(f"the records hold two rows for {dict(zip(fields, k))} that differ in {differ}; "
                             "filter them (e.g. plot one sweep directory at a time)")
        seen[k] = r


# ------------------------------------------------------------------------------- attack variants

def attack_key(row: Mapping) -> tuple:
    """The attack variant of a row: ``(attack, threat_norm, canonical JSON of its params)``."""
    return row["attack"], row["threat_norm"], R.canonical_json(row["attack_params"])


def attack_labels(rows: Sequence[Mapping]) -> dict[tuple, str]:
    """Short labels for each (attack, threat norm, params) variant; params only where needed."""
    keys = sorted({attack_key(r) for r in rows})
    labels = {}
    for key in keys:
        attack, norm, params = key
        label = f"{attack} ({norm_name(norm)})"
        same = [k for k in keys if k[:2] == key[:2]]
        if len(same) > 1:
            mine = json.loads(params)
            group = [json.loads(k[2]) for k in same]
            differing = [p for p in sorted(set().union(*group))
                         if len({R.canonical_json(g.get(p)) for g in group}) > 1]
            label += " " + ",".join(f"{p}={mine.get(p)}" for p in differing)
        labels[key] = label
    return labels


def attack_title(all_rows: Sequence[Mapping], rows: Sequence[Mapping]) -> str:
    """The attack label of ``rows`` (one variant), naming hyperparameters if the records need them."""
    ds = rows[0]["dataset"]
    return attack_labels([r for r in all_rows if r["dataset"] == ds])[attack_key(rows[0])]


# ------------------------------------------------------------------------------- curves

def by_model(rows: Sequence[Mapping]) -> dict[str, list[dict]]:
    """``{model: its rows sorted by (ε, tolerance)}``, models in sorted order."""
    out: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["model"], r["eps"], r["tolerance"])):
        out.setdefault(r["model"], []).append(r)
    return out


def curves(rows: Sequence[Mapping]) -> dict[str, list[dict]]:
    """:func:`by_model`, checking that each model's rows form one curve (:func:`rrjax.records.curve_key`).

    Raises:
      ValueError: a model's rows belong to several curves (another checkpoint, seed or sample
        count), which one line per model would silently join.
    """
    groups = by_model(rows)
    for model, mrows in groups.items():
        keys = {R.curve_key(r) for r in mrows}
        if len(keys) > 1:
            differ = [f for f in R.CurveKey._fields if len({getattr(k, f) for k in keys}) > 1]
            raise ValueError(f"the records hold {len(keys)} curves of model {model!r} that differ in {differ} "
                             "(rrjax.records.curve_key); filter them (e.g. plot one sweep directory at a time)")
    return groups


def ra_points(rows: Sequence[Mapping]) -> list[tuple[float, float, float, float]]:
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
        names = {r["model"] for r in as_rows(items)}
    else:
        names = set(items)
    return {m: (OKABE_ITO[i % len(OKABE_ITO)], MARKERS[(i + i // len(OKABE_ITO)) % len(MARKERS)])
            for i, m in enumerate(sorted(names))}


def styles_for(rows_all: Sequence[Mapping], styles: Mapping[str, tuple[str, str]] | None,
               models: Iterable[str]) -> dict[str, tuple[str, str]]:
    """``styles`` (default :func:`model_styles` of ``rows_all``), checked to cover ``models``."""
    styles = dict(model_styles(rows_all) if styles is None else styles)
    missing = [m for m in models if m not in styles]
    if missing:
        raise ValueError(f"styles has no entry for model(s) {missing}; pass model_styles(records) or a dict "
                         "{model: (colour, marker)} covering every plotted model")
    return styles
