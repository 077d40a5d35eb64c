r"""Prints the paper's comparison from a sweep directory, as Markdown tables.

  python experiments/report.py --sweep=outputs/demo [--tolerances=0.1,0.25,0.5]

1. Models with similar RA but different RR? For every pair of models on the same samples,
   attack and ε: RA of both, the exact McNemar p-value, and the paired-bootstrap RR difference
   with its 95% CI at chosen tolerances (from ``comparisons.jsonl``).
2. How linearly does RR grow with the tolerance? For every model, attack and ε > 0: R² of a
   least-squares line through RR(b) over the tolerance grid (1 = a straight line), and the
   largest gap between RR(b) and the chord from RR(0) to RR(b_max). With
   ``--linearity_eps=0.002,0.004``: at those ε, every pair of models' R² difference with an
   unpaired bootstrap 95% CI over the stored per-sample shifts.

Curves are keyed by ``rrjax.records.curve_key`` (model, checkpoint, data, attack variant, seed,
RR norm, sample count), and every label states the threat norm the records hold.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence

import numpy as np
from absl import flags

from rrjax import cli, metrics, records
from rrjax.cli import fail

FLAGS = flags.FLAGS
flags.DEFINE_string("sweep", "outputs/demo", "Sweep directory (records.jsonl, comparisons.jsonl).")
flags.DEFINE_list("tolerances", ["0.1", "0.25", "0.5"], "Tolerances at which RR differences are shown.")
flags.DEFINE_list("linearity_eps", [], "Also list R² per model and attack at these ε (next to RA).")

_NORM = {"linf": "L∞", "l2": "L2", "l1": "L1"}


def label(attack: str, params: dict, threat_norm: str) -> str:
    """``pgd (L∞, 10 steps)``: enough to tell the variants of a sweep apart."""
    parts = [_NORM.get(threat_norm, threat_norm)]
    if "steps" in params:
        parts.append(f"{params['steps']} steps")
    if params.get("loss") not in (None, "ce"):
        parts.append(params["loss"])
    return f"{attack} ({', '.join(parts)})"


def _variant(row: dict) -> tuple:
    """A curve's key without the model's identity (what two compared models share), plus ε."""
    key = records.curve_key(row)
    return key.dataset, key.split, key.attack, key.params, key.seed, key.shift_norm, key.n


def ra_vs_rr(rows: list[dict], comps: list[dict], tols: Sequence[float]) -> list[str]:
    """Table 1: RA of both models, McNemar p and ΔRR [95% CI] at chosen tolerances."""
    ra = {(r["model"],) + _variant(r) + (r["eps"],): r for r in rows}
    head = " | ".join(f"ΔRR b={t:g} [95% CI]" for t in tols)
    out = ["## RA vs RR between models (same samples)", "",
           f"| dataset | attack | ε | a | b | RA a | RA b | McNemar p | {head} |",
           "|---|---|---|---|---|---|---|---|" + "---|" * len(tols)]
    for c in comps:
        if c["eps"] == 0:
            continue
        v = (c["dataset"], c["split"], c["attack"], records.canonical_json(c["attack_params"]), c["seed"],
             c["shift_norm"], c["n"], c["eps"])
        a, b = ra[(c["model_a"],) + v], ra[(c["model_b"],) + v]
        cells = []
        for t in tols:
            k = int(np.argmin(np.abs(np.asarray(c["tolerance"]) - t)))
            lo, hi = c["rr_diff_ci"][k]
            cells.append(f"{c['rr_diff'][k]:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        out.append(f"| {c['dataset']} | {label(c['attack'], c['attack_params'], a['threat_norm'])} | {c['eps']:.3g} | "
                   f"{c['model_a']} | {c['model_b']} | {a['ra']:.3f} | {b['ra']:.3f} | {c['mcnemar_p']:.3g} | "
                   + " | ".join(cells) + " |")
    return out


def curves_over_eps(rows: list[dict]) -> dict[tuple, dict[float, list[dict]]]:
    """(curve key, strict) -> ε (> 0) -> that cell's rows sorted by tolerance."""
    groups: dict[tuple, dict[float, list[dict]]] = {}
    for r in rows:
        if r["eps"] > 0:
            groups.setdefault((records.curve_key(r), r["strict"]), {}).setdefault(r["eps"], []).append(r)
    for per_eps in groups.values():
        for eps, rs in per_eps.items():
            rs.sort(key=lambda r: r["tolerance"])
            if len({r["tolerance"] for r in rs}) != len(rs):
                raise ValueError(f"{rs[0]['model']} / {rs[0]['attack']} at eps={eps:g} has two rows per tolerance "
                                 "(two runs with the same curve in one directory); report one run per directory")
    return groups


def linearity(groups: dict[tuple, dict[float, list[dict]]]) -> list[str]:
    """Table 2: per curve, mean and min R² of RR(b) over ε and the mean gap to the chord."""
    out = ["## Linearity of RR in the tolerance (ε > 0)", "",
           "| model | dataset | attack | n | mean R² over ε | min R² | mean max gap to chord |",
           "|---|---|---|---|---|---|---|"]
    for (key, _), per_eps in sorted(groups.items()):
        fits = [metrics.tolerance_linearity(np.array([r["tolerance"] for r in rs]), np.array([r["rr"] for r in rs]))
                for _, rs in sorted(per_eps.items())]
        r2, gap = np.array([f[0] for f in fits]), np.array([f[1] for f in fits])
        first = next(iter(per_eps.values()))[0]
        out.append(f"| {key.model} | {key.dataset} | {label(key.attack, json.loads(key.params), first['threat_norm'])} | "
                   f"{key.n} | {r2.mean():.3f} | {r2.min():.3f} | {gap.mean():.3f} |")
    return out


def _shifts(out: pathlib.Path, rows: list[dict], strict: bool, cap: float) -> np.ndarray:
    """Per-sample shifts of one cell; for strict RR a moved label counts as beyond every b."""
    s = records.load_samples(out, rows[0]["cell"])
    shift = np.where(s["same_label"], s["shift"], np.inf) if strict else s["shift"]
    return np.minimum(shift, cap)


def linearity_at(out: pathlib.Path, groups: dict, eps_values: Sequence[float]) -> list[str]:
    """Table 3: every pair's R² difference at chosen ε, with an unpaired bootstrap 95% CI over
    the stored per-sample shifts (the models may be on different data)."""
    lines = ["## Linearity at chosen ε (R² of RR(b); ΔR² with a bootstrap 95% CI over samples)", "",
             "| attack | ε | a (dataset) | b (dataset) | RA a | RA b | R² a | R² b | ΔR² = a − b [95% CI] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for eps in eps_values:
        by_attack: dict[tuple, list] = {}
        for (key, strict), per_eps in groups.items():
            found = [e for e in per_eps if np.isclose(e, eps, rtol=1e-6, atol=0.0)]
            if found:
                shared = (key.attack, key.params, key.seed, key.shift_norm, strict)
                by_attack.setdefault(shared, []).append((key.model, key.dataset, per_eps[found[0]]))
        for shared in sorted(by_attack):
            entries = sorted(by_attack[shared], key=lambda e: e[:2])
            for i, (ma, da, ra_rows) in enumerate(entries):
                for mb, db, rb_rows in entries[i + 1:]:
                    tol = np.array([r["tolerance"] for r in ra_rows])
                    if not np.array_equal(tol, [r["tolerance"] for r in rb_rows]):
                        continue
                    cap = float(tol[-1]) + 1.0
                    res = metrics.linearity_bootstrap(_shifts(out, ra_rows, shared[-1], cap),
                                                      _shifts(out, rb_rows, shared[-1], cap), tol)
                    lo, hi = res.diff_ci
                    lines.append(
                        f"| {label(shared[0], json.loads(shared[1]), ra_rows[0]['threat_norm'])} | {eps:g} | "
                        f"{ma} ({da}) | {mb} ({db}) | {ra_rows[0]['ra']:.3f} | {rb_rows[0]['ra']:.3f} | "
                        f"{res.r2_a:.3f} | {res.r2_b:.3f} | {res.r2_a - res.r2_b:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
    return lines


def main(argv: Sequence[str]) -> None:
    del argv
    out = pathlib.Path(FLAGS.sweep)
    try:
        rows = records.load_records(out)
        tols = [float(t) for t in FLAGS.tolerances]
        lin_eps = [float(e) for e in FLAGS.linearity_eps]
        comp_path = out / "comparisons.jsonl"
        comps = [json.loads(line) for line in comp_path.read_text().splitlines()] if comp_path.exists() else []
        groups = curves_over_eps(rows)
        lines = ra_vs_rr(rows, comps, tols) + [""] + linearity(groups)
        if lin_eps:
            lines += [""] + linearity_at(out, groups, lin_eps)
    except ValueError as e:
        fail(str(e))
    print("\n".join(lines))


if __name__ == "__main__":
    cli.run(main)
