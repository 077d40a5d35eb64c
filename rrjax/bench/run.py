"""One benchmark run from a :class:`~rrjax.bench.config.BenchConfig` to its report, and the
report's files (written atomically)."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import pathlib
import platform
from collections.abc import Mapping
from typing import Any

import flax
import jax

from rrjax._io import atomic_write_json, atomic_write_text
from rrjax.bench.breakdown import step_breakdown
from rrjax.bench.comparison import main_comparison, scaling
from rrjax.bench.config import BenchConfig
from rrjax.bench.contenders import auto_eps_max
from rrjax.bench.layers import layer_breakdown
from rrjax.bench.measure import load, machine_peak
from rrjax.bench.memory import memory_section
from rrjax.bench.targets import check_targets
from rrjax.bench.workload import build_workload

__all__ = ["environment", "run_benchmark", "write_outputs"]

log = logging.getLogger("rrjax.bench")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def environment(command: str, *, with_torch: bool) -> dict[str, Any]:
    """Date, command, machine, library versions, load average and ``XLA_FLAGS`` of this run."""
    versions = f"python {platform.python_version()}, jax {jax.__version__}, flax {flax.__version__}"
    if with_torch:
        import torch
        import torchattacks

        versions += (f", torch {torch.__version__} ({torch.get_num_threads()} threads), "
                     f"torchattacks {torchattacks.__version__}")
    return dict(
        date=datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        command=command,
        machine=f"{_cpu_name()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        versions=versions,
        load_start=load(),
        xla_flags=os.environ.get("XLA_FLAGS", ""),
    )


def run_benchmark(config: BenchConfig, *, command: str,
                  layer_variants: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Runs every section ``config`` asks for and checks the targets.

    Args:
      config: the run.
      command: the command line, recorded in the report.
      layer_variants: column label -> detector for the per-layer table (see
        :func:`rrjax.bench.layers.layer_breakdown`, "Lowering hook").

    Returns:
      The report: ``env``, ``config``, ``peak``, ``flops_per_step``, ``offset``, ``eps_max``,
      ``main``, ``scale_e``/``scale_n``, ``breakdown``, ``layers``, ``memory``, ``targets``.
    """
    with_torch = config.has_torch_twin
    report: dict[str, Any] = {"config": dataclasses.asdict(config)}
    w = build_workload(config, with_torch=with_torch)  # sets PyTorch's thread count
    report["env"] = environment(command, with_torch=with_torch)
    log.info("machine peak ...")
    report["peak"] = machine_peak(config.matmul_size, with_torch=with_torch)
    report["flops_per_step"], report["offset"] = w.flops_per_step, w.offset
    if config.eps_max is None:
        eps_max, report["auto_eps_ra"] = auto_eps_max(w, config)
        report["eps_max"], report["eps_max_source"] = eps_max, "chosen: rrjax FGSM RA ≤ 0.5 there"
    else:
        report["eps_max"], report["eps_max_source"] = config.eps_max, "--eps_max"
    eps_max = report["eps_max"]
    log.info("main comparison (eps_max %.4g) ...", eps_max)
    report["main"] = main_comparison(w, config, eps_max)
    if config.scale_e or config.scale_n:
        log.info("scaling ...")
        report["scale_e"], report["scale_n"] = scaling(w, config, eps_max)
    if config.breakdown:
        log.info("attack step ...")
        report["breakdown"] = step_breakdown(w, config, eps_max)
    if config.layers:
        log.info("layers ...")
        report["layers"] = layer_breakdown(w, config, report["peak"]["peak"], layer_variants)
    if config.memory:
        log.info("memory ...")
        report["memory"] = memory_section(config, eps_max)
    report["targets"] = check_targets(report, config)
    report["env"]["load_end"] = load()
    return report


def write_outputs(text: str, report: Mapping[str, Any], *, markdown_out: str | None = None,
                  json_out: str | None = None) -> None:
    """Writes the Markdown and the JSON report atomically (parent directories created)."""
    for path, write in ((markdown_out, lambda p: atomic_write_text(p, text)),
                        (json_out, lambda p: atomic_write_json(p, report))):
        if path:
            pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
            write(path)
