"""The benchmark's Markdown report, rendered from the report dict alone."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rrjax.bench.config import BenchConfig
from rrjax.bench.contenders import executed_work

__all__ = ["md_table", "render", "LAYER_DETAIL_ROWS"]

LAYER_DETAIL_ROWS = 15  # the slowest distinct layers listed under the per-type table


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table; floats with 3 significant digits (thousands separated from 1000 on)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _header(report: dict, config: BenchConfig) -> list[str]:
    env, peak = report["env"], report["peak"]
    twin = "PyTorch twin via rrjax.models.to_torch" if config.has_torch_twin else "rrjax-only: no PyTorch twin"
    peaks = ", ".join(f"{'JAX' if k == 'jax' else 'PyTorch'} {v:.1f} GFLOP/s" for k, v in peak.items() if k != "peak")
    return [
        f"### Run {env['date']} — {env['command']}",
        f"Machine: {env['machine']}; load average at start {env['load_start']:.2f}, end {env.get('load_end', 0):.2f}. "
        f"Versions: {env['versions']}. XLA_FLAGS={env['xla_flags'] or '(none)'}; rrjax PGD/CW unroll={config.unroll}.",
        f"Workload: {config.model} {config.image_size}px ({twin}; random weights, BatchNorm statistics calibrated), "
        f"N={config.n}, E={config.eps_count}, L∞ ε in (0, {report['eps_max']:.4g}] ({report['eps_max_source']}), "
        f"PGD-{config.pgd_steps} (step 2.5ε/{config.pgd_steps}, no random start), CW-L2 c={config.cw_c} "
        f"lr={config.cw_lr} steps={config.cw_steps}, L2 ε in (0, {config.cw_eps_max:g}]; labels = clean predictions; "
        f"logits shifted by +{report['offset']:g} in both frameworks.",
        f"Measured matmul peak (f32): {peaks}. XLA cost analysis: one attack step (forward + input gradient) = "
        f"{report['flops_per_step'] / 1e6:.1f} MFLOP per sample.",
    ]


def _main(report: dict, config: BenchConfig) -> list[str]:
    main = report.get("main", [])
    if not main:
        return []
    peak, flops = report["peak"]["peak"], report["flops_per_step"]
    by = {(r["attack"], r["contender"]): r for r in main}
    rows = []
    for r in main:
        done, gflops = executed_work(r, config, flops)
        t = r["median_s"]
        ref = by.get((r["attack"], "torchattacks"))
        speedup = ref["median_s"] / t if ref else None
        eq = "ref" if r["contender"] == config.reference else (
            "PASS" if r["equivalent"] else f"FAIL ({r['max_ra_diff_samples']})")
        rows.append([r["attack"], r["contender"], t, config.n * config.eps_count / t, done / t, speedup, gflops,
                     100 * gflops / peak, f"{r['load']:.1f}", eq])
    parts = [md_table(["attack", "contender", "median s", "samples·ε/s", "attack-steps/s (executed)",
                       "speed-up vs torch", "GFLOP/s", "% of peak", "load", "RA equivalent"], rows)]
    ra_rows = [[r["attack"], r["contender"], " ".join(f"{v:.2f}" for v in r["ra"])] for r in main]
    parts.append("Robust accuracy per ε (equivalence check):\n\n"
                 + md_table(["attack", "contender", "RA(ε₁…ε_E)"], ra_rows))
    cw_t = by.get(("cw", "torchattacks"))
    if cw_t is not None:
        note = f"torchattacks CW ran {cw_t.get('cw_steps_run')} of {config.cw_steps} steps (its batch-level early stop)."
        g = by[("cw", "rrjax-grid")]
        if "equivalent_at_torch_steps" in g:
            note += (f" rrjax CW with the same {cw_t.get('cw_steps_run')} steps: RA equivalent "
                     f"{'PASS' if g['equivalent_at_torch_steps'] else 'FAIL'} "
                     f"(max diff {g['max_ra_diff_at_torch_steps']} samples).")
        parts.append(note)
    return parts


def _scaling(report: dict) -> list[str]:
    parts = []
    e_rows = report.get("scale_e", [])
    if e_rows:
        rows = []
        for r in e_rows:
            prev = [q for q in e_rows if q["attack"] == r["attack"] and q["contender"] == r["contender"]
                    and q["E"] * 4 == r["E"]]
            ratio = r["median_s"] / prev[0]["median_s"] if prev else math.nan
            rows.append([r["attack"], r["contender"], r["E"], r["N"], r["median_s"], r["N"] * r["E"] / r["median_s"],
                         "" if math.isnan(ratio) else f"{ratio:.2f}", f"{r['load']:.1f}"])
        parts.append("Scaling in E:\n\n" + md_table(["attack", "contender", "E", "N", "median s", "samples·ε/s",
                                                    "t(E)/t(E/4)", "load"], rows))
    n_rows = report.get("scale_n", [])
    if n_rows:
        rows = [[r["attack"], r["contender"], r["E"], r["N"], r["median_s"], r["N"] * r["E"] / r["median_s"],
                 f"{r['load']:.1f}"] for r in n_rows]
        parts.append("Scaling in N:\n\n" + md_table(["attack", "contender", "E", "N", "median s", "samples·ε/s",
                                                    "load"], rows))
    return parts


def _steps(report: dict) -> list[str]:
    bd = report.get("breakdown", [])
    if not bd:
        return []
    flops, peak = report["flops_per_step"], report["peak"]["peak"]
    rows = [[r["what"][len("step: "):], r["batch"], r["ms_per_sample"], flops / r["ms_per_sample"] / 1e6,
             100 * flops / r["ms_per_sample"] / 1e6 / peak, f"{r['load']:.1f}"] for r in bd]
    return ["One attack step (CE forward + input gradient), per sample:\n\n"
            + md_table(["implementation", "batch", "ms/sample", "GFLOP/s", "% of peak", "load"], rows)]


def _layers(report: dict, config: BenchConfig) -> list[str]:
    lb = report.get("layers")
    if not lb:
        return []
    labels = lb["labels"]
    rows = [[k["kind"], k["instances"], *[k["xla_ms"][x] for x in labels], k["torch_ms"],
             *[k["xla_gflops"][x] for x in labels], k["torch_gflops"], *[k["xla_pct_peak"][x] for x in labels],
             k["torch_pct_peak"]] for k in lb["kinds"]]
    header = (["layer type", "instances"] + [f"{x} ms" for x in labels] + ["PyTorch ms"]
              + [f"{x} GFLOP/s" for x in labels] + ["PyTorch GFLOP/s"]
              + [f"{x} % of peak" for x in labels] + ["PyTorch % of peak"])
    batch = config.n * (config.num_frames if config.model.endswith("_video") else 1)
    parts = [f"{config.model}'s layers alone, forward + input gradient, batch {batch}, summed over every instance "
             "(each layer timed separately: no fusion across layers):\n\n" + md_table(header, rows)]
    slow = sorted(lb["rows"], key=lambda r: -r["xla_ms"][labels[0]] * r["count"])[:LAYER_DETAIL_ROWS]
    detail = [[r["kind"], r["name"], r["count"], "×".join(map(str, r["shape"])),
               *[r["xla_ms"][x] for x in labels], r["torch_ms"],
               r["flops"] / r["xla_ms"][labels[0]] / 1e6 if r["xla_ms"][labels[0]] > 0 else 0.0] for r in slow]
    parts.append(f"The {len(slow)} costliest distinct layers (ms per instance):\n\n"
                 + md_table(["type", "first instance", "count", "input", *[f"{x} ms" for x in labels], "PyTorch ms",
                             f"{labels[0]} GFLOP/s"], detail))
    return parts


def _memory(report: dict, config: BenchConfig) -> list[str]:
    mem = report.get("memory", [])
    if not mem:
        return []
    rows = [[r["attack"], r["contender"], r["eps_batch_size"] or "all", r["before_mb"], r["peak_mb"], r["delta_mb"],
             r["maxrss_mb"]] for r in mem]
    return [f"Peak memory (N={config.n}, E={config.eps_count}; each contender in a fresh process; resident memory "
            "before and at the peak of a warm run, sampled every 2 ms; max RSS of the process including compilation):\n\n"
            + md_table(["attack", "contender", "eps_batch_size", "RSS before MB", "peak MB", "run adds MB",
                        "process max RSS MB"], rows)]


def render(report: dict[str, Any], config: BenchConfig) -> str:
    """The whole report as Markdown: header, main comparison, RA per ε, scaling, attack step,
    per-layer breakdown, memory, targets (only the sections the run measured)."""
    parts = _header(report, config) + _main(report, config) + _scaling(report) + _steps(report)
    parts += _layers(report, config) + _memory(report, config)
    if report.get("targets"):
        parts.append("Targets:\n\n" + md_table(["target", "measured", "result"], report["targets"]))
    return "\n\n".join(parts) + "\n"
