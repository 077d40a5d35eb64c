"""What one attack step costs: the CE loss's forward pass and input gradient per framework, at the
batch a per-ε loop runs (N) and the one the grid program runs (E·N), and rrjax's PGD with its
step loop compiled as a while loop against unrolled."""

from __future__ import annotations

import logging
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rrjax import attacks
from rrjax.bench.config import PGD_REL_STEP, BenchConfig
from rrjax.bench.measure import load, median, time_runner
from rrjax.bench.workload import Workload, to_torch_layout

__all__ = ["step_breakdown", "GRID_BATCH_CAP"]

log = logging.getLogger("rrjax.bench")

# The grid program's batch is E·N (or eps_batch_size·N); capped at 512, past which the
# per-sample cost no longer changes, to keep this section short.
GRID_BATCH_CAP = 512


def _ce_input_grad(fn: Any, xa: jax.Array, ya: jax.Array) -> jax.Array:
    return jax.grad(lambda z: -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(fn(z)), ya[:, None], axis=1)))(xa)


def _torch_step(w: Workload, idx: np.ndarray):
    import torch

    xt, yt = to_torch_layout(w.x[idx]), torch.from_numpy(w.y[idx].astype("int64"))

    def step():
        xa = xt.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(w.torch_model(xa), yt, reduction="sum")
        return torch.autograd.grad(loss, xa)[0]

    return step


def step_breakdown(w: Workload, config: BenchConfig, eps_max: float) -> list[dict[str, Any]]:
    """Rows ``{what, batch, ms_per_sample, load}``: ``step: rrjax`` / ``step: torch`` at batches N
    and E·N (capped), and ``step: rrjax PGD-k, while loop`` / ``unrolled`` at batch N."""
    rows = []
    n = config.n
    big = min(n * (config.eps_batch_size or config.eps_count), max(n, GRID_BATCH_CAP))
    reps = max(min(config.repeats, 2), 1)
    step = jax.jit(_ce_input_grad)
    for batch in sorted({n, big}):
        idx = np.arange(batch) % len(w.x)
        xb, yb = jnp.asarray(w.x[idx]), jnp.asarray(w.y[idx])
        _, _, ts = time_runner(lambda: step(w.logits_fn, xb, yb).block_until_ready(), reps)
        rows.append(dict(what="step: rrjax", batch=batch, ms_per_sample=1e3 * median(ts) / batch, load=load()))
        if w.torch_model is not None:
            _, _, ts = time_runner(_torch_step(w, idx), reps)
            rows.append(dict(what="step: torch", batch=batch, ms_per_sample=1e3 * median(ts) / batch, load=load()))
        log.info("  breakdown batch %d: %s", batch,
                 ", ".join(f"{r['what']} {r['ms_per_sample']:.2f}" for r in rows if r["batch"] == batch))
    return rows + _loop_vs_unrolled(w, config, eps_max)


def _loop_vs_unrolled(w: Workload, config: BenchConfig, eps_max: float) -> list[dict[str, Any]]:
    """rrjax PGD (one ε, N samples) with its step loop compiled as a while loop vs unrolled."""
    n, steps = config.n, config.pgd_steps
    x, y = jnp.asarray(w.x[:n]), jnp.asarray(w.y[:n])
    definition = attacks.get_def("pgd")
    keys = attacks.sample_keys(jax.random.key(config.seed), n)
    eps = np.asarray([eps_max], np.float32)
    rows = []
    for unroll in (False, True):
        hp = definition.resolve(steps=steps, rel_step_size=PGD_REL_STEP / steps, random_start=False, unroll=unroll)
        _, _, ts = time_runner(lambda hp=hp: definition.run(w.logits_fn, x, y, eps, keys, **hp).block_until_ready(), 1)
        rows.append(dict(what=f"step: rrjax PGD-{steps}, {'unrolled' if unroll else 'while loop'}", batch=n,
                         ms_per_sample=1e3 * median(ts) / (n * steps), load=load()))
    log.info("  breakdown PGD loop vs unrolled: %.2f vs %.2f ms/sample-step", rows[0]["ms_per_sample"],
             rows[1]["ms_per_sample"])
    return rows
