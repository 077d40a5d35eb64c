"""Peak resident memory per contender, each in a fresh process.

:func:`memory_section` starts ``python -m rrjax.bench._memory_worker '<json spec>'`` once per contender;
the worker builds the workload, runs the contender once (compilation and first-touch
allocations), then samples its resident memory every 2 ms during a second, warm run and prints
one ``MEMORY {json}`` line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import subprocess
import sys
from typing import Any

from rrjax.bench.config import BenchConfig
from rrjax.bench.contenders import attack_eps, make_runner
from rrjax.bench.measure import maxrss_mb, peak_rss_during
from rrjax.bench.workload import build_workload

__all__ = ["memory_section", "memory_worker", "memory_configs", "RESULT_PREFIX"]

log = logging.getLogger("rrjax.bench")
RESULT_PREFIX = "MEMORY "


def memory_configs(config: BenchConfig) -> list[tuple[str, str, int | None]]:
    """``(attack, contender, eps_batch_size)`` of each measured process: FGSM and PGD per
    contender, and rrjax's PGD grid in groups of 4 ε (the smoke run: the PGD grid alone)."""
    if config.quick:
        return [("pgd", "rrjax-grid", None)]
    out = [(a, c, config.eps_batch_size) for a in ("fgsm", "pgd") for c in config.contenders]
    return out + [("pgd", "rrjax-grid", 4 if config.eps_count > 4 else 1)]


def _spec(config: BenchConfig, attack: str, contender: str, ebs: int | None, eps_max: float) -> str:
    # PGD with one step: the step loop carries the same arrays whatever its length (and the
    # unrolled program, under the memory-optimised scheduler, what the loop needs).
    cfg = dataclasses.asdict(dataclasses.replace(config, pgd_steps=1))
    return json.dumps(dict(config=cfg, attack=attack, contender=contender, eps_batch_size=ebs, eps_max=eps_max))


def child_env() -> dict[str, str]:
    """This process's environment (``XLA_FLAGS`` included) with the rrjax it imported first on
    ``PYTHONPATH``, so that a child process runs the same code."""
    root = str(pathlib.Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def memory_section(config: BenchConfig, eps_max: float) -> list[dict[str, Any]]:
    """One fresh process per :func:`memory_configs` entry; rows with ``before_mb``, ``peak_mb``,
    ``delta_mb`` (peak − before of the warm run) and ``maxrss_mb`` (the process's peak).

    Raises:
      RuntimeError: a worker failed (its stderr tail is in the message).
    """
    env = child_env()
    rows = []
    for attack, contender, ebs in memory_configs(config):
        argv = [sys.executable, "-m", "rrjax.bench._memory_worker", _spec(config, attack, contender, ebs, eps_max)]
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
        if proc.returncode != 0 or not line:
            raise RuntimeError(f"memory worker {attack}/{contender} failed:\n{proc.stderr[-3000:]}")
        res = json.loads(line[-1][len(RESULT_PREFIX):])
        res.update(attack=attack, contender=contender, eps_batch_size=ebs)
        rows.append(res)
        log.info("  memory %s %s ebs=%s: +%.0f MB", attack, contender, ebs, res["delta_mb"])
    return rows


def memory_worker(spec: dict[str, Any]) -> dict[str, float]:
    """Builds the workload of ``spec`` and measures one warm run of its contender."""
    cfg = BenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec["config"].items()})
    attack, contender = spec["attack"], spec["contender"]
    w = build_workload(cfg, with_torch=contender == "torchattacks")
    eps = attack_eps(attack, cfg.eps_count, cfg, spec["eps_max"])
    run = make_runner(contender, attack, w, eps, cfg.n, cfg, spec["eps_batch_size"])
    run()  # compilation and first-touch allocations happen here, outside the measured run
    before, peak = peak_rss_during(run)
    return dict(before_mb=before, peak_mb=peak, delta_mb=peak - before, maxrss_mb=maxrss_mb())

