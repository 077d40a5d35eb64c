r"""Draws every standard figure of a sweep from its records (no model is run).

Example::

  PYTHONPATH=. python experiments/plot.py --records=runs/sweep --out_dir=runs/sweep/figures \
      --format=png,pdf --dataset=synthetic_images --attack=pgd --eps=0.1,0.2 --models=meso4,xception

``--records`` is a sweep directory (records.jsonl, verified against its manifest, and cells/ for
the per-sample histograms) or a records.jsonl / records.csv file. Without --eps the per-ε
figures (RR/RA vs tolerance, shift histograms) are drawn at the middle positive ε and the largest
of each attack. All drawing lives in ``rrjax.plots.save_all``; this script parses flags and prints
the written paths.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from absl import flags

from rrjax import cli, plots
from rrjax.cli import fail

FLAGS = flags.FLAGS
flags.DEFINE_string("records", None, "Sweep directory, or a records.jsonl / records.csv file.")
flags.DEFINE_string("out_dir", None, "Where figures go (default: <sweep dir>/figures).")
flags.DEFINE_list("format", ["png", "pdf"], f"Comma-separated file formats, any of {', '.join(plots.FORMATS)}.")
flags.DEFINE_string("dataset", None, "Only this dataset (default: every dataset in the records).")
flags.DEFINE_string("attack", None, "Only this attack (default: every attack in the records).")
flags.DEFINE_list("eps", None, "Comma-separated ε values for the per-ε figures (default: middle and largest).")
flags.DEFINE_list("models", None, "Comma-separated model names (default: every model in the records).")
flags.DEFINE_bool("hist_log", False, "Logarithmic count axis for the shift histograms.")


def parse_eps(values: Sequence[str] | None) -> list[float] | None:
    """``--eps`` strings as floats; raises ValueError naming the flag on a bad value."""
    if values is None:
        return None
    out = []
    for v in values:
        try:
            out.append(float(v))
        except ValueError:
            raise ValueError(f"--eps={v!r} is not a number; expected comma-separated ε values like 0.05,0.2") from None
    return out


def run(
    records: str, *, out_dir: str | None = None, formats: Sequence[str] = ("png", "pdf"), dataset: str | None = None,
    attack: str | None = None, eps: Sequence[float] | None = None, models: Sequence[str] | None = None,
    hist_log: bool = False,
) -> list[pathlib.Path]:
    """Validates the arguments and writes the figures; returns their paths."""
    if not records:
        raise ValueError("--records is required: a sweep directory or a records.jsonl / records.csv file")
    return plots.save_all(records, out_dir, formats=formats, dataset=dataset, attack=attack, eps=eps, models=models,
                          hist_log=hist_log)


def main(argv: Sequence[str]) -> None:
    try:
        paths = run(FLAGS.records, out_dir=FLAGS.out_dir, formats=FLAGS.format, dataset=FLAGS.dataset,
                    attack=FLAGS.attack, eps=parse_eps(FLAGS.eps), models=FLAGS.models, hist_log=FLAGS.hist_log)
    except ValueError as err:
        # Bad selections and records that fail their manifest check end here: one clear line, exit 2.
        fail(str(err))
    folders = sorted({str(p.parent) for p in paths})
    for p in paths:
        print(p)
    print(f"wrote {len(paths)} figure files to {', '.join(folders)}")


if __name__ == "__main__":
    cli.run(main)
