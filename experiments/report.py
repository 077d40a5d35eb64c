r"""Prints the paper's comparison from a sweep directory, as Markdown tables.

  python experiments/report.py --sweep=outputs/demo [--tolerances=0.1,0.25,0.5]

1. Models with similar RA but different RR? For every pair of models on the same samples,
   attack and ε: RA of both, the exact McNemar p-value, and the paired-bootstrap RR difference
   with its 95% CI at chosen tolerances (from ``comparisons.jsonl``).
2. How linearly does RR grow with the tolerance? For every model, attack and ε > 0: R² of a
   least-squares line through RR(b) over the tolerance grid (1 = a straight line), and the
   largest gap between RR(b) and the chord from RR(0) to RR(b_max).
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
    except ValueError as e:
        fail(str(e))
    comp_path = out / "comparisons.jsonl"
    comps = [json.loads(line) for line in comp_path.read_text().splitlines()] if comp_path.exists() else []
    def variant(r):  # everything but the model and ε that defines an RA/RR curve
        return (r["dataset"], r["split"], r["attack"], records.canonical_json(r["attack_params"]), r["seed"],
                r["shift_norm"])

    ra = {(r["model"],) + variant(r) + (r["eps"],): r["ra"] for r in rows}

    print("## RA vs RR between models (same samples)\n")
    head = " | ".join(f"ΔRR b={t:g} [95% CI]" for t in tols)
    print(f"| dataset | attack | ε | a | b | RA a | RA b | McNemar p | {head} |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(tols))
    for c in comps:
        if c["eps"] == 0:
            continue
        v = (c["dataset"], c["split"], c["attack"], records.canonical_json(c["attack_params"]), c["seed"],
             c["shift_norm"])
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
    print("| model | dataset | attack | mean R² over ε | min R² | mean max gap to chord |")
    print("|---|---|---|---|---|---|")
    groups: dict[tuple, dict[float, list]] = {}
    for r in rows:
        if r["eps"] > 0:
            groups.setdefault((r["model"],) + variant(r) + (r["strict"],), {}).setdefault(r["eps"], []).append(r)
    for key in sorted(groups):
        fits = []
        for eps, rs in sorted(groups[key].items()):
            rs = sorted(rs, key=lambda r: r["tolerance"])
            fits.append(metrics.tolerance_linearity(np.array([r["tolerance"] for r in rs]), np.array([r["rr"] for r in rs])))
        r2 = np.array([f[0] for f in fits])
        gap = np.array([f[1] for f in fits])
        print(f"| {key[0]} | {key[1]} | {_label(key[3], json.loads(key[4]))} | {r2.mean():.3f} | {r2.min():.3f} | "
              f"{gap.mean():.3f} |")


if __name__ == "__main__":
    sys.exit(app.run(main))
