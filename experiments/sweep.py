r"""The main job: every (model, attack, ε) cell with RA and RR over a tolerance grid.

Example (the shipped checkpoints on the synthetic test split)::

  python experiments/sweep.py --models=checkpoints/meso4,checkpoints/meso_inception4 \
      --dataset=synthetic_images --dataset_config=image_size=64 --num_samples=200 \
      --attacks='fgsm,pgd(steps=10),cw_bounded(steps=10)' --eps=0:0.2:9 --tolerance=0:1:21 \
      --out_dir=outputs/sweep

Multi-host (e.g. every worker of a TPU pod slice runs the same command)::

  python experiments/sweep.py --distributed ...   # jax.distributed.initialize() first

Writes ``<out_dir>/records.{jsonl,csv}`` (one row per model, dataset, attack, ε, tolerance),
``summary.md``/``summary.json`` (RA/RR tables, attack-health warnings), ``comparisons.jsonl``
(paired tests between models), per-cell sample files and ``figures/``. Rerunning the same
command resumes: finished cells are skipped.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

from absl import flags, logging

from rrjax import cli

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["checkpoints/meso4", "checkpoints/meso_inception4"],
                  "Checkpoint directories, optionally label=path (comma-separated).")
flags.DEFINE_string("dataset", "synthetic_images", "Dataset name (rrjax.data.DATASETS).")
flags.DEFINE_string("split", "test", "Split to evaluate.")
flags.DEFINE_string("data_dir", None, "Where prepared datasets live (default: rrjax.data.default_data_dir()).")
flags.DEFINE_string("manual_dir", None, "Your downloaded files, for real datasets.")
flags.DEFINE_multi_string("dataset_config", [], "Dataset builder option key=value (JSON value); repeatable.")
flags.DEFINE_integer("num_samples", None, "Evaluate a seeded random subset of this many samples (default: all).")
flags.DEFINE_integer("sample_seed", 0, "Seed of the sample subset.")
flags.DEFINE_string("attacks", "fgsm,pgd(steps=10),cw_bounded(steps=10)",
                    "Attacks with hyperparameters, e.g. 'fgsm,pgd(steps=10,norm=l2),cw_l2(steps=200)'.")
flags.DEFINE_string("eps", "0:0.2:9", "ε grid: comma-separated values or start:stop:num (pixel units).")
flags.DEFINE_string("tolerance", "0:1:21", "Tolerance grid for RR: values or start:stop:num.")
flags.DEFINE_enum("shift_norm", "linf", ["linf", "l1", "l2"], "Output-change norm of RR.")
flags.DEFINE_bool("strict", False, "Strict RR: the predicted label must also stay.")
flags.DEFINE_enum("ci_method", "wilson", ["wilson", "clopper_pearson"], "Binomial confidence interval.")
flags.DEFINE_integer("batch_size", 64, "Samples per attack chunk (before the memory budget).")
flags.DEFINE_float("memory_budget_mb", None, "Per-device memory budget; chunks shrink to fit.")
flags.DEFINE_integer("seed", 0, "Attack seed (sample i uses fold_in(key(seed), i)).")
flags.DEFINE_string("out_dir", "outputs/sweep", "Sweep directory (resumable).")
flags.DEFINE_bool("figures", True, "Write the standard figures to <out_dir>/figures.")
flags.DEFINE_list("figure_formats", ["png", "pdf"], "Figure file formats.")
flags.DEFINE_bool("progress", True, "Show a progress bar.")
flags.DEFINE_enum("unroll", "auto", ["auto", "true", "false"],
                  "Unroll PGD/CW step loops: faster on CPU (XLA:CPU runs input-gradient convolutions inside "
                  "while loops slowly). auto: on the CPU backend for loops of at most 50 steps. An attack's "
                  "own unroll= setting wins. Results are recorded with unroll=True.")
flags.DEFINE_list("extra_modules", [],
                  "Python modules to import first; they register your own attacks, detectors or datasets "
                  "(rrjax.attacks.register, rrjax.models.register, rrjax.data.register), e.g. my_pkg.my_attacks.")
flags.DEFINE_list("replace_models", [],
                  "Model labels whose results from ANOTHER checkpoint in --out_dir are deleted first (a label "
                  "stands for one checkpoint per folder; without this flag such a run is refused).")
flags.DEFINE_bool("distributed", False, "Call jax.distributed.initialize() (multi-host).")
flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (when not auto-detected).")
flags.DEFINE_integer("num_processes", None, "Number of processes (when not auto-detected).")
flags.DEFINE_integer("process_id", None, "This process's index (when not auto-detected).")


def _load_datasets(groups: dict, dataset_config: dict) -> dict:
    """The samples for every input shape. Multi-process: process 0 prepares (builds) the data
    first and the others load after a barrier, so workers sharing a disk never build at once."""
    import jax
    from jax.experimental import multihost_utils

    from rrjax import sweep as S

    def load():
        return {
            shape: S.load_data(FLAGS.dataset, FLAGS.split, shape, num_samples=FLAGS.num_samples,
                               sample_seed=FLAGS.sample_seed, data_dir=FLAGS.data_dir, manual_dir=FLAGS.manual_dir,
                               **dataset_config)
            for shape in groups
        }

    if jax.process_count() == 1:
        return load()
    datasets = load() if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("rrjax: data prepared by process 0")
    return datasets if datasets is not None else load()


def _settings():
    from rrjax import sweep as S

    return S.SweepSettings(
        eps=tuple(float(e) for e in S.parse_grid(FLAGS.eps, name="--eps")),
        tolerance=tuple(float(t) for t in S.parse_grid(FLAGS.tolerance, name="--tolerance")),
        shift_norm=FLAGS.shift_norm, strict=FLAGS.strict, ci_method=FLAGS.ci_method, seed=FLAGS.seed,
        batch_size=FLAGS.batch_size, memory_budget_mb=FLAGS.memory_budget_mb,
    )


def _attacks(backend: str):
    from rrjax import sweep as S

    unroll = FLAGS.unroll == "true" or (FLAGS.unroll == "auto" and backend == "cpu")
    max_steps = (50 if FLAGS.unroll == "auto" else float("inf")) if unroll else 0
    return S.parse_attacks(FLAGS.attacks, unroll_max_steps=max_steps)


def _models():
    """The checkpoints, checked against the sweep folder before any data is built."""
    from rrjax import sweep as S

    models = [S.load_model(path, label=label) for label, path in S.parse_models(FLAGS.models)]
    labels = [m.label for m in models]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--models gives the labels {labels}; name duplicates as label=path")
    unknown = sorted(set(FLAGS.replace_models) - set(labels))
    if unknown:
        raise ValueError(f"--replace_models names {unknown}, which are not labels of --models {labels}")
    S.check_out_dir(FLAGS.out_dir, models, replace=FLAGS.replace_models)
    groups: dict[tuple, list] = {}
    for m in models:
        groups.setdefault(tuple(m.detector.input_shape), []).append(m)
    return groups


def _check_flags() -> None:
    if FLAGS.figures:
        from rrjax import plots

        bad = [f for f in FLAGS.figure_formats if f not in plots.FORMATS]
        if bad:
            raise ValueError(f"--figure_formats has {bad}; expected some of {list(plots.FORMATS)}")
    if FLAGS.num_samples is not None and FLAGS.num_samples < 1:
        raise ValueError(f"--num_samples={FLAGS.num_samples}; expected an integer >= 1")


def main(argv: Sequence[str]) -> None:
    del argv
    if FLAGS.unroll != "false":
        # Process-wide and read when the backend starts: set before jax runs anything.
        from rrjax._xla import use_memory_optimised_cpu_scheduler

        use_memory_optimised_cpu_scheduler()
    import jax

    if FLAGS.distributed:
        # Before anything touches a backend. Gloo only concerns CPU devices (local multi-process
        # runs); on TPU/GPU the option is inert and initialize() auto-detects the cluster.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
    from rrjax import sweep as S

    # Everything is checked before data is built or anything runs; a ValueError ends the script
    # with one line and exit status 2 (rrjax.cli.run).
    S.import_extra_modules(FLAGS.extra_modules)
    settings, attacks = _settings(), _attacks(jax.default_backend())
    dataset_config = cli.parse_key_values(FLAGS.dataset_config, flag="dataset_config")
    _check_flags()
    groups = _models()
    datasets = _load_datasets(groups, dataset_config)
    out = pathlib.Path(FLAGS.out_dir)
    for shape, group in groups.items():
        logging.info("sweeping %s on %s/%s %s", [m.label for m in group], FLAGS.dataset, FLAGS.split, shape)
        S.run_sweep(group, datasets[shape], attacks, settings, out, progress=FLAGS.progress,
                    replace_models=FLAGS.replace_models)
    if jax.process_index() == 0:
        _report(out, [c for shape, group in groups.items()
                      for c in S.cell_ids(group, datasets[shape], attacks, settings)])


def _report(out: pathlib.Path, cells: list[str]) -> None:
    written = []
    if FLAGS.figures:
        from rrjax import plots

        # This run's cells only: the folder may hold other runs (another sample count, grid or
        # seed), whose rows would make a figure ambiguous.
        written = plots.save_all(out, formats=tuple(FLAGS.figure_formats), cells=cells)
    print(f"records:     {out / 'records.csv'} (and records.jsonl)")
    print(f"summary:     {out / 'summary.md'}")
    print(f"comparisons: {out / 'comparisons.jsonl'}")
    if written:
        print(f"figures:     {out / 'figures'} ({len(written)} files)")


if __name__ == "__main__":
    cli.run(main)
