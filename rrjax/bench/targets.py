"""The targets, checked from one run's own measurements. A target that is missed says FAIL; one
whose measurement this run did not take says NOT RUN; one that cannot apply says n/a. Every
target that applies to the run's detector is listed."""

from __future__ import annotations

from typing import Any

from rrjax.bench.config import IMAGE_MODELS, BenchConfig
from rrjax.bench.contenders import executed_work

__all__ = ["FGSM_SPEEDUP", "PGD_SPEEDUP", "STEP_PEAK_SHARE", "SCALING_RATIO", "check_targets"]

FGSM_SPEEDUP = 8.0  # every detector
PGD_SPEEDUP = {"meso4": 2.0}  # other image detectors: faster than torchattacks (> 1)
STEP_PEAK_SHARE = {"xception": 40.0}  # % of the measured matmul peak, rrjax's PGD grid
SCALING_RATIO = 4.4  # rrjax PGD time(E) / time(E/4)


def _speedup(by: dict, attack: str) -> tuple[str, bool] | None:
    grid, ref = by.get((attack, "rrjax-grid")), by.get((attack, "torchattacks"))
    if grid is None or ref is None:
        return None
    s = ref["median_s"] / grid["median_s"]
    note = "" if grid["equivalent"] else " (RA not equivalent)"
    return f"{s:.2f}×{note}", grid["equivalent"] and s


def _row(target: str, measured: tuple[str, Any] | None, passes, config: BenchConfig, attack: str) -> list[str]:
    if not config.has_torch_twin and "torchattacks" in target:
        return [target, f"n/a: {config.model} is rrjax-only (no PyTorch twin)", "n/a"]
    if measured is None:
        return [target, f"not measured ({attack} not in --attacks)", "NOT RUN"]
    text, value = measured
    return [target, text, "PASS" if value is not False and passes(value) else "FAIL"]


def _step_share(by: dict, config: BenchConfig, report: dict) -> tuple[str, Any] | None:
    grid = by.get(("pgd", "rrjax-grid"))
    if grid is None:
        return None
    _, gflops = executed_work(grid, config, report["flops_per_step"])
    pct = 100 * gflops / report["peak"]["peak"]
    return f"{pct:.1f}% ({gflops:.1f} of {report['peak']['peak']:.1f} GFLOP/s)", pct


def _scaling(report: dict) -> list[str]:
    e = {r["E"]: r["median_s"] for r in report.get("scale_e", [])
         if r["attack"] == "pgd" and r["contender"] == "rrjax-grid"}
    pairs = [hi for hi in e if hi // 4 in e and hi % 4 == 0]
    if not pairs:
        return [f"rrjax PGD time(E) / time(E/4) ≤ {SCALING_RATIO}", "not measured (--scale_e has no E and E/4)",
                "NOT RUN"]
    hi = max(pairs)
    ratio = e[hi] / e[hi // 4]
    return [f"rrjax PGD time(E={hi}) / time(E={hi // 4}) ≤ {SCALING_RATIO}", f"{ratio:.2f}",
            "PASS" if ratio <= SCALING_RATIO else "FAIL"]


def check_targets(report: dict[str, Any], config: BenchConfig) -> list[list[str]]:
    """``[target, measured, result]`` rows for ``config.model`` from ``report``'s main comparison,
    matmul peak and ε-scaling table. A speed-up counts only when rrjax's grid was RA-equivalent."""
    by = {(r["attack"], r["contender"]): r for r in report.get("main", [])}
    e, k, model = config.eps_count, config.pgd_steps, config.model
    out = [_row(f"FGSM over {e} ε ≥ {FGSM_SPEEDUP:g}× faster than torchattacks", _speedup(by, "fgsm"),
                lambda s: s >= FGSM_SPEEDUP, config, "fgsm")]
    if model in IMAGE_MODELS:
        need = PGD_SPEEDUP.get(model)
        text = f"≥ {need:g}× faster" if need else "faster"
        out.append(_row(f"PGD-{k} over {e} ε, {model}, N={config.n}: {text} than torchattacks", _speedup(by, "pgd"),
                        (lambda s: s >= need) if need else (lambda s: s > 1), config, "pgd"))
    if model in STEP_PEAK_SHARE:
        share = STEP_PEAK_SHARE[model]
        out.append(_row(f"rrjax {model} attack step (PGD grid) ≥ {share:g}% of the measured matmul peak",
                        _step_share(by, config, report), lambda p: p >= share, config, "pgd"))
    return out + [_scaling(report)]
