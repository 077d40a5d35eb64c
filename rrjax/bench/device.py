"""The accelerator check: one command that, on a GPU or TPU, measures rrjax's ε grid against its
own per-ε loop (float32 and bfloat16, against the device's measured matmul peak) and runs a
small sweep (``experiments/sweep.py`` on the synthetic data with the shipped checkpoints), and
writes ONE Markdown table named after the device (``make accelerator-check``).

The sweep runs first, in its own process, before this process starts a JAX backend: a TPU
belongs to one process at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import pathlib
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax.tree_util import Partial

from rrjax.bench.config import BenchConfig
from rrjax.bench.contenders import (attack_eps, auto_eps_max, executed_steps, make_runner, outputs_numpy, ra_match,
                                    robust_accuracy, warmup_for)
from rrjax.bench.measure import matmul_gflops, median, time_runner
from rrjax.bench.memory import child_env
from rrjax.bench.render import md_table
from rrjax.bench.run import environment, write_outputs
from rrjax.bench.workload import Workload, build_workload

__all__ = ["AcceleratorConfig", "QUICK_ACCELERATOR", "device_file_name", "run_sweep_check", "device_benchmark",
           "render_table", "accelerator_check", "TABLE_HEADER"]

log = logging.getLogger("rrjax.bench")

TABLE_HEADER = ("section", "model", "dtype", "attack", "contender", "N", "E", "seconds", "samples·ε/s", "GFLOP/s",
                "% of device peak", "note")


@dataclasses.dataclass(frozen=True)
class AcceleratorConfig:
    """The accelerator check (defaults: the ~8-minute run on one GPU/TPU).

    Attributes:
      models, image_size: detectors of the device benchmark and their input side.
      n, eps_count, pgd_steps, repeats: as in :class:`~rrjax.bench.config.BenchConfig`.
      eps_batch_size: ε values the PGD grid vectorises at once (one Xception step at 256 px
        needs ~123 MB per sample: E·N = 512 at once ~63 GB, groups of 4 ~16 GB; BUILD_NOTES.md).
      dtypes: the detector's compute dtypes.
      matmul_size: side of the square matmul that measures the device's peak.
      sweep_checkpoints, sweep_samples, sweep_attacks, sweep_eps: the small sweep.
      seed: weights, inputs, attack keys.
    """

    models: tuple[str, ...] = ("meso4", "xception")
    image_size: int = 256
    n: int = 32
    eps_count: int = 16
    pgd_steps: int = 10
    repeats: int = 3
    eps_batch_size: int | None = 4
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    matmul_size: int = 8192
    sweep_checkpoints: tuple[str, ...] = ("checkpoints/meso4", "checkpoints/meso_inception4")
    sweep_samples: int = 64
    sweep_attacks: str = "fgsm,pgd(steps=10)"
    sweep_eps: tuple[float, ...] = (0.0, 0.002, 0.008, 0.032)
    seed: int = 0


# ``--quick``: seconds on a CPU, so the suite runs the whole path.
QUICK_ACCELERATOR = AcceleratorConfig(
    models=("meso4",), image_size=32, n=2, eps_count=2, pgd_steps=1, repeats=1, eps_batch_size=None,
    matmul_size=256, sweep_checkpoints=("checkpoints/meso4",), sweep_samples=4, sweep_attacks="fgsm",
    sweep_eps=(0.0, 0.01),
)


def device_file_name(device_kind: str) -> str:
    """A file-name stem for a device kind (``"NVIDIA H200"`` -> ``"NVIDIA_H200"``)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", device_kind).strip("_") or "device"


def run_sweep_check(cfg: AcceleratorConfig, sweep_script: str | pathlib.Path, work_dir: str | pathlib.Path) -> dict:
    """Runs ``experiments/sweep.py`` on a fresh synthetic test split in ``work_dir``, from the
    repository root (the sweep script's parent's parent: checkpoint paths are relative to it);
    returns its wall time and summary groups (``{"seconds", "command", "groups"}``).

    Raises:
      RuntimeError: the sweep failed (its stderr tail is in the message).
    """
    work = pathlib.Path(work_dir).resolve()
    argv = [sys.executable, str(sweep_script), f"--models={','.join(cfg.sweep_checkpoints)}",
            "--dataset=synthetic_images", "--dataset_config=image_size=64", "--dataset_config=train_size=0",
            "--dataset_config=validation_size=0", f"--dataset_config=test_size={cfg.sweep_samples}",
            f"--num_samples={cfg.sweep_samples}", f"--attacks={cfg.sweep_attacks}",
            f"--eps={','.join(f'{e:g}' for e in cfg.sweep_eps)}", "--tolerance=0:1:5",
            f"--out_dir={work / 'sweep'}", f"--data_dir={work / 'data'}", "--nofigures", "--noprogress"]
    t0 = time.perf_counter()
    root = pathlib.Path(sweep_script).resolve().parents[1]
    proc = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=root, env=child_env())
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"the sweep failed ({' '.join(argv)}):\n{proc.stderr[-3000:]}")
    summary = json.loads((work / "sweep" / "summary.json").read_text())
    return {"seconds": seconds, "command": " ".join(argv[1:]), "groups": summary["groups"]}


def _bf16_apply(detector: Any, offset: float, variables: Any, x: jax.Array) -> jax.Array:
    v16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), variables)
    return detector.module.apply(v16, x.astype(jnp.bfloat16), train=False).astype(jnp.float32) + offset


def _with_dtype(w: Workload, dtype: str) -> Workload:
    """``w`` with its detector computing in ``dtype`` (weights and inputs cast; logits float32)."""
    if dtype == "float32":
        return w
    if dtype != "bfloat16":
        raise ValueError(f"dtype={dtype!r}; expected 'float32' or 'bfloat16'")
    return dataclasses.replace(w, logits_fn=Partial(functools.partial(_bf16_apply, w.detector, w.offset), w.variables))


def _attack_rows(w: Workload, bc: BenchConfig, dtype: str, eps_max: float, peak: float, ebs: int | None) -> list[dict]:
    rows = []
    for attack in ("fgsm", "pgd"):
        eps = attack_eps(attack, bc.eps_count, bc, eps_max)
        res = {}
        for contender in ("rrjax-grid", "rrjax-per-eps"):
            run = make_runner(contender, attack, w, eps, bc.n, bc, ebs)
            out, first, ts = time_runner(run, bc.repeats, warmup_for(contender, attack, w, eps, bc.n, bc))
            t = median(ts) if ts else first
            work = executed_steps(attack, contender, bc.n, len(eps), bc.steps(attack)) * w.flops_per_step
            res[contender] = dict(section="attack", model=bc.model, dtype=dtype, attack=attack, contender=contender,
                                  N=bc.n, E=len(eps), seconds=t, gflops=work / t / 1e9,
                                  pct_peak=100 * work / t / 1e9 / peak,
                                  ra=robust_accuracy(w, outputs_numpy(contender, out), bc.n))
            log.info("  %s %s %s %s: %.3fs", bc.model, dtype, attack, contender, t)
        ok, diff = ra_match(res["rrjax-grid"]["ra"], res["rrjax-per-eps"]["ra"], bc.n)
        res["rrjax-grid"]["note"] = f"RA equivalent to per-ε: {'PASS' if ok else f'FAIL ({diff})'}"
        res["rrjax-per-eps"]["note"] = "ref"
        rows += res.values()
    return rows


def device_benchmark(cfg: AcceleratorConfig, *, unroll: bool) -> dict[str, Any]:
    """rrjax grid vs per-ε (FGSM, PGD) per model and dtype on ``jax.devices()[0]``, with the
    device's matmul peak per dtype."""
    dev = jax.devices()[0]
    peaks = {d: matmul_gflops(cfg.matmul_size, d) for d in cfg.dtypes}
    rows = [dict(section="matmul peak", model="", dtype=d, attack="", contender=f"{cfg.matmul_size}² matmul",
                 gflops=g, pct_peak=100.0) for d, g in peaks.items()]
    for model in cfg.models:
        bc = BenchConfig(model=model, image_size=cfg.image_size, n=cfg.n, eps_count=cfg.eps_count,
                         pgd_steps=cfg.pgd_steps, repeats=cfg.repeats, unroll=unroll, scale_e_n=cfg.n, scale_n=(),
                         seed=cfg.seed)
        w = build_workload(bc, with_torch=False)
        eps_max, _ = auto_eps_max(w, bc)
        for dtype in cfg.dtypes:
            rows += _attack_rows(_with_dtype(w, dtype), bc, dtype, eps_max, peaks[dtype], cfg.eps_batch_size)
    return dict(device=dev.device_kind, platform=dev.platform, peaks=peaks, rows=rows)


def _sweep_rows(sweep: dict) -> list[list[Any]]:
    rows = []
    for i, g in enumerate(sweep["groups"]):
        rows.append(["sweep", g["model"], "float32", g["attack"], "experiments/sweep.py", g["n"], len(g["eps"]),
                     sweep["seconds"] if i == 0 else None, None, None, None,
                     ("whole sweep, data included; " if i == 0 else "") + "RA at ε "
                     + ", ".join(f"{e:g}: {r:.2f}" for e, r in zip(g["eps"], g["ra"]))])
    return rows


def render_table(bench: dict, sweep: dict, header_lines: Sequence[str]) -> str:
    """The one Markdown table (matmul peaks, attacks, sweep) under a few header lines."""
    rows = [[r["section"], r["model"], r["dtype"], r["attack"], r["contender"], r.get("N"), r.get("E"),
             r.get("seconds"), r["N"] * r["E"] / r["seconds"] if "seconds" in r else None, r["gflops"],
             r["pct_peak"], r.get("note", "")] for r in bench["rows"]]
    return "\n\n".join([*header_lines, md_table(TABLE_HEADER, rows + _sweep_rows(sweep))]) + "\n"


def accelerator_check(cfg: AcceleratorConfig, *, sweep_script: str | pathlib.Path, out_dir: str | pathlib.Path,
                      command: str) -> tuple[pathlib.Path, dict[str, Any]]:
    """Runs the sweep, then the device benchmark; writes ``<out_dir>/<device>.md`` (one table)
    and ``<device>.json``. Returns the Markdown path and the report."""
    with tempfile.TemporaryDirectory() as work:
        log.info("sweep ...")
        sweep = run_sweep_check(cfg, sweep_script, work)
    env = environment(command, with_torch=False)
    unroll = jax.default_backend() == "cpu"  # XLA:CPU's slow in-loop convolutions only
    log.info("device benchmark on %s ...", jax.devices()[0].device_kind)
    bench = device_benchmark(cfg, unroll=unroll)
    header = [f"### Accelerator check: {bench['device']} ({bench['platform']}), {env['date']}",
              f"Command: `{command}`. Versions: {env['versions']}. Detectors at {cfg.image_size} px with random "
              f"calibrated weights; N={cfg.n}, E={cfg.eps_count}, PGD-{cfg.pgd_steps} (PGD grid in groups of "
              f"{cfg.eps_batch_size or 'all'} ε); unroll={unroll}; GFLOP/s from XLA's cost analysis of executed "
              f"attack steps; % of the device's measured {cfg.matmul_size}² matmul peak in the same dtype. "
              f"Sweep: `{sweep['command']}`."]
    report = dict(env=env, config=dataclasses.asdict(cfg), bench=bench, sweep=sweep)
    path = pathlib.Path(out_dir) / f"{device_file_name(bench['device'])}.md"
    write_outputs(render_table(bench, sweep, header), report, markdown_out=str(path),
                  json_out=str(path.with_suffix(".json")))
    return path, report
