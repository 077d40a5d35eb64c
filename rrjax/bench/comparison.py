"""The main comparison (every contender on the same ε grid, equivalence first) and the scaling
tables (time against the grid length E and the sample count N)."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from rrjax.bench.config import BenchConfig
from rrjax.bench.contenders import (TorchCallCounter, attack_eps, make_runner, outputs_numpy, ra_match,
                                    robust_accuracy, warmup_for)
from rrjax.bench.measure import load, median, time_runner
from rrjax.bench.workload import Workload

__all__ = ["main_comparison", "scaling"]

log = logging.getLogger("rrjax.bench")


def _contenders(attack: str, config: BenchConfig) -> list[str]:
    return [c for c in config.contenders if not (attack == "cw" and c == "rrjax-per-eps" and not config.cw_per_eps)]


def _time_contender(contender: str, attack: str, w: Workload, eps: list[float], config: BenchConfig,
                    counter: TorchCallCounter | None) -> dict[str, Any]:
    n = config.n
    load0 = load()
    if counter is not None:
        counter.calls = 0
    run = make_runner(contender, attack, w, eps, n, config, config.eps_batch_size)
    out, first, times = time_runner(run, config.repeats, warmup_for(contender, attack, w, eps, n, config))
    res = dict(attack=attack, contender=contender, first_s=first, times_s=times,
               median_s=median(times) if times else first, load=(load0 + load()) / 2,
               ra=robust_accuracy(w, outputs_numpy(contender, out), n))
    if counter is not None and contender == "torchattacks":
        # The warm-up runs the same attack once (CW is ε-independent), as does every timed run.
        res["torch_forward_calls_per_run"] = counter.calls / (1 + len(times))
    log.info("  %-5s %-14s warm-up %8.2fs  median %8.2fs  load %.1f", attack, contender, first,
             res["median_s"], res["load"])
    return res


def main_comparison(w: Workload, config: BenchConfig, eps_max: float) -> list[dict[str, Any]]:
    """Every contender on the same N samples and E budgets: warm-up run (checked for RA
    equivalence with the reference contender, within one sample at every ε), then timed runs.

    Returns:
      One row per (attack, contender): times, median, load, RA per ε, ``equivalent`` and
      ``max_ra_diff_samples`` against ``config.reference``.
    """
    rows = []
    for attack in config.attacks:
        eps = attack_eps(attack, config.eps_count, config, eps_max)
        counter = TorchCallCounter(w.torch_model) if attack == "cw" and w.torch_model is not None else None
        results = {c: _time_contender(c, attack, w, eps, config, counter) for c in _contenders(attack, config)}
        ref = results[config.reference]
        for res in results.values():
            res["equivalent"], res["max_ra_diff_samples"] = ra_match(res["ra"], ref["ra"], config.n)
        if attack == "cw" and "torchattacks" in results:
            _cw_equivalence_note(w, results, eps, config)
        rows.extend(results.values())
    return rows


def _cw_equivalence_note(w: Workload, results: dict, eps: list[float], config: BenchConfig) -> None:
    """torchattacks' CW stops the whole batch when the summed cost rises at a check step; when it
    did, rrjax with the same number of steps (no abort) is the equivalent computation."""
    calls = results["torchattacks"].get("torch_forward_calls_per_run", config.cw_steps)
    ran = int(round(calls))
    results["torchattacks"]["cw_steps_run"] = ran
    if 0 < ran < config.cw_steps:
        same = dataclasses.replace(config, cw_steps=ran)
        out = make_runner("rrjax-grid", "cw", w, eps, config.n, same)()
        ra = robust_accuracy(w, outputs_numpy("rrjax-grid", out), config.n)
        ok, diff = ra_match(ra, results["torchattacks"]["ra"], config.n)
        results["rrjax-grid"]["equivalent_at_torch_steps"] = ok
        results["rrjax-grid"]["max_ra_diff_at_torch_steps"] = diff


def _scale_cell(contender: str, attack: str, w: Workload, eps: list[float], n: int, config: BenchConfig) -> float:
    run = make_runner(contender, attack, w, eps, n, config, config.eps_batch_size)
    _, first, times = time_runner(run, config.scale_repeats, warmup_for(contender, attack, w, eps, n, config))
    return median(times) if times else first


def scaling(w: Workload, config: BenchConfig, eps_max: float) -> tuple[list[dict], list[dict]]:
    """rrjax's grid (and torchattacks' PGD loop) against E at fixed N, and against N at fixed E.

    Returns:
      ``(e_rows, n_rows)``: rows with attack, contender, E, N, median seconds and load.
    """
    e_rows, n_rows = [], []
    torch_ok = config.scale_torch and w.torch_model is not None
    for attack in ("fgsm", "pgd"):
        for count in config.scale_e:
            eps = attack_eps(attack, count, config, eps_max)
            for contender in ["rrjax-grid"] + (["torchattacks"] if torch_ok and attack == "pgd" else []):
                t = _scale_cell(contender, attack, w, eps, config.scale_e_n, config)
                e_rows.append(dict(attack=attack, contender=contender, E=count, N=config.scale_e_n, median_s=t,
                                   load=load()))
                log.info("  scale-E %s %s E=%d: %.2fs", attack, contender, count, t)
    eps = attack_eps("pgd", config.scale_n_e, config, eps_max)
    for count_n in config.scale_n:
        for contender in ["rrjax-grid"] + (["torchattacks"] if torch_ok else []):
            t = _scale_cell(contender, "pgd", w, eps, count_n, config)
            n_rows.append(dict(attack="pgd", contender=contender, E=config.scale_n_e, N=count_n, median_s=t,
                               load=load()))
            log.info("  scale-N pgd %s N=%d: %.2fs", contender, count_n, t)
    return e_rows, n_rows
