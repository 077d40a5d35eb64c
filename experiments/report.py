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
    ra = {(r["model"], r["dataset"], r["attack"], r["eps"]): (r["ra"], r["clean_accuracy"], r["n"]) for r in rows}

    print("## RA vs RR between models (same samples)\n")
    head = " | ".join(f"ΔRR b={t:g} [95% CI]" for t in tols)
    print(f"| dataset | attack | ε | a | b | RA a | RA b | McNemar p | {head} |")
    print("|---|---|---|---|---|---|---|---|" + "---|" * len(tols))
    for c in comps:
        if c["eps"] == 0:
            continue
        ra_a = ra[(c["model_a"], c["dataset"], c["attack"], c["eps"])][0]
        ra_b = ra[(c["model_b"], c["dataset"], c["attack"], c["eps"])][0]
        cells = []
        for t in tols:
            k = int(np.argmin(np.abs(np.asarray(c["tolerance"]) - t)))
            lo, hi = c["rr_diff_ci"][k]
            cells.append(f"{c['rr_diff'][k]:+.3f} [{lo:+.3f}, {hi:+.3f}]")
        print(f"| {c['dataset']} | {c['attack']} | {c['eps']:.3g} | {c['model_a']} | {c['model_b']} | {ra_a:.3f} | "
              f"{ra_b:.3f} | {c['mcnemar_p']:.3g} | " + " | ".join(cells) + " |")

    print("\n## Linearity of RR in the tolerance (ε > 0)\n")
    print("| model | dataset | attack | mean R² over ε | min R² | mean max gap to chord |")
    print("|---|---|---|---|---|---|")
    groups: dict[tuple, dict[float, list]] = {}
    for r in rows:
        if r["eps"] > 0:
            groups.setdefault((r["model"], r["dataset"], r["attack"]), {}).setdefault(r["eps"], []).append(r)
    for key in sorted(groups):
        fits = []
        for eps, rs in sorted(groups[key].items()):
            rs = sorted(rs, key=lambda r: r["tolerance"])
            fits.append(metrics.tolerance_linearity(np.array([r["tolerance"] for r in rs]), np.array([r["rr"] for r in rs])))
        r2 = np.array([f[0] for f in fits])
        gap = np.array([f[1] for f in fits])
        print(f"| {key[0]} | {key[1]} | {key[2]} | {r2.mean():.3f} | {r2.min():.3f} | {gap.mean():.3f} |")


if __name__ == "__main__":
    sys.exit(app.run(main))
