"""Ensembles in a sweep: members run as ordinary cells, the ensemble's cells are their worst case.

An ensemble spec (``AttackSpec.members``) expands into its member specs, which the engine runs
like any attack (a member shared with a standalone attack of the same configuration is one cell,
computed once). Once every member cell of a model and ε is finished, the ensemble cell is built
from their per-sample arrays (``rrjax.attacks.ensemble.combine``: correct only if every member
leaves the sample correct, shift = the largest any member found), with the member that produced
each worst case (``ra_member``, ``rr_member``) and the member cell ids in its metadata.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rrjax import records as R
from rrjax.attacks.ensemble import combine
from rrjax.sweep import cells
from rrjax.sweep.data import SweepData
from rrjax.sweep.spec import AttackSpec, ModelEntry, SweepSettings

__all__ = ["expand", "build_cells", "member_shares", "masking_suspects"]


def expand(attacks: Sequence[AttackSpec]) -> list[AttackSpec]:
    """The single attacks to run: every non-ensemble spec and every ensemble's members, each once,
    in order of first appearance."""
    out: list[AttackSpec] = []
    for a in attacks:
        for spec in ([m for _, m in a.members] if a.members else [a]):
            if spec not in out:
                out.append(spec)
    return out


def _combined(member_infos: Sequence[dict]) -> dict[str, np.ndarray]:
    """The ensemble's per-sample arrays from its member cells (all on the same samples)."""
    ss = [i["samples"] for i in member_infos]
    index = ss[0]["index"]
    if any(not np.array_equal(s["index"], index) for s in ss):
        raise RuntimeError("ensemble members were computed on different samples; rerun the sweep command")
    worst = combine(*(np.stack([s[f] for s in ss]) for f in ("correct", "shift", "same_label")),
                    np.stack([cells.valid(s) for s in ss]))
    pick = np.maximum(worst["rr_member"], 0)
    p_adv = np.stack([s["p_fake_adv"] for s in ss])
    p_fake_adv = np.take_along_axis(p_adv, pick[None], 0)[0]
    # A sample without a verdict under some member has none for the ensemble: NaN marks it.
    return {"index": index, "y": ss[0]["y"], "correct": worst["correct"], "shift": worst["shift"],
            "p_fake_clean": ss[0]["p_fake_clean"], "p_fake_adv": np.where(worst["valid"], p_fake_adv, np.nan),
            "same_label": worst["same_label"], "ra_member": worst["ra_member"], "rr_member": worst["rr_member"]}


def build_cells(out: pathlib.Path, models: Sequence[ModelEntry], data: SweepData, attacks: Sequence[AttackSpec],
                settings: SweepSettings) -> int:
    """Writes every unfinished ensemble cell whose member cells are finished; returns how many."""
    written = 0
    for m in models:
        for a in (a for a in attacks if a.members):
            for e in cells.eps_grid(a, settings):
                meta = cells.cell_def(m, data, a, float(e), settings)
                cid = R.cell_id(meta)
                if cells.finished(out, cid):
                    continue
                ids = [cells.cell_id(m, data, spec, float(e), settings) for _, spec in a.members]
                infos = [R.read_cell(out, c) for c in ids]
                if any(i is None for i in infos):
                    continue
                full = {**meta, "cell": cid, "checkpoint": m.checkpoint, "threat_norm": a.threat_norm,
                        "members": [[label, c] for (label, _), c in zip(a.members, ids)]}
                samples = _combined(infos)
                R.write_cell(out, cid, full, samples, cells.rows(full, samples, settings))
                written += 1
    return written


def member_shares(infos: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Per ε, the share of each member among the worst cases: of the samples the ensemble broke
    (RA: the first member that broke it) and of the samples it moved (RR: the largest shift)."""
    labels = [label for label, _ in infos[0]["meta"]["members"]]
    ra, rr = [], []
    for info in infos:
        s = info["samples"]
        for share, who, among in ((ra, s["ra_member"], s["ra_member"] >= 0),
                                  (rr, s["rr_member"], (s["rr_member"] >= 0) & (s["shift"] > 0))):
            n = int(among.sum())
            share.append([float(np.sum(who[among] == k) / n) if n else None for k in range(len(labels))])
    return {"labels": labels, "ra": ra, "rr": rr}


def masking_suspects(info: Mapping[str, Any], member_infos: Mapping[str, Mapping[str, Any]],
                     gradient_free: Mapping[str, bool]) -> int:
    """Samples every gradient member leaves correct but a gradient-free member breaks (at this ε):
    the symptom of gradient masking (Carlini et al. 2019; AutoAttack's Square check)."""
    by_label = {label: member_infos[c]["samples"] for label, c in info["meta"]["members"] if c in member_infos}
    grad = [s["correct"] & cells.valid(s) for label, s in by_label.items() if not gradient_free.get(label, False)]
    free = [~s["correct"] & cells.valid(s) for label, s in by_label.items() if gradient_free.get(label, False)]
    if not grad or not free:
        return 0
    return int(np.sum(np.all(grad, axis=0) & np.any(free, axis=0)))
