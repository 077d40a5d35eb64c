"""Sweep records on disk: one atomic file pair per finished cell, tidy tables rebuilt from them.

Layout of a sweep directory::

    cells/<cell>.npz     per-sample arrays of one (model, dataset, attack, ε) cell
    cells/<cell>.json    the cell's metadata and its record rows (one per tolerance); written
                         last, it is the completeness marker and holds the npz's SHA-256
    records.jsonl        every row of every finished cell (rebuilt atomically after each cell)
    records.csv          the same rows as CSV
    records.manifest.json  row count and SHA-256 of both tables

A cell is complete iff its JSON exists and the npz matches the recorded hash; anything else
(a temp file, an npz without JSON, a hash mismatch) is incomplete and is recomputed on resume.
Tables are written to a temp name and renamed, so a reader never sees a partial table, and
:func:`load_records` verifies them against the manifest.

Record row fields (``RECORD_FIELDS``): ``model, checkpoint, checkpoint_sha256, dataset, split,
attack, attack_params, threat_norm, eps, tolerance, n, n_correct, ra, ra_lo, ra_hi, n_robust,
rr, rr_lo, rr_hi, clean_accuracy, shift_norm, strict, ci_method, seed, health, cell``.
``attack_params`` is a dict in JSONL and a JSON string in CSV; ``health`` is a ``;``-separated
list of attack-health flags (empty when none fired).

Per-sample arrays (``SAMPLE_FIELDS``): ``index`` (position in the split), ``y``, ``correct``
(under attack), ``shift`` (‖p(x') − p(x)‖ in the sweep's norm), ``p_fake_clean``,
``p_fake_adv``, ``same_label`` (prediction unchanged).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from rrjax._io import atomic_write_bytes

__all__ = [
    "RECORD_FIELDS",
    "SAMPLE_FIELDS",
    "cell_id",
    "write_cell",
    "rewrite_rows",
    "read_cell",
    "finished_cells",
    "rebuild_tables",
    "load_records",
    "load_samples",
    "atomic_write_bytes",
    "CurveKey",
    "curve_key",
]

RECORD_FIELDS = (
    "model", "checkpoint", "checkpoint_sha256", "dataset", "split", "attack", "attack_params",
    "threat_norm", "eps", "tolerance", "n", "n_correct", "ra", "ra_lo", "ra_hi", "n_robust", "rr",
    "rr_lo", "rr_hi", "clean_accuracy", "shift_norm", "strict", "ci_method", "seed", "health", "cell",
)
SAMPLE_FIELDS = ("index", "y", "correct", "shift", "p_fake_clean", "p_fake_adv", "same_label")
_INT_FIELDS = {"n", "n_correct", "n_robust", "seed"}
_FLOAT_FIELDS = {"eps", "tolerance", "ra", "ra_lo", "ra_hi", "rr", "rr_lo", "rr_hi", "clean_accuracy"}


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def cell_id(definition: Mapping[str, Any]) -> str:
    """A stable id for a cell from everything that defines its numbers (hash of canonical JSON)."""
    return hashlib.sha256(canonical_json(dict(definition)).encode()).hexdigest()[:20]


class CurveKey(NamedTuple):
    """What makes one RA/RR curve over ε: the rows (or cells) that differ only in ε and tolerance.

    The one definition shared by the sweep's health checks and summary, the report and the
    figures. ``n`` keeps runs on different sample sets apart when they share a directory.
    """

    model: str
    checkpoint_sha256: str
    dataset: str
    split: str
    attack: str
    params: str  # canonical JSON of the resolved hyperparameters
    seed: int
    shift_norm: str
    n: int


def curve_key(row: Mapping[str, Any]) -> CurveKey:
    """The :class:`CurveKey` of a record row (or of a cell's metadata plus ``n``)."""
    return CurveKey(row["model"], row["checkpoint_sha256"], row["dataset"], row["split"], row["attack"],
                    canonical_json(row["attack_params"]), row["seed"], row["shift_norm"], row["n"])


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_cell(
    out_dir: str | os.PathLike, cell: str, meta: Mapping[str, Any], samples: Mapping[str, np.ndarray],
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Atomically stores one finished cell: per-sample npz first, then the JSON marker."""
    missing = [f for f in SAMPLE_FIELDS if f not in samples]
    if missing:
        raise ValueError(f"samples lack fields {missing}; expected {SAMPLE_FIELDS}")
    for row in rows:
        extra = set(row) - set(RECORD_FIELDS)
        lacking = set(RECORD_FIELDS) - set(row)
        if extra or lacking:
            raise ValueError(f"record row fields differ from RECORD_FIELDS: extra {sorted(extra)}, missing {sorted(lacking)}")
    cells = pathlib.Path(out_dir) / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(samples[k]) for k in SAMPLE_FIELDS})
    data = buf.getvalue()
    atomic_write_bytes(cells / f"{cell}.npz", data)
    marker = {"cell": cell, "meta": dict(meta), "rows": [dict(r) for r in rows], "npz_sha256": _sha(data)}
    atomic_write_bytes(cells / f"{cell}.json", (json.dumps(marker, indent=1, allow_nan=False) + "\n").encode())


def rewrite_rows(out_dir: str | os.PathLike, cell: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replaces a finished cell's rows (e.g. new tolerances or health flags) atomically.

    Only the JSON marker is rewritten; the per-sample npz and its recorded hash are unchanged,
    so an interruption leaves either the old or the new rows, never a cell that looks corrupt.
    """
    marker = pathlib.Path(out_dir) / "cells" / f"{cell}.json"
    info = json.loads(marker.read_text())
    info["rows"] = [dict(r) for r in rows]
    atomic_write_bytes(marker, (json.dumps(info, indent=1, allow_nan=False) + "\n").encode())


def read_cell(out_dir: str | os.PathLike, cell: str, *, samples: bool = True) -> dict | None:
    """Returns a finished cell (``meta``, ``rows`` and, if asked, ``samples``) or None if incomplete.

    Raises:
      ValueError: the cell's files exist but are corrupt (bad JSON or npz hash mismatch); the
        message says to delete them so the sweep recomputes the cell.
    """
    cells = pathlib.Path(out_dir) / "cells"
    marker, npz = cells / f"{cell}.json", cells / f"{cell}.npz"
    if not marker.exists():
        return None
    try:
        info = json.loads(marker.read_text())
        want = info["npz_sha256"]
    except (json.JSONDecodeError, KeyError, UnicodeDecodeError) as e:
        raise ValueError(f"cell file {marker} is corrupt ({e}); delete it and {npz.name} and rerun the sweep "
                         "command to recompute the cell") from None
    if not npz.exists():
        raise ValueError(f"cell {cell}: {npz} is missing although {marker.name} says the cell finished; delete "
                         f"{marker.name} and rerun the sweep command")
    if samples:
        data = npz.read_bytes()
        if _sha(data) != want:
            raise ValueError(f"cell {cell}: {npz} does not match its recorded SHA-256 (truncated or modified); "
                             f"delete {npz.name} and {marker.name} and rerun the sweep command to recompute it")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            info["samples"] = {k: z[k] for k in z.files}
    return info


def finished_cells(out_dir: str | os.PathLike) -> list[str]:
    """Ids of cells whose completeness marker exists (sorted)."""
    cells = pathlib.Path(out_dir) / "cells"
    if not cells.exists():
        return []
    return sorted(p.stem for p in cells.glob("*.json") if not p.name.startswith("."))


def _csv_value(field: str, v: Any) -> str:
    if field == "attack_params":
        return canonical_json(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def rebuild_tables(out_dir: str | os.PathLike, *, order: Iterable[str] | None = None) -> int:
    """Rewrites ``records.jsonl``/``records.csv`` and the manifest from all finished cells.

    Rows are sorted by (model, dataset, split, attack, attack_params, eps, tolerance), so the
    tables of an interrupted-and-resumed sweep are byte-identical to an uninterrupted one.
    Returns the number of rows.
    """
    out = pathlib.Path(out_dir)
    rows = []
    for cell in (finished_cells(out) if order is None else order):
        info = read_cell(out, cell, samples=False)
        if info is not None:
            rows.extend(info["rows"])
    rows.sort(key=lambda r: (r["model"], r["dataset"], r["split"], r["attack"], canonical_json(r["attack_params"]),
                             r["eps"], r["tolerance"]))
    jsonl = "".join(json.dumps({f: r[f] for f in RECORD_FIELDS}, allow_nan=False) + "\n" for r in rows).encode()
    sio = io.StringIO()
    w = csv.writer(sio, lineterminator="\n")
    w.writerow(RECORD_FIELDS)
    for r in rows:
        w.writerow([_csv_value(f, r[f]) for f in RECORD_FIELDS])
    csv_bytes = sio.getvalue().encode()
    atomic_write_bytes(out / "records.jsonl", jsonl)
    atomic_write_bytes(out / "records.csv", csv_bytes)
    manifest = {"rows": len(rows), "records.jsonl": _sha(jsonl), "records.csv": _sha(csv_bytes)}
    atomic_write_bytes(out / "records.manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return len(rows)


def _parse_csv_row(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in RECORD_FIELDS:
        v = row[f]
        if f == "attack_params":
            out[f] = json.loads(v)
        elif f in _INT_FIELDS:
            out[f] = int(v)
        elif f in _FLOAT_FIELDS:
            out[f] = float(v)
        elif f == "strict":
            out[f] = v == "true"
        else:
            out[f] = v
    return out


def load_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Reads a sweep's records: a sweep directory, ``records.jsonl`` or ``records.csv``.

    A table inside a sweep directory is verified against ``records.manifest.json``; a table
    that does not match (truncated, edited, half-copied) raises ``ValueError`` saying how to
    rebuild it from the cell files.
    """
    p = pathlib.Path(path)
    if p.is_dir():
        p = p / "records.jsonl"
    if not p.exists():
        raise ValueError(f"no records at {str(path)!r}: expected a sweep directory containing records.jsonl, "
                         "or a records.jsonl / records.csv file")
    if p.suffix not in (".jsonl", ".csv"):
        raise ValueError(f"{str(p)!r} is not a records file; expected records.jsonl or records.csv")
    data = p.read_bytes()
    manifest = p.parent / "records.manifest.json"
    if manifest.exists():
        try:
            want = json.loads(manifest.read_text()).get(p.name)
        except json.JSONDecodeError:
            want = None
        if want is None or want != _sha(data):
            raise ValueError(
                f"{p} does not match {manifest.name} (truncated, edited or from another run); rebuild it from "
                f"the cell files with rrjax.records.rebuild_tables({str(p.parent)!r}) or rerun the sweep command"
            )
    text = data.decode()
    try:
        if p.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = [_parse_csv_row(r) for r in csv.DictReader(io.StringIO(text))]
    except (json.JSONDecodeError, KeyError, ValueError) as e:
        raise ValueError(f"{p} is not a valid records file ({type(e).__name__}: {e})") from None
    for i, r in enumerate(rows):
        missing = [f for f in RECORD_FIELDS if f not in r]
        if missing:
            raise ValueError(f"{p} row {i} lacks fields {missing}; expected the fields of rrjax.records.RECORD_FIELDS")
    return rows


def load_samples(out_dir: str | os.PathLike, cell: str) -> dict[str, np.ndarray]:
    """Per-sample arrays of one finished cell (see ``SAMPLE_FIELDS``)."""
    info = read_cell(out_dir, cell)
    if info is None:
        raise ValueError(f"cell {cell!r} is not finished in {str(out_dir)!r}; run or resume the sweep first")
    return info["samples"]
