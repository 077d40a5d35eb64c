"""The benchmark: rrjax's ε-grid attacks against torchattacks looping over ε, and against the
machine (``experiments/bench.py`` is the command line; numbers in BENCHMARKS.md).

* :mod:`~rrjax.bench.config`: :class:`BenchConfig` (one run), smoke-run sizes, ε grids.
* :mod:`~rrjax.bench.workload`: the detector with random calibrated weights, inputs, labels and
  its PyTorch twin (``rrjax.models.to_torch`` + ``rrjax.models.torch_refs``, logit parity).
* :mod:`~rrjax.bench.contenders`: rrjax grid / rrjax per ε (through the attack registry) /
  torchattacks runners, the RA judge and the equivalence check.
* :mod:`~rrjax.bench.measure`: timing, resident memory, load, matmul peak.
* :mod:`~rrjax.bench.comparison`, :mod:`~rrjax.bench.breakdown`, :mod:`~rrjax.bench.layers`,
  :mod:`~rrjax.bench.memory`: the sections; :mod:`~rrjax.bench.targets`: the targets;
  :mod:`~rrjax.bench.render`: the Markdown; :mod:`~rrjax.bench.run`: a whole run.
* :mod:`~rrjax.bench.device`: the accelerator check (``make accelerator-check``).

PyTorch and torchattacks are imported only when a PyTorch contender is built.
"""

from rrjax.bench.config import BENCH_MODELS, BenchConfig, quick_config
from rrjax.bench.device import QUICK_ACCELERATOR, AcceleratorConfig, accelerator_check
from rrjax.bench.render import render
from rrjax.bench.run import run_benchmark, write_outputs

__all__ = [
    "BENCH_MODELS", "BenchConfig", "quick_config", "run_benchmark", "render", "write_outputs",
    "AcceleratorConfig", "QUICK_ACCELERATOR", "accelerator_check",
]
