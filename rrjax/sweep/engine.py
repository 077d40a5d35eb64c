"""The engine: every pending (model, attack, ε) cell over a sample set, sharded, chunked, resumable.

For each model the clean probabilities (and input-gradient health statistics) are computed once
per sample. For each attack, the pending ε values run as **one compiled program per sample
chunk**: the chunk's samples are sharded over all devices (``jax.sharding``, a 1-D ``"data"``
mesh; multi-host after ``jax.distributed.initialize()``), and the chunk size is planned from
XLA's memory analysis of the model's gradient (:mod:`rrjax.sweep.plan`). The hot path calls the
attack's jitted core (``AttackDef.run``) on inputs the sweep validated once.

Determinism: sample ``i`` of the split always uses ``fold_in(key(seed), i)``, and attacks draw
random starts in the unit ball scaled by ε, so a sample's result depends on neither the chunking,
the device count, nor which other ε values are pending. A killed sweep therefore resumes with
identical numbers: finished cells are skipped, finished chunks of unfinished cells are reused
(``partial/``), and the tables are rebuilt in a canonical order.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from rrjax import metrics
from rrjax import records as R
from rrjax.attacks import _common as C
from rrjax.attacks.registry import ATTACKS, get_def
from rrjax.sharding import agree, data_mesh, everywhere, is_writer, pad_batch, replicate, shard_rows, to_host
from rrjax.sweep import cells, ensembles
from rrjax.sweep.data import SweepData, to_float
from rrjax.sweep.outdir import check_out_dir
from rrjax.sweep.outdir import replace_models as replace_models_in
from rrjax.sweep.plan import balanced, per_sample_grad_bytes, plan_chunk
from rrjax.sweep.report import finalise
from rrjax.sweep.spec import AttackSpec, ModelEntry, SweepSettings

__all__ = ["run_sweep", "cell_ids", "with_sweep_shift_norm"]


def with_sweep_shift_norm(attacks: Sequence[AttackSpec], settings: SweepSettings) -> list[AttackSpec]:
    """The probability-shift loss maximises the change in the sweep's own RR norm (ensemble
    members included)."""
    def one(a: AttackSpec) -> AttackSpec:
        if a.members:
            return a.with_members(tuple((label, one(m)) for label, m in a.members))
        return a.with_params(shift_norm=settings.shift_norm) if a.kwargs.get("loss") == "prob_shift" else a

    return [one(a) for a in attacks]


def cell_ids(
    models: Sequence[ModelEntry], data: SweepData, attacks: Sequence[AttackSpec], settings: SweepSettings
) -> list[str]:
    """The ids of the cells a :func:`run_sweep` call with these arguments covers (finished or not):
    the records of *this* run in a directory that may hold other runs' cells too."""
    attacks = with_sweep_shift_norm(attacks, settings)
    every = ensembles.expand(attacks) + [a for a in attacks if a.members]
    return [cells.cell_id(m, data, a, float(e), settings)
            for m in models for a in every for e in cells.eps_grid(a, settings)]


@dataclasses.dataclass
class _Run:
    """What every step of one :func:`run_sweep` call shares."""

    out: pathlib.Path
    data: SweepData
    settings: SweepSettings
    mesh: Mesh
    sample_keys: np.ndarray  # uint32 key data, one key per sample: fold_in(key(seed), index)
    budget: float | None
    stop_after_chunks: int | None
    bar: Any = None
    chunks_run: int = 0
    grad_bytes: dict[str, float] = dataclasses.field(default_factory=dict)  # per model label

    @property
    def n_dev(self) -> int:
        return int(self.mesh.devices.size)

    @property
    def input_bytes(self) -> int:
        return 4 * int(np.prod(self.data.x.shape[1:]))

    def stopped(self) -> bool:
        return self.stop_after_chunks is not None and self.chunks_run >= self.stop_after_chunks


def run_sweep(
    models: Sequence[ModelEntry],
    data: SweepData,
    attacks: Sequence[AttackSpec],
    settings: SweepSettings,
    out_dir: str | pathlib.Path,
    *,
    progress: bool = True,
    stop_after_chunks: int | None = None,
    replace_models: Sequence[str] = (),
) -> pathlib.Path:
    """Runs every (model, attack, ε) cell not yet finished in ``out_dir``, then ``finalise``.

    Args:
      models: detectors to evaluate (labels must be distinct); each must accept ``data.x``.
      data: the samples (the same samples for every model, so comparisons are paired).
      attacks: attack configurations.
      settings: ε and tolerance grids and options.
      out_dir: the sweep directory (created; finished cells in it are kept and skipped).
      progress: show a tqdm bar (process 0 only).
      stop_after_chunks: stop (as if killed) after this many attack chunks; for tests.
      replace_models: labels whose results from *another* checkpoint in ``out_dir`` are deleted
        first (without it, such a label is refused: one label, one checkpoint per folder).

    Returns:
      ``out_dir`` as a path. Only process 0 writes files.

    Raises:
      ValueError: before anything is written: bad models/attacks, an unusable ``out_dir``, a
        label bound to another checkpoint, a memory budget that cannot hold one sample, or a
        model whose every output is NaN/inf.
    """
    requested = with_sweep_shift_norm(attacks, settings)
    attacks = ensembles.expand(requested)  # what runs: ensembles are built from their members' cells
    labels = [m.label for m in models]
    if not models or len(set(labels)) != len(labels):
        raise ValueError(f"models must be a non-empty list with distinct labels, got {labels}")
    if not attacks:
        raise ValueError(f"attacks is empty; expected at least one of {sorted(ATTACKS)}")
    for m in models:
        m.detector.check_input(np.zeros((1,) + data.x.shape[1:]))
    out = pathlib.Path(out_dir)
    check_out_dir(out, models, replace=replace_models)
    base_key = jax.random.key(settings.seed)
    keys = np.asarray(jax.random.key_data(
        jax.vmap(lambda i: jax.random.fold_in(base_key, i))(jnp.asarray(data.index, jnp.uint32))))
    run = _Run(out, data, settings, data_mesh(), keys,
               None if settings.memory_budget_mb is None else settings.memory_budget_mb * 2**20, stop_after_chunks)
    _preflight(run, models, attacks)
    if is_writer():
        out.mkdir(parents=True, exist_ok=True)
        replace_models_in(out, [m.label for m in models if m.label in replace_models])
    plan = _pending(run, models, attacks)
    total = sum(len(p) * len(data.x) for _, _, p in plan)
    run.bar = _progress(total, progress and is_writer() and total > 0)
    try:
        for m in models:
            entries = [(a, pending) for mm, a, pending in plan if mm is m and pending]
            if entries and not _run_model(run, m, entries):
                return out
    finally:
        if run.bar is not None:
            run.bar.close()
    if is_writer():
        if ensembles.build_cells(out, models, data, requested, settings):
            R.rebuild_tables(out)
        finalise(out, settings)
        if (out / "partial").exists() and not any((out / "partial").iterdir()):
            (out / "partial").rmdir()
    return out


def _preflight(run: _Run, models: Sequence[ModelEntry], attacks: Sequence[AttackSpec]) -> None:
    """Plans every (model, attack) before anything runs, so a budget that cannot hold one sample
    fails before any work (and records each model's per-sample gradient memory for the run)."""
    if run.budget is None:
        return
    for m in models:
        run.grad_bytes[m.label] = grad = per_sample_grad_bytes(m.detector, m.variables)
        plan_chunk(get_def("fgsm"), 1, grad, run.input_bytes, n_devices=run.n_dev,
                   batch_size=run.settings.batch_size, budget_bytes=run.budget)
        for a in attacks:
            plan_chunk(a.definition, len(cells.eps_grid(a, run.settings)), grad, run.input_bytes,
                       n_devices=run.n_dev, batch_size=run.settings.batch_size, budget_bytes=run.budget)


def _pending(run: _Run, models: Sequence[ModelEntry], attacks: Sequence[AttackSpec]) -> list[tuple]:
    """``[(model, attack, [(cell, meta, eps), ...])]`` of unfinished cells (process 0's disk decides)."""
    plan = []
    for m in models:
        for a in attacks:
            grid = cells.eps_grid(a, run.settings)
            metas = [cells.cell_def(m, run.data, a, float(e), run.settings) for e in grid]
            ids = [R.cell_id(meta) for meta in metas]
            done = agree(np.array([is_writer() and cells.finished(run.out, c) for c in ids]))
            plan.append((m, a, [(c, meta, e) for c, meta, e, f in zip(ids, metas, grid, done) if not f]))
    return plan


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="sample·ε", dynamic_ncols=True, smoothing=0.1)


def _run_model(run: _Run, m: ModelEntry, entries: list[tuple]) -> bool:
    """Every pending attack of one model; False when stopped early."""
    variables = replicate(run.mesh, m.variables)
    logits_fn = m.detector.logits_fn(variables)
    grad_bytes = run.grad_bytes.get(m.label, 0.0)
    # The clean pass is one forward + input gradient per sample: FGSM's memory model.
    clean_chunk, _ = plan_chunk(get_def("fgsm"), 1, grad_bytes, run.input_bytes, n_devices=run.n_dev,
                                batch_size=run.settings.batch_size, budget_bytes=run.budget)
    clean = _clean(run, m, logits_fn, clean_chunk)
    for a, pending in entries:
        if not _run_attack(run, m, logits_fn, clean["p_clean"], a, pending, grad_bytes):
            return False
    return True


def _run_attack(run: _Run, m: ModelEntry, logits_fn: Any, p_clean: np.ndarray, a: AttackSpec,
                pending: list[tuple], grad_bytes: float) -> bool:
    """All pending ε of one (model, attack) as one program per chunk; False when stopped early."""
    ids = [c for c, _, _ in pending]
    eps = np.asarray([e for _, _, e in pending], np.float32)
    definition = a.definition
    chunk, eps_batch = plan_chunk(definition, len(eps), grad_bytes, run.input_bytes, n_devices=run.n_dev,
                                  batch_size=run.settings.batch_size, budget_bytes=run.budget)
    covered = _covered(run, ids)
    todo = np.flatnonzero(~covered)
    # eps_batch_size is an execution detail, not part of the cell: the results are the same.
    hparams = a.kwargs if eps_batch is None else {**a.kwargs, "eps_batch_size": eps_batch}
    if run.bar is not None:
        run.bar.set_description(f"{m.label} · {a.name}")
        run.bar.update(int(covered.sum()) * len(ids))
    chunk = balanced(len(todo), chunk, run.n_dev)
    for start in range(0, len(todo), chunk):
        if run.stopped():
            return False
        sel = todo[start:start + chunk]
        # Pad to the full chunk (not just the device count): one shape, one compilation.
        rows = pad_batch({"rows": sel}, chunk if len(todo) > chunk else run.n_dev)[0]["rows"]
        parts = attack_chunk(run, definition, hparams, logits_fn, sel, rows, eps, p_clean[sel])
        if is_writer():
            for c, part in zip(ids, parts):
                cells.write_partial(run.out, c, part)
        run.chunks_run += 1
        if run.bar is not None:
            run.bar.update(len(sel) * len(ids))
    if is_writer():
        for c, meta, _ in pending:
            full = {**meta, "cell": c, "checkpoint": m.checkpoint, "threat_norm": a.threat_norm}
            cells.complete(run.out, c, full, run.data, run.settings)
        R.rebuild_tables(run.out)
    return True


def _covered(run: _Run, ids: Sequence[str]) -> np.ndarray:
    """bool[N]: samples whose results are already saved (``partial/``) for *every* given cell."""
    covered = np.ones(len(run.data.x), bool)
    if is_writer():
        position = {int(i): k for k, i in enumerate(run.data.index)}
        for c in ids:
            have = np.zeros(len(run.data.x), bool)
            for part in cells.read_partials(run.out, c):
                have[[position[int(i)] for i in part["index"] if int(i) in position]] = True
            covered &= have
    return agree(covered)


@jax.jit
def _adv_probabilities(logits_fn, x_adv):
    # One ε at a time inside the program: the forward pass holds a chunk's activations only,
    # whatever the grid size (the memory plan counts one forward per sample).
    return jax.lax.map(lambda xe: metrics.softmax_or_nan(logits_fn(xe)), x_adv)


def attack_chunk(run: _Run, definition: Any, hparams: dict, logits_fn: Any, sel: np.ndarray, rows: np.ndarray,
                 eps: np.ndarray, p_clean: np.ndarray) -> list[dict[str, np.ndarray]]:
    """Attacks ``rows`` (samples ``sel`` then padding copies) over the ε grid in one program.

    Returns one dict of per-sample results (``rrjax.records.SAMPLE_FIELDS``) per ε, for ``sel`` only.
    """
    data, mesh = run.data, run.mesh
    x = shard_rows(mesh, to_float(data.x[rows]))
    y = shard_rows(mesh, data.y[rows].astype(np.int32))
    keys = jax.random.wrap_key_data(shard_rows(mesh, run.sample_keys[rows]))
    x_adv, info = definition.run_with_info(logits_fn, x, y, eps, keys, **hparams)
    p_adv = to_host(_adv_probabilities(logits_fn, x_adv))[:, : len(sel)]  # padding dropped here
    y_sel = data.y[sel].astype(np.int32)
    o = jax.tree_util.tree_map(np.asarray, metrics.outcomes(p_clean, p_adv, y_sel, norm=run.settings.shift_norm))
    extra = {k: to_host(v)[:, : len(sel)] for k, v in info.items() if k in R.OPTIONAL_SAMPLE_FIELDS}
    return cells.sample_result(np.asarray(data.index)[sel], y_sel, p_clean, p_adv, o, extra)


@jax.jit
def _clean_pass(logits_fn, x, y):
    logits = logits_fn(x).astype(jnp.float32)
    grad = jax.grad(lambda xx: jnp.sum(C.per_sample_loss(C.LossSpec(), logits_fn(xx), y, None)))(x)
    flat = grad.reshape(grad.shape[0], -1)
    dead = jnp.all(flat == 0, axis=1) | ~jnp.all(jnp.isfinite(flat), axis=1)
    return metrics.softmax_or_nan(logits), dead


def _clean(run: _Run, m: ModelEntry, logits_fn: Any, chunk: int) -> dict[str, np.ndarray]:
    """Clean probabilities and dead-gradient flags per sample, computed once and cached (verified
    against the content hash in the file name; a file that does not verify is recomputed)."""
    data = run.data
    key = cells.clean_id(m, data)
    cached = cells.read_clean(run.out, key, remove_bad=is_writer())
    usable = cached is not None and np.array_equal(cached.get("index"), np.asarray(data.index))
    # Every process must take the same branch (the pass below is a collective program).
    if everywhere(usable):
        return cached
    probs, dead = [], []
    chunk = balanced(len(data.x), chunk, run.n_dev)
    for start in range(0, len(data.x), chunk):
        rows = np.arange(start, min(start + chunk, len(data.x)))
        padded, _ = pad_batch({"rows": rows}, chunk if len(data.x) > chunk else run.n_dev)  # one shape
        xs, ys = to_float(data.x[padded["rows"]]), data.y[padded["rows"]].astype(np.int32)
        p, d = _clean_pass(logits_fn, shard_rows(run.mesh, xs), shard_rows(run.mesh, ys))
        probs.append(to_host(p)[: len(rows)])
        dead.append(to_host(d)[: len(rows)])
    result = {"index": np.asarray(data.index), "p_clean": np.concatenate(probs), "dead_grad": np.concatenate(dead)}
    if not np.isfinite(result["p_clean"]).any():
        raise ValueError(f"model {m.label!r} ({m.checkpoint or m.detector.name}) returns NaN or inf for every one of "
                         f"the {len(data.x)} samples: there is nothing to evaluate; check the checkpoint and its input "
                         "size")
    if is_writer():
        cells.write_clean(run.out, key, result)
    return result
