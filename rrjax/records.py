"""Sweep records on disk: one atomic file pair per finished cell, tidy tables rebuilt from them.

Layout of a sweep directory::

    cells/<cell>.npz     per-sample arrays of one (model, dataset, attack, ε) cell
    cells/<cell>.json    the cell's metadata and its record rows (one per tolerance); written
                         last, it is the completeness marker and holds the npz's SHA-256
    records.jsonl        every row of every finished cell (rebuilt atomically after each cell)
    records.csv          the same rows as CSV
    records.manifest.json  row count and SHA-256 of both tables

A cell is complete iff its JSON exists, the JSON matches its own recorded hash
(``json_sha256``, over everything else in it), its definition (``CELL_FIELDS`` of ``meta``)
hashes to the cell id, and the npz matches the recorded hash; anything else (a temp file, an
npz without JSON, an edited value, a hash mismatch) is incomplete and is recomputed on resume.
Other per-sample files a record depends on (partial chunks, clean probabilities) carry the
first 16 hex digits of their SHA-256 in their name (:func:`write_hashed_npz`) and are
recomputed when they do not match it.
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
import zipfile
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
    "write_hashed_npz",
    "read_hashed_npz",
    "CELL_FIELDS",
    "CurveKey",
    "curve_key",
]

RECORD_FIELDS = (
    "model", "checkpoint", "checkpoint_sha256", "dataset", "split", "attack", "attack_params",
    "threat_norm", "eps", "tolerance", "n", "n_correct", "ra", "ra_lo", "ra_hi", "n_robust", "rr",
    "rr_lo", "rr_hi", "clean_accuracy", "shift_norm", "strict", "ci_method", "seed", "health", "cell",
)
SAMPLE_FIELDS = ("index", "y", "correct", "shift", "p_fake_clean", "p_fake_adv", "same_label")
# Optional per-sample arrays some cells carry: ensembles, which member gave the worst case;
# attacks with diagnostics (``AttackDef.diagnostics``), e.g. APGD's still_improving.
OPTIONAL_SAMPLE_FIELDS = ("ra_member", "rr_member", "still_improving")
# What a cell's id hashes: everything that defines its numbers.
CELL_FIELDS = ("model", "arch", "config", "checkpoint_sha256", "dataset", "split", "source", "samples", "attack",
               "attack_params", "eps", "seed", "shift_norm")
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


def _marker_bytes(cell: str, meta: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], npz_sha: str) -> bytes:
    body = {"cell": cell, "meta": dict(meta), "rows": [dict(r) for r in rows], "npz_sha256": npz_sha}
    body["json_sha256"] = _sha(canonical_json(body).encode())
    return (json.dumps(body, indent=1, allow_nan=False) + "\n").encode()


def write_cell(
    out_dir: str | os.PathLike, cell: str, meta: Mapping[str, Any], samples: Mapping[str, np.ndarray],
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Atomically stores one finished cell: per-sample npz first, then the JSON marker.

    Raises:
      ValueError: missing sample fields, rows that are not records, or a ``meta`` holding the
        cell definition (``CELL_FIELDS``) that does not hash to ``cell``.
    """
    missing = [f for f in SAMPLE_FIELDS if f not in samples]
    if missing:
        raise ValueError(f"samples lack fields {missing}; expected {SAMPLE_FIELDS}")
    for row in rows:
        extra = set(row) - set(RECORD_FIELDS)
        lacking = set(RECORD_FIELDS) - set(row)
        if extra or lacking:
            raise ValueError(f"record row fields differ from RECORD_FIELDS: extra {sorted(extra)}, missing {sorted(lacking)}")
    if set(CELL_FIELDS) <= set(meta) and cell_id({k: meta[k] for k in CELL_FIELDS}) != cell:
        raise ValueError(f"cell {cell}: its definition hashes to {cell_id({k: meta[k] for k in CELL_FIELDS})}")
    cells = pathlib.Path(out_dir) / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fields = SAMPLE_FIELDS + tuple(f for f in OPTIONAL_SAMPLE_FIELDS if f in samples)
    np.savez(buf, **{k: np.asarray(samples[k]) for k in fields})
    data = buf.getvalue()
    atomic_write_bytes(cells / f"{cell}.npz", data)
    atomic_write_bytes(cells / f"{cell}.json", _marker_bytes(cell, meta, rows, _sha(data)))


def rewrite_rows(out_dir: str | os.PathLike, cell: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Replaces a finished cell's rows (e.g. new tolerances or health flags) atomically.

    Only the JSON marker is rewritten (with its new hash); the per-sample npz and its recorded
    hash are unchanged, so an interruption leaves either the old or the new rows, never a cell
    that looks corrupt.
    """
    info = read_cell(out_dir, cell, samples=False)
    if info is None:
        raise ValueError(f"cell {cell!r} is not finished in {str(out_dir)!r}")
    marker = pathlib.Path(out_dir) / "cells" / f"{cell}.json"
    atomic_write_bytes(marker, _marker_bytes(cell, info["meta"], rows, info["npz_sha256"]))


def _corrupt(cell: str, what: str) -> ValueError:
    return ValueError(f"cell {cell} is corrupt: {what}; delete cells/{cell}.json and cells/{cell}.npz and rerun the sweep "
                      "command to recompute it (a sweep does this by itself for its own cells)")


def _check_marker(cell: str, info: Any) -> None:
    if not isinstance(info, dict) or not {"cell", "meta", "rows", "npz_sha256"} <= set(info):
        raise _corrupt(cell, "its JSON marker lacks cell/meta/rows/npz_sha256")
    want = info.get("json_sha256")
    if want is not None:  # markers written before the field existed carry none
        body = {k: v for k, v in info.items() if k != "json_sha256"}
        if _sha(canonical_json(body).encode()) != want:
            raise _corrupt(cell, "its JSON marker was edited after it was written (json_sha256 mismatch)")
    meta = info["meta"]
    if info["cell"] != cell or (isinstance(meta, dict) and set(CELL_FIELDS) <= set(meta)
                                and cell_id({k: meta[k] for k in CELL_FIELDS}) != cell):
        raise _corrupt(cell, "its definition (meta) no longer hashes to its id: a value in it was edited")


def read_cell(out_dir: str | os.PathLike, cell: str, *, samples: bool = True) -> dict | None:
    """Returns a finished cell (``meta``, ``rows`` and, if asked, ``samples``) or None if incomplete.

    Every file is verified: the JSON against its own hash and its definition against the cell
    id, the npz against the hash the JSON records.

    Raises:
      ValueError: the cell's files exist but are corrupt or edited; the message says to delete
        them so the sweep recomputes the cell.
    """
    cells = pathlib.Path(out_dir) / "cells"
    marker, npz = cells / f"{cell}.json", cells / f"{cell}.npz"
    if not marker.exists():
        return None
    try:
        info = json.loads(marker.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise _corrupt(cell, f"{marker.name} is not valid JSON ({e})") from None
    _check_marker(cell, info)
    if not npz.exists():
        raise _corrupt(cell, f"{npz.name} is missing although {marker.name} says the cell finished")
    if samples:
        data = npz.read_bytes()
        if _sha(data) != info["npz_sha256"]:
            raise _corrupt(cell, f"{npz.name} does not match its recorded SHA-256 (truncated or modified)")
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            info["samples"] = {k: z[k] for k in z.files}
    return info


def write_hashed_npz(directory: str | os.PathLike, stem: str, arrays: Mapping[str, np.ndarray]) -> pathlib.Path:
    """Writes ``<directory>/<stem>.<sha16>.npz`` atomically, the name holding its content's hash."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    data = buf.getvalue()
    path = pathlib.Path(directory) / f"{stem}.{_sha(data)[:16]}.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return path


def read_hashed_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a file written by :func:`write_hashed_npz`, verifying its content against its name.

    Raises:
      ValueError: the name holds no hash, or the bytes do not match it (truncated, torn,
        edited), or the file is not a readable npz.
    """
    path = pathlib.Path(path)
    parts = path.name.split(".")
    if len(parts) < 3 or len(parts[-2]) != 16:
        raise ValueError(f"{path.name} has no content hash in its name (written by an older rrjax)")
    data = path.read_bytes()
    if _sha(data)[:16] != parts[-2]:
        raise ValueError(f"{path.name} does not match the SHA-256 in its name (truncated or modified)")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path.name} is not a readable npz ({type(e).__name__}: {e})") from None


def finished_cells(out_dir: str | os.PathLike) -> list[str]:
    """Ids of cells whose completeness marker exists (sorted)."""
    cells = pathlib.Path(out_dir) / "cells"
    if not cells.exists():
        return []
    return sorted(p.stem for p in cells.glob("*.json") if not p.name.startswith("."))


def _csv_value(field: str, v: Any) -> str:
    if v is None:
        return ""  # a ratio or interval of a cell without a single verdict (n = 0)
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
            out[f] = None if v == "" else float(v)
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
