r"""Benchmark: rrjax's ε-grid attacks against torchattacks looping over ε, and against the machine.

Contenders (same detector, same weights, same inputs, same thread count): ``rrjax-grid`` (the
whole ε grid as one compiled program), ``rrjax-per-eps`` (rrjax called once per ε) and
``torchattacks`` (on the PyTorch reference network carrying rrjax's weights, one call per ε).
Every contender's first run must reach the reference's robust accuracy within one sample at
every ε before anything is timed. The logic lives in :mod:`rrjax.bench`.

Usage::

  PYTHONPATH=. python experiments/bench.py --model=meso4 --image_size=128     # full run (2 cores: ~20 min)
  PYTHONPATH=. python experiments/bench.py --quick                            # smoke run (seconds)
  PYTHONPATH=. python experiments/bench.py --accelerator_check [--quick]      # make accelerator-check

Results are printed as Markdown (``--markdown_out`` / ``--json_out`` write them); BENCHMARKS.md
has the recorded runs.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Sequence

from absl import flags

from rrjax import bench, cli
from rrjax._xla import add_xla_flags, use_memory_optimised_cpu_scheduler
from rrjax.bench.config import QUICK

FLAGS = flags.FLAGS


def define_flags() -> None:
    """The flags (absl flags are global: defined only when run as a script)."""
    d = bench.BenchConfig()
    flags.DEFINE_enum("model", d.model, list(bench.BENCH_MODELS), "Detector (i3d: rrjax-only, no PyTorch twin).")
    flags.DEFINE_integer("image_size", d.image_size, "Square input side in pixels (2 CPU cores: 64-128).")
    flags.DEFINE_integer("num_frames", d.num_frames, "Frames per clip (video detectors).")
    flags.DEFINE_integer("n", d.n, "Samples N.")
    flags.DEFINE_integer("eps_count", d.eps_count, "ε grid length E of the main comparison.")
    flags.DEFINE_list("attacks", list(d.attacks), "Attacks of the main comparison (fgsm, pgd, cw).")
    flags.DEFINE_integer("pgd_steps", d.pgd_steps, "PGD iterations.")
    flags.DEFINE_integer("cw_steps", d.cw_steps, "CW Adam iterations.")
    flags.DEFINE_float("cw_c", d.cw_c, "CW constant c.")
    flags.DEFINE_float("cw_lr", d.cw_lr, "CW Adam learning rate.")
    flags.DEFINE_bool("cw_per_eps", d.cw_per_eps, "Also time rrjax cw_l2 called once per ε.")
    flags.DEFINE_float("eps_max", None, "Largest L∞ ε (grid: E values in (0, eps_max]); default: chosen from the "
                       "detector (rrjax FGSM's RA ≤ 0.5 there).")
    flags.DEFINE_float("cw_eps_max", d.cw_eps_max, "Largest L2 ε of the CW grid.")
    flags.DEFINE_integer("eps_batch_size", None, "rrjax grid points vectorised at once (default: all).")
    flags.DEFINE_bool("unroll", d.unroll, "rrjax PGD/CW with unroll=True (and XLA's memory-optimised CPU scheduler).")
    flags.DEFINE_integer("repeats", d.repeats, "Timed repeats after the warm-up run (median reported).")
    flags.DEFINE_list("scale_e", [str(v) for v in d.scale_e], "E values of the ε-scaling table (empty: none).")
    flags.DEFINE_integer("scale_e_n", d.scale_e_n, "N of the ε-scaling table.")
    flags.DEFINE_list("scale_n", [str(v) for v in d.scale_n], "N values of the sample-scaling table (empty: none).")
    flags.DEFINE_integer("scale_n_e", d.scale_n_e, "E of the sample-scaling table.")
    flags.DEFINE_integer("scale_repeats", d.scale_repeats, "Timed repeats per scaling cell (after a warm-up).")
    flags.DEFINE_bool("scale_torch", d.scale_torch, "Also time torchattacks (PGD) in the scaling tables.")
    flags.DEFINE_bool("memory", d.memory, "Peak memory per contender, each in a fresh process.")
    flags.DEFINE_bool("breakdown", d.breakdown, "Time one attack step per framework, loop vs unrolled PGD.")
    flags.DEFINE_bool("layers", d.layers, "Time every layer alone (forward + input gradient), XLA vs PyTorch.")
    flags.DEFINE_integer("matmul_size", d.matmul_size, "Side of the square matmul measuring the machine's peak.")
    flags.DEFINE_integer("seed", d.seed, "Seed of weights, inputs and attack keys.")
    flags.DEFINE_bool("quick", False, "Smoke run: tiny sizes, one repeat (flags given explicitly win).")
    flags.DEFINE_string("markdown_out", None, "Write the Markdown report here.")
    flags.DEFINE_string("json_out", None, "Write all measurements as JSON here.")
    flags.DEFINE_bool("accelerator_check", False, "The accelerator check instead (device benchmark + small sweep; "
                      "one table in --out_dir/<device>.md; with --quick: seconds on a CPU).")
    flags.DEFINE_string("out_dir", "outputs/accelerator", "Where --accelerator_check writes.")


def _config() -> bench.BenchConfig:
    config = bench.BenchConfig(
        model=FLAGS.model, image_size=FLAGS.image_size, num_frames=FLAGS.num_frames, n=FLAGS.n,
        eps_count=FLAGS.eps_count, attacks=tuple(FLAGS.attacks), pgd_steps=FLAGS.pgd_steps, cw_steps=FLAGS.cw_steps,
        cw_c=FLAGS.cw_c, cw_lr=FLAGS.cw_lr, cw_per_eps=FLAGS.cw_per_eps, eps_max=FLAGS.eps_max,
        cw_eps_max=FLAGS.cw_eps_max, eps_batch_size=FLAGS.eps_batch_size, unroll=FLAGS.unroll, repeats=FLAGS.repeats,
        scale_e=tuple(map(int, FLAGS.scale_e)), scale_e_n=FLAGS.scale_e_n, scale_n=tuple(map(int, FLAGS.scale_n)),
        scale_n_e=FLAGS.scale_n_e, scale_repeats=FLAGS.scale_repeats, scale_torch=FLAGS.scale_torch,
        memory=FLAGS.memory, breakdown=FLAGS.breakdown, layers=FLAGS.layers, matmul_size=FLAGS.matmul_size,
        seed=FLAGS.seed,
    )
    if FLAGS.quick:
        config = bench.quick_config(config, explicit=[k for k in QUICK if FLAGS[k].present])
    return config


def main(argv: Sequence[str]) -> None:
    del argv
    logging.getLogger("rrjax.bench").setLevel(logging.INFO)
    # XLA flags are read when JAX starts its backend: set them before anything runs.
    if FLAGS.unroll:
        use_memory_optimised_cpu_scheduler()
    if FLAGS.quick:  # programs run once or twice: LLVM's optimisations cost more than they save
        add_xla_flags("--xla_backend_optimization_level=0")
    command = cli.script_command()
    if FLAGS.accelerator_check:
        cfg = bench.QUICK_ACCELERATOR if FLAGS.quick else bench.AcceleratorConfig()
        path, _ = bench.accelerator_check(cfg, sweep_script=pathlib.Path(__file__).with_name("sweep.py"),
                                          out_dir=FLAGS.out_dir, command=command)
        print(path.read_text())
        print(f"written: {path} (and {path.with_suffix('.json').name})")
        return
    config = _config()  # a bad value: one line, exit status 2 (rrjax.cli.run)
    report = bench.run_benchmark(config, command=command)
    text = bench.render(report, config)
    print(text)
    bench.write_outputs(text, report, markdown_out=FLAGS.markdown_out, json_out=FLAGS.json_out)


if __name__ == "__main__":
    define_flags()
    cli.run(main)
