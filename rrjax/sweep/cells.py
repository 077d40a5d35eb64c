"""Cells: the unit of work and of resumption. A cell is (model, data, attack + hyperparameters,
ε, seed, shift norm); its id hashes that definition, so a changed setting is a new cell and an
unchanged one is never recomputed. This module defines cells, turns their per-sample arrays into
record rows (through ``rrjax.metrics.summarise``), and keeps the partial results of unfinished
cells (``partial/<cell>/<first>-<last>.npz``) that a resumed sweep reuses.
"""

from __future__ import annotations

import pathlib
import shutil
from collections.abc import Mapping
from typing import Any

import numpy as np
from absl import logging

from rrjax import metrics
from rrjax import records as R
from rrjax.sweep.data import SweepData
from rrjax.sweep.spec import AttackSpec, ModelEntry, SweepSettings

__all__ = ["cell_def", "cell_id", "clean_key", "clean_id", "clean_correct", "valid", "rows", "finished",
           "read_partials", "write_partial", "read_clean", "write_clean", "complete", "eps_grid", "sample_result"]


def _model_and_data(m: ModelEntry, data: SweepData) -> dict:
    return {"model": m.label, "arch": m.detector.name, "config": dict(m.detector.config),
            "checkpoint_sha256": m.checkpoint_sha256, "dataset": data.dataset, "split": data.split,
            "source": data.source, "samples": R.cell_id({"index": [int(i) for i in data.index]})}


def cell_def(m: ModelEntry, data: SweepData, attack: AttackSpec, eps: float, s: SweepSettings) -> dict:
    """Everything that defines a cell's numbers (hashed into its id)."""
    return {
        **_model_and_data(m, data), "attack": attack.name, "attack_params": attack.kwargs,
        "eps": float(np.float32(eps)), "seed": s.seed, "shift_norm": s.shift_norm,
    }


def cell_id(m: ModelEntry, data: SweepData, attack: AttackSpec, eps: float, s: SweepSettings) -> str:
    return R.cell_id(cell_def(m, data, attack, eps, s))


_CLEAN_FIELDS = ("model", "arch", "config", "checkpoint_sha256", "dataset", "split", "source", "samples")


def clean_key(cell_meta: Mapping[str, Any]) -> str:
    """Id of the clean pass a cell uses (``clean/<id>.npz``): its model and sample set only."""
    return R.cell_id({k: cell_meta[k] for k in _CLEAN_FIELDS})


def clean_id(m: ModelEntry, data: SweepData) -> str:
    """:func:`clean_key` of every cell of ``m`` on ``data``."""
    return clean_key(_model_and_data(m, data))


def eps_grid(attack: AttackSpec, settings: SweepSettings) -> np.ndarray:
    """The attack's own ε grid, else the sweep's."""
    return np.asarray(settings.eps if attack.eps is None else attack.eps, np.float32)


def clean_correct(samples: Mapping[str, np.ndarray]) -> np.ndarray:
    """bool[N]: clean predictions (argmax, ties to real, i.e. fake iff p_fake > 0.5) are right
    (False where the clean output is not finite)."""
    return ((samples["p_fake_clean"] > 0.5).astype(int) == samples["y"]) & np.isfinite(samples["p_fake_clean"])


def valid(samples: Mapping[str, np.ndarray]) -> np.ndarray:
    """bool[N]: the sample has a verdict (finite clean and attacked outputs)."""
    return np.isfinite(samples["p_fake_adv"]) & np.isfinite(samples["p_fake_clean"])


def _num(v: float) -> float | None:
    """A ratio for the records; None where there was nothing to estimate (n = 0)."""
    return None if np.isnan(v) else float(v)


def sample_result(index: np.ndarray, y: np.ndarray, p_clean: np.ndarray, p_adv: np.ndarray,
                  o: metrics.Outcomes, extra: Mapping[str, np.ndarray] | None = None) -> list[dict[str, np.ndarray]]:
    """Per-sample arrays (``rrjax.records.SAMPLE_FIELDS``, plus ``extra[E,N]`` diagnostics such
    as ``still_improving``) of each ε from host outcomes."""
    return [
        {"index": index, "y": y, "correct": o.correct[k], "shift": o.shift[k],
         "p_fake_clean": p_clean[:, 1], "p_fake_adv": p_adv[k][:, 1], "same_label": o.same_label[k],
         **{name: v[k] for name, v in (extra or {}).items()}}
        for k in range(p_adv.shape[0])
    ]


def rows(meta: Mapping[str, Any], samples: Mapping[str, np.ndarray], s: SweepSettings, health: str = "") -> list[dict]:
    """The record rows of one finished cell, one per tolerance (``rrjax.records.RECORD_FIELDS``)."""
    ok = valid(samples)  # a sample without a verdict (NaN/inf output) is in no count and not in n
    tol = np.asarray(s.tolerance, np.float32)
    robust = metrics.robust_outcomes(samples["shift"], tol, same_label=samples["same_label"] if s.strict else None,
                                     valid=ok)
    n = int(ok.sum())
    summary = metrics.summarise(np.sum(samples["correct"] & ok)[None], robust.sum(-1)[None], n, ci_method=s.ci_method)
    clean_ok = np.isfinite(samples["p_fake_clean"])
    base = {
        "model": meta["model"], "checkpoint": meta["checkpoint"], "checkpoint_sha256": meta["checkpoint_sha256"],
        "dataset": meta["dataset"], "split": meta["split"], "attack": meta["attack"],
        "attack_params": meta["attack_params"], "threat_norm": meta["threat_norm"], "eps": meta["eps"],
        "n": n, "n_correct": int(summary.n_correct[0]), "ra": _num(summary.ra[0]), "ra_lo": _num(summary.ra_ci[0, 0]),
        "ra_hi": _num(summary.ra_ci[0, 1]),
        "clean_accuracy": _num(clean_correct(samples).sum() / clean_ok.sum() if clean_ok.any() else np.nan),
        "shift_norm": meta["shift_norm"], "strict": bool(s.strict), "ci_method": s.ci_method, "seed": meta["seed"],
        "health": health, "cell": meta["cell"],
    }
    return [
        {**base, "tolerance": float(b), "n_robust": int(k), "rr": _num(r), "rr_lo": _num(lo), "rr_hi": _num(hi)}
        for b, k, r, (lo, hi) in zip(tol, summary.n_robust[0], summary.rr[0], summary.rr_ci[0])
    ]


def finished(out: pathlib.Path, cell: str) -> bool:
    """Whether a cell is finished and intact; a corrupt cell is reported, removed and redone."""
    try:
        return R.read_cell(out, cell) is not None
    except ValueError as e:
        logging.warning("%s -- recomputing the cell", e)
        for suffix in (".json", ".npz"):
            (out / "cells" / f"{cell}{suffix}").unlink(missing_ok=True)
        return False


def _partial_dir(out: pathlib.Path, cell: str) -> pathlib.Path:
    return out / "partial" / cell


def read_partials(out: pathlib.Path, cell: str) -> list[dict[str, np.ndarray]]:
    """The saved chunks of an unfinished cell, each verified against the hash in its name; a
    torn, edited or unreadable chunk is logged, removed and its samples are recomputed."""
    parts = []
    d = _partial_dir(out, cell)
    for p in sorted(d.glob("*.npz")) if d.exists() else []:
        try:
            parts.append(R.read_hashed_npz(p))
        except (OSError, ValueError) as e:
            logging.warning("ignoring partial result %s (%s); its samples are recomputed", p, e)
            p.unlink(missing_ok=True)
    return parts


def write_partial(out: pathlib.Path, cell: str, part: Mapping[str, np.ndarray]) -> None:
    """Saves one chunk of a cell atomically (named by its first and last sample position and
    its content hash)."""
    R.write_hashed_npz(_partial_dir(out, cell), f"{int(part['index'][0]):09d}-{int(part['index'][-1]):09d}", part)


def read_clean(out: pathlib.Path, key: str, *, remove_bad: bool = True) -> dict[str, np.ndarray] | None:
    """The cached clean pass ``clean/<key>.<sha16>.npz``, verified; None when absent or when it
    does not verify (then logged, removed if ``remove_bad``, and recomputed by the caller)."""
    for p in sorted((out / "clean").glob(f"{key}.*.npz")):
        try:
            return R.read_hashed_npz(p)
        except (OSError, ValueError) as e:
            logging.warning("ignoring cached clean pass %s (%s); it is recomputed", p, e)
            if remove_bad:
                p.unlink(missing_ok=True)
    return None


def write_clean(out: pathlib.Path, key: str, result: Mapping[str, np.ndarray]) -> None:
    R.write_hashed_npz(out / "clean", key, result)


def complete(out: pathlib.Path, cell: str, meta: dict, data: SweepData, s: SweepSettings) -> None:
    """Merges a cell's chunks into its finished files and drops the chunks."""
    parts = read_partials(out, cell)
    fields = [k for k in R.SAMPLE_FIELDS + R.OPTIONAL_SAMPLE_FIELDS if parts and k in parts[0]]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in fields}
    order = np.argsort(merged["index"], kind="stable")
    merged = {k: v[order] for k, v in merged.items()}
    _, first = np.unique(merged["index"], return_index=True)  # a chunk saved twice counts once
    merged = {k: v[first] for k, v in merged.items()}
    if not np.array_equal(merged["index"], np.sort(np.asarray(data.index))):
        raise RuntimeError(f"cell {cell}: partial results do not cover the sample set; rerun the same sweep command")
    R.write_cell(out, cell, meta, merged, rows(meta, merged, s))
    shutil.rmtree(_partial_dir(out, cell), ignore_errors=True)
