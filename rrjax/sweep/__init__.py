"""The sweep: every (model, attack, ε) cell over a sample set, sharded, chunked and resumable,
with tidy records, attack-health flags, a summary and paired model comparisons.

* :mod:`~rrjax.sweep.spec`: what is asked (attack specs, models, grids, settings) and parsing.
* :mod:`~rrjax.sweep.data`: the samples.
* :mod:`~rrjax.sweep.plan`: chunk sizes under a memory budget.
* :mod:`~rrjax.sweep.outdir`: the sweep folder before any work (writable; one checkpoint per label).
* :mod:`~rrjax.sweep.cells`: cell definitions and ids, rows, partial results.
* :mod:`~rrjax.sweep.engine`: :func:`run_sweep`, the chunk loop.
* :mod:`~rrjax.sweep.report`: :func:`finalise`: health flags, summary, comparisons.
"""

from rrjax.sweep.data import SweepData, load_data, select_samples
from rrjax.sweep.engine import cell_ids, run_sweep
from rrjax.sweep.outdir import check_out_dir
from rrjax.sweep.plan import plan_chunk
from rrjax.sweep.report import HEALTH_FLAGS, finalise
from rrjax.sweep.spec import (
    AttackSpec,
    ModelEntry,
    SweepSettings,
    import_extra_modules,
    load_model,
    parse_attacks,
    parse_grid,
    parse_models,
)

__all__ = [
    "AttackSpec", "ModelEntry", "SweepData", "SweepSettings", "parse_grid", "parse_attacks", "parse_models",
    "import_extra_modules", "select_samples", "load_model", "load_data", "plan_chunk", "run_sweep", "cell_ids",
    "finalise", "HEALTH_FLAGS", "check_out_dir",
]
