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
"""

from __future__ import annotations

import json
import pathlib
import sys
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from rrjax import metrics, records
from rrjax.cli import fail

FLAGS = flags.FLAGS
flags.DEFINE_string("sweep", "outputs/demo", "Sweep directory (records.jsonl, comparisons.jsonl).")
flags.DEFINE_list("tolerances", ["0.1", "0.25", "0.5"], "Tolerances at which RR differences are shown.")
flags.DEFINE_list("linearity_eps", [], "Also list R² per model and attack at these ε (next to RA).")


def _label(attack: str, params: dict) -> str:
    """``pgd (L∞, 10 steps)``: enough to tell the variants of a sweep apart."""
    parts = [{"linf": "L∞", "l2": "L2"}.get(params.get("norm", "l2" if attack == "cw_l2" else "linf"), "")]
    if "steps" in params:
        parts.append(f"{params['steps']} steps")
    if params.get("loss") not in (None, "ce"):
        parts.append(params["loss"])
    return f"{attack} ({', '.join(parts)})"


def main(argv: Sequence[str]) -> None:
    del argv
    out = pathlib.Path(FLAGS.sweep)
    try:
        rows = records.load_records(out)
        tols = [float(t) for t in FLAGS.tolerances]
        lin_eps = [float(e) for e in FLAGS.linearity_eps]
    except ValueError as e:
        fail(str(e))
    comp_path = out / "comparisons.jsonl"
    comps = [json.loads(line) for line in comp_path.read_text().splitlines()] if comp_path.exists() else []
    def variant(r):  # everything but the model and ε that defines an RA/RR curve (n: runs on
        # other sample sets can share a directory)
        return (r["dataset"], r["split"], r["attack"], records.canonical_json(r["attack_params"]), r["seed"],
                r["shift_norm"], r["n"])

    ra = {(r["model"],) + variant(r) + (r["eps"],): r["ra"] for r in rows}

    print("## RA vs RR between models (same samples)\n")
    head = " | ".join(f"ΔRR b={t:g} [95% CI]" for t in tols)
    print(f"| dataset | attack | ε | a | b | RA a | RA b | McNemar p | {head} |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(tols))
    for c in comps:
        if c["eps"] == 0:
            continue
        v = (c["dataset"], c["split"], c["attack"], records.canonical_json(c["attack_params"]), c["seed"],
             c["shift_norm"], c["n"])
        ra_a, ra_b = ra[(c["model_a"],) + v + (c["eps"],)], ra[(c["model_b"],) + v + (c["eps"],)]
        cells = []
        for t in tols:
            k = int(np.argmin(np.abs(np.asarray(c["tolerance"]) - t)))
            lo, hi = c["rr_diff_ci"][k]
            cells.append(f"{c['rr_diff'][k]:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        print(f"| {c['dataset']} | {_label(c['attack'], c['attack_params'])} | {c['eps']:.3g} | {c['model_a']} | "
              f"{c['model_b']} | {ra_a:.3f} | "
              f"{ra_b:.3f} | {c['mcnemar_p']:.3g} | " + " | ".join(cells) + " |")

    print("\n## Linearity of RR in the tolerance (ε > 0)\n")
    print("| model | dataset | attack | n | mean R² over ε | min R² | mean max gap to chord |")
    print("|---|---|---|---|---|---|---|")
    groups: dict[tuple, dict[float, list]] = {}
    for r in rows:
        if r["eps"] > 0:
            groups.setdefault((r["model"],) + variant(r) + (r["strict"],), {}).setdefault(r["eps"], []).append(r)
    for key in sorted(groups):
        fits = []
        for eps, rs in sorted(groups[key].items()):
            rs = sorted(rs, key=lambda r: r["tolerance"])
            if len({r["tolerance"] for r in rs}) != len(rs):
                fail(f"{out} holds two sample sets of the same size for {key[0]} / {key[3]} at eps={eps:g} "
                     "(runs with another --sample_seed or data source); report one run per directory")
            fits.append(metrics.tolerance_linearity(np.array([r["tolerance"] for r in rs]), np.array([r["rr"] for r in rs])))
        r2 = np.array([f[0] for f in fits])
        gap = np.array([f[1] for f in fits])
        print(f"| {key[0]} | {key[1]} | {_label(key[3], json.loads(key[4]))} | {key[7]} | {r2.mean():.3f} | {r2.min():.3f} | "
              f"{gap.mean():.3f} |")

    if lin_eps:
        _linearity_at(out, groups, lin_eps)


def _linearity_at(out: pathlib.Path, groups: dict, eps_values: Sequence[float]) -> None:
    """R² of every model at the chosen ε, and every pair's R² difference with an unpaired
    bootstrap 95% CI from the stored per-sample shifts (the models may be on different data)."""
    print("\n## Linearity at chosen ε (R² of RR(b); ΔR² with a bootstrap 95% CI over samples)\n")
    print("| attack | ε | a (dataset) | b (dataset) | RA a | RA b | R² a | R² b | ΔR² = a − b [95% CI] |")
    print("|---|---|---|---|---|---|---|---|---|")
    for eps in eps_values:
        by_attack: dict[tuple, list] = {}
        for key, per_eps in groups.items():
            found = [e for e in per_eps if np.isclose(e, eps, rtol=1e-6, atol=0.0)]
            if found:  # key = (model, dataset, split, attack, params, seed, shift_norm, strict)
                rs = sorted(per_eps[found[0]], key=lambda r: r["tolerance"])
                by_attack.setdefault(key[3:], []).append((key[0], key[1], rs))
        for akey in sorted(by_attack):
            entries = sorted(by_attack[akey])
            for i, (ma, da, ra_rows) in enumerate(entries):
                for mb, db, rb_rows in entries[i + 1:]:
                    tol = np.array([r["tolerance"] for r in ra_rows])
                    if not np.array_equal(tol, [r["tolerance"] for r in rb_rows]):
                        continue
                    sa, sb = (records.load_samples(out, rows[0]["cell"]) for rows in (ra_rows, rb_rows))
                    strict = akey[-1]
                    # The strict RR also needs the label to stay: a moved label counts as beyond every b.
                    shift_a = np.where(sa["same_label"], sa["shift"], np.inf) if strict else sa["shift"]
                    shift_b = np.where(sb["same_label"], sb["shift"], np.inf) if strict else sb["shift"]
                    big = float(tol[-1]) + 1.0
                    res = metrics.linearity_bootstrap(np.minimum(shift_a, big), np.minimum(shift_b, big), tol)
                    lo, hi = res.diff_ci
                    print(f"| {_label(akey[0], json.loads(akey[1]))} | {eps:g} | {ma} ({da}) | {mb} ({db}) | "
                          f"{ra_rows[0]['ra']:.3f} | {rb_rows[0]['ra']:.3f} | {res.r2_a:.3f} | {res.r2_b:.3f} | "
                          f"{res.r2_a - res.r2_b:+.3f} [{lo:+.3f}, {hi:+.3f}] |")

if __name__ == "__main__":
    sys.exit(app.run(main))
