"""Finalisation: attack-health flags, the summary and the paired model comparisons, from the
finished cells of a sweep directory alone (deterministic in the cells).

A *curve* is the set of cells that differ only in ε (``rrjax.records.curve_key``).
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from rrjax import metrics
from rrjax import records as R
from rrjax._io import atomic_write_json, atomic_write_text
from rrjax.attacks.registry import ATTACKS
from rrjax.sweep import cells as Cells
from rrjax.sweep import ensembles
from rrjax.sweep.spec import SweepSettings

__all__ = ["HEALTH_FLAGS", "finalise", "health"]

HEALTH_FLAGS = {
    "ra_increases_with_eps": "RA rises with ε beyond its 95% CI: the attack is not finding the optimum",
    "iterative_weaker_than_fgsm": "an iterative attack has higher RA than FGSM at the same ε (beyond CI)",
    "eps0_differs_from_clean": "RA at ε = 0 differs from clean accuracy: the attack changed unperturbed inputs",
    "gradient_masking": "more than 5% of samples have all-zero or non-finite input gradients",
    "no_success_at_max_eps": "not a single correctly classified sample was flipped at the largest ε",
    "gradient_masking_suspected": "an ensemble's gradient-free member broke samples that every gradient-based member "
                                  "left correct (more than max(2, 1% of n) at some ε): gradients mislead here",
    "attack_not_converged": "more than max(2, 5% of n) samples the attack left correctly classified still had a "
                            "rising loss at its last step (APGD): more steps could break them (an ensemble: any member)",
    "nonfinite_probabilities": "the detector returned NaN/inf for some inputs (clean or attacked): those samples "
                               "have no verdict and are left out of n (summary: 'left out')",
}


def _key(info: Mapping[str, Any]) -> R.CurveKey:
    return R.curve_key({**info["meta"], "n": len(info["samples"]["index"])})  # n: the sample set, not verdicts


def _curve_flags(infos: list[dict], dead_share: float | None) -> list[str]:
    """Flags that one curve (cells sorted by ε) raises on its own."""
    f = []
    eps = np.array([c["meta"]["eps"] for c in infos])
    ra = np.array([c["rows"][0]["ra"] for c in infos], dtype=float)  # None (n = 0) -> NaN: never flags
    hi = np.array([c["rows"][0]["ra_hi"] for c in infos], dtype=float)
    if any(ra[j] > hi[i] for i in range(len(ra)) for j in range(i + 1, len(ra))):
        f.append("ra_increases_with_eps")
    for c in infos:
        s = c["samples"]
        if c["meta"]["eps"] == 0.0 and int(s["correct"].sum()) != int(Cells.clean_correct(s).sum()):
            f.append("eps0_differs_from_clean")
    top = infos[int(np.argmax(eps))]
    s = top["samples"]
    ok = Cells.clean_correct(s)
    if top["meta"]["eps"] > 0 and ok.any() and not np.any(ok & ~s["correct"]):
        f.append("no_success_at_max_eps")
    if any(not (np.all(np.isfinite(c["samples"]["p_fake_adv"])) and np.all(np.isfinite(c["samples"]["p_fake_clean"])))
           for c in infos):
        f.append("nonfinite_probabilities")
    if dead_share is not None and dead_share > 0.05:
        f.append("gradient_masking")
    return f


def _weaker_than_single_step(curves: dict[R.CurveKey, list[dict]]) -> set[R.CurveKey]:
    """Iterative curves with RA above a single-step attack's upper CI bound at some shared ε
    (same model, data, seed, RR norm and threat norm)."""
    def role(key: R.CurveKey, field: str) -> bool:
        d = ATTACKS.get(key.attack)
        return bool(d is not None and getattr(d, field))

    out = set()
    for key, infos in curves.items():
        if not role(key, "iterative"):
            continue
        norm = infos[0]["meta"]["threat_norm"]
        for other, ref in curves.items():
            same = other._replace(attack=key.attack, params=key.params) == key
            if not same or not role(other, "single_step") or ref[0]["meta"]["threat_norm"] != norm:
                continue
            ref_eps = np.array([c["meta"]["eps"] for c in ref])
            for c in infos:
                j = np.flatnonzero(np.isclose(ref_eps, c["meta"]["eps"]))
                ra, hi = c["rows"][0]["ra"], ref[j[0]]["rows"][0]["ra_hi"] if len(j) else None
                if ra is not None and hi is not None and ra > hi:
                    out.add(key)
    return out


def _unconverged(info: Mapping[str, Any]) -> bool:
    s = info["samples"]
    if "still_improving" not in s:
        return False
    count = int(np.sum(s["still_improving"] & s["correct"] & Cells.valid(s)))
    return count > max(2, 0.05 * len(s["index"]))


def _not_converged(curves: dict[R.CurveKey, list[dict]]) -> set[R.CurveKey]:
    """Curves with a cell (or, for an ensemble, a member cell) whose attack had not converged."""
    by_id = {info["meta"].get("cell"): info for infos in curves.values() for info in infos}
    out = set()
    for key, infos in curves.items():
        for info in infos:
            members = [by_id[c] for _, c in info["meta"].get("members", []) if c in by_id]
            if _unconverged(info) or any(_unconverged(m) for m in members):
                out.add(key)
    return out


def _masking_suspected(curves: dict[R.CurveKey, list[dict]]) -> set[R.CurveKey]:
    """Ensemble curves whose gradient-free member breaks what every gradient member misses."""
    by_id = {info["meta"].get("cell"): info for infos in curves.values() for info in infos}
    out = set()
    for key, infos in curves.items():
        for info in infos:
            members = info["meta"].get("members")
            if not members:
                continue
            member_infos = {c: by_id[c] for _, c in members if c in by_id}
            free = {label: bool(getattr(ATTACKS.get(by_id[c]["meta"]["attack"]), "gradient_free", False))
                    for label, c in members if c in by_id}
            n = len(info["samples"]["index"])
            if ensembles.masking_suspects(info, member_infos, free) > max(2, 0.01 * n):
                out.add(key)
    return out


def health(curves: dict[R.CurveKey, list[dict]], dead: Mapping[R.CurveKey, float]) -> dict[R.CurveKey, list[str]]:
    """Attack-health flags (``HEALTH_FLAGS``) per curve from its finished cells (sorted by ε).

    Args:
      curves: curve key -> cell infos (``rrjax.records.read_cell``), each sorted by ε.
      dead: curve key -> share of samples with an all-zero or non-finite input gradient.
    """
    flags = {key: _curve_flags(infos, dead.get(key)) for key, infos in curves.items()}
    for key in _weaker_than_single_step(curves):
        flags[key].append("iterative_weaker_than_fgsm")
    for key in _masking_suspected(curves):
        flags[key].append("gradient_masking_suspected")
    for key in _not_converged(curves):
        flags[key].append("attack_not_converged")
    return {k: sorted(set(v)) for k, v in flags.items()}


def _dead_shares(out: pathlib.Path, curves: dict[R.CurveKey, list[dict]]) -> dict[R.CurveKey, float]:
    shares = {}
    for key, infos in curves.items():
        clean = Cells.read_clean(out, Cells.clean_key(infos[0]["meta"]))
        if clean is not None:
            shares[key] = float(np.mean(clean["dead_grad"]))
    return shares


def finalise(out_dir: str | os.PathLike, settings: SweepSettings | None = None) -> dict:
    """Health flags, summary and paired comparisons from the finished cells of a sweep.

    Rewrites each cell's rows with its curve's health flags (and, when ``settings`` is given,
    with that tolerance grid / strictness / CI method), rebuilds the tables, and writes
    ``summary.json``, ``summary.md`` and ``comparisons.jsonl``. Deterministic in the cells.
    """
    out = pathlib.Path(out_dir)
    curves: dict[R.CurveKey, list[dict]] = {}
    for c in R.finished_cells(out):
        if not Cells.finished(out, c):  # corrupt or edited: removed (its run recomputes it), never a row
            continue
        info = R.read_cell(out, c)
        curves.setdefault(_key(info), []).append(info)
    for infos in curves.values():
        infos.sort(key=lambda i: i["meta"]["eps"])
    dead = _dead_shares(out, curves)
    flags = health(curves, dead)
    for key, infos in curves.items():
        text = ";".join(flags.get(key, []))
        for info in infos:
            s = settings or _settings_from_rows(info["rows"])
            rows = Cells.rows(info["meta"], info["samples"], s, health=text)
            if rows != info["rows"]:
                R.rewrite_rows(out, info["meta"]["cell"], rows)
                info["rows"] = rows
    R.rebuild_tables(out)
    summary = _summary(curves, flags, dead)
    comparisons = _comparisons(curves)
    atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "summary.md", _summary_md(summary, comparisons))
    atomic_write_text(out / "comparisons.jsonl", "".join(json.dumps(c, allow_nan=False) + "\n" for c in comparisons))
    return summary


def _settings_from_rows(rows: list[dict]) -> SweepSettings:
    r = rows[0]
    return SweepSettings(eps=(r["eps"],), tolerance=tuple(x["tolerance"] for x in rows), shift_norm=r["shift_norm"],
                         strict=r["strict"], ci_method=r["ci_method"], seed=r["seed"])


def _summary(curves: dict, flags: dict, dead: dict) -> dict:
    out = []
    for key in sorted(curves):
        infos = curves[key]
        rows0 = infos[0]["rows"]
        out.append({
            "model": key.model, "dataset": key.dataset, "split": key.split, "attack": key.attack,
            "attack_params": json.loads(key.params), "seed": key.seed, "shift_norm": key.shift_norm,
            "n": key.n, "clean_accuracy": rows0[0]["clean_accuracy"],
            "eps": [i["meta"]["eps"] for i in infos],
            "ra": [i["rows"][0]["ra"] for i in infos],
            "ra_ci": [[i["rows"][0]["ra_lo"], i["rows"][0]["ra_hi"]] for i in infos],
            "tolerance": [r["tolerance"] for r in rows0],
            "rr": [[r["rr"] for r in i["rows"]] for i in infos],
            "median_shift": [float(np.median(i["samples"]["shift"][Cells.valid(i["samples"])]))
                             if Cells.valid(i["samples"]).any() else None for i in infos],
            "left_out": [int((~Cells.valid(i["samples"])).sum()) for i in infos],
            "dead_gradient_share": dead.get(key),
            "health": flags.get(key, []),
            **({"member_shares": ensembles.member_shares(infos)} if infos[0]["meta"].get("members") else {}),
        })
    return {"groups": out, "health_flags": HEALTH_FLAGS}


def _comparison(a: dict, b: dict) -> dict | None:
    """Exact McNemar (RA) and a paired bootstrap of the RR difference at every tolerance, on the
    samples both models give a verdict for (None when there are none)."""
    both = Cells.valid(a["samples"]) & Cells.valid(b["samples"])
    if not both.any():
        return None
    sa, sb = ({k: v[both] for k, v in info["samples"].items()} for info in (a, b))
    mc = metrics.mcnemar_exact(sa["correct"], sb["correct"])
    tol = np.array([r["tolerance"] for r in a["rows"]], np.float32)
    strict = a["rows"][0]["strict"]
    phi_a = metrics.robust_outcomes(sa["shift"], tol, same_label=sa["same_label"] if strict else None)
    phi_b = metrics.robust_outcomes(sb["shift"], tol, same_label=sb["same_label"] if strict else None)
    bs = metrics.paired_bootstrap(phi_a, phi_b, n_boot=2000, seed=0)
    return {
        "n": int(both.sum()), "ra_diff": float(mc.difference), "mcnemar_p": float(mc.p_value),
        "a_only": int(mc.a_only), "b_only": int(mc.b_only),
        "tolerance": [float(t) for t in tol], "rr_diff": [float(v) for v in bs.difference],
        "rr_diff_ci": [[float(lo), float(hi)] for lo, hi in bs.ci], "rr_diff_p": [float(v) for v in bs.p_value],
    }


def _comparisons(curves: dict) -> list[dict]:
    """Paired tests between every two models on the same (dataset, split, attack, params, ε, samples)."""
    by_cell: dict[tuple, dict[str, dict]] = {}
    for key, infos in curves.items():
        shared = (key.dataset, key.split, key.attack, key.params, key.seed, key.shift_norm)
        for info in infos:
            by_cell.setdefault(shared + (info["meta"]["eps"], info["meta"]["samples"]), {})[key.model] = info
    out = []
    for ck in sorted(by_cell):
        models = sorted(by_cell[ck])
        for i, ma in enumerate(models):
            for mb in models[i + 1:]:
                result = _comparison(by_cell[ck][ma], by_cell[ck][mb])
                if result is not None:
                    out.append({
                        "dataset": ck[0], "split": ck[1], "attack": ck[2], "attack_params": json.loads(ck[3]),
                        "seed": ck[4], "shift_norm": ck[5], "eps": ck[6], "model_a": ma, "model_b": mb, **result,
                    })
    return out


def _summary_md(summary: dict, comparisons: list[dict]) -> str:
    lines = ["# Sweep summary", ""]
    for g in summary["groups"]:
        lines += _group_md(g)
    if comparisons:
        lines += ["## Paired comparisons (same samples)", "",
                  "| dataset | attack | ε | a | b | RA_a − RA_b | McNemar p | RR_a − RR_b at b=0.5 [95% CI] |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in comparisons:
            t = int(np.argmin(np.abs(np.asarray(c["tolerance"]) - 0.5)))
            lo, hi = c["rr_diff_ci"][t]
            lines.append(f"| {c['dataset']} | {c['attack']} | {c['eps']:.4g} | {c['model_a']} | {c['model_b']} | "
                         f"{c['ra_diff']:+.3f} | {c['mcnemar_p']:.3g} | {c['rr_diff'][t]:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _group_md(g: dict) -> list[str]:
    params = ", ".join(f"{k}={v}" for k, v in sorted(g["attack_params"].items()))
    clean = "n/a" if g["clean_accuracy"] is None else f"{g['clean_accuracy']:.3f}"
    lines = [f"## {g['model']} · {g['dataset']}/{g['split']} · {g['attack']}({params})", "",
             f"n = {g['n']}, clean accuracy {clean}"
             + ("" if g["dead_gradient_share"] is None else f", dead-gradient share {g['dead_gradient_share']:.3f}"),
             ""]
    if any(g["left_out"]):
        lines += [f"**{max(g['left_out'])} of {g['n']} samples had NaN/inf outputs at some ε and were left out** "
                  "(no verdict; RA and RR are over the others; per ε: "
                  + ", ".join(f"{e:.4g}: {k}" for e, k in zip(g["eps"], g["left_out"])) + ")", ""]
    tol = g["tolerance"]
    show = sorted({0, len(tol) // 4, len(tol) // 2, (3 * len(tol)) // 4, len(tol) - 1})
    lines.append("| ε | RA [95% CI] | " + " | ".join(f"RR(b={tol[t]:.2g})" for t in show) + " |")
    lines.append("|---|---|" + "---|" * len(show))
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for e, ra, ci, rr in zip(g["eps"], g["ra"], g["ra_ci"], g["rr"]):
        lines.append(f"| {e:.4g} | {fmt(ra)} [{fmt(ci[0])}, {fmt(ci[1])}] | "
                     + " | ".join(fmt(rr[t]) for t in show) + " |")
    lines.append("")
    if "member_shares" in g:
        lines += _shares_md(g)
    if g["health"]:
        lines += ["**Attack-health warnings:**", ""] + [f"- `{h}`: {HEALTH_FLAGS[h]}" for h in g["health"]] + [""]
    return lines


def _shares_md(g: dict) -> list[str]:
    """Which ensemble member produced the worst case, per ε (RA: first to break; RR: largest shift)."""
    shares = g["member_shares"]
    labels = shares["labels"]
    fmt = lambda v: "–" if v is None else f"{v:.0%}"  # noqa: E731
    lines = ["Worst case by member (share of broken samples for RA, of moved samples for RR):", "",
             "| ε | " + " | ".join(f"RA: {lab}" for lab in labels) + " | " + " | ".join(f"RR: {lab}" for lab in labels) + " |",
             "|---|" + "---|" * (2 * len(labels))]
    for e, ra, rr in zip(g["eps"], shares["ra"], shares["rr"]):
        lines.append(f"| {e:.4g} | " + " | ".join(map(fmt, ra)) + " | " + " | ".join(map(fmt, rr)) + " |")
    return lines + [""]
