"""The grid engine: every (model, attack, ε) cell over a sample set, sharded, chunked, resumable.

For each model the clean probabilities (and input-gradient health statistics) are computed once
per sample. For each attack, the pending ε values run as **one compiled program per sample
chunk**: the chunk's samples are sharded over all devices (``jax.sharding``, a 1-D ``"data"``
mesh; multi-host after ``jax.distributed.initialize()``), and the chunk size is planned from
XLA's memory analysis of the model's gradient so that the memory budget holds whatever the
grid size (ε is vectorised in smaller groups when even one sample per device would not fit).

Determinism: sample ``i`` of the split always uses ``fold_in(key(seed), i)``, and attacks draw
random starts in the unit ball scaled by ε, so a sample's result depends on neither the chunking,
the device count, nor which other ε values are pending. A killed sweep therefore resumes with
identical numbers: finished cells are skipped (``rrjax.records``), finished chunks of unfinished
cells are reused (``partial/``), and the tables are rebuilt in a canonical order.

A final pass (:func:`finalise`) derives attack-health flags from all cells and writes
``summary.json``, ``summary.md`` and the paired model comparisons (``comparisons.jsonl``).
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import math
import os
import pathlib
import re
import shutil
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh

from rrjax import _validation as V
from rrjax import cli
from rrjax import metrics
from rrjax import records as R
from rrjax.attacks import ATTACKS, attack_norm, get_attack, resolve_hparams
from rrjax.attacks import _common as C
from rrjax.models.base import Detector
from rrjax.sharding import data_mesh, pad_batch, replicate, shard_rows, to_host

__all__ = [
    "AttackSpec",
    "ModelEntry",
    "SweepData",
    "SweepSettings",
    "parse_grid",
    "parse_attacks",
    "select_samples",
    "load_model",
    "load_data",
    "plan_chunk",
    "run_sweep",
    "cell_ids",
    "finalise",
    "HEALTH_FLAGS",
]

# Input-sized buffers an attack keeps per (ε·sample) besides the model's activations.
_ATTACK_BUFFERS = {"fgsm": 3, "pgd": 6, "cw_bounded": 6, "cw_l2": 10}
# Attacks whose memory (and work) does not grow with the ε grid.
_GRID_FREE = {"fgsm", "cw_l2"}

HEALTH_FLAGS = {
    "ra_increases_with_eps": "RA rises with ε beyond its 95% CI: the attack is not finding the optimum",
    "iterative_weaker_than_fgsm": "an iterative attack has higher RA than FGSM at the same ε (beyond CI)",
    "eps0_differs_from_clean": "RA at ε = 0 differs from clean accuracy: the attack changed unperturbed inputs",
    "gradient_masking": "more than 5% of samples have all-zero or non-finite input gradients",
    "no_success_at_max_eps": "not a single correctly classified sample was flipped at the largest ε",
    "nonfinite_probabilities": "NaN/inf probabilities (clean or attacked)",
}


# ============================================================================ specifications

@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """An attack name, its fully resolved hyperparameters, and optionally its own ε grid.

    ``eps`` overrides the sweep's grid for this attack (e.g. L2 budgets for ``cw_l2``, which are
    not comparable in size with L∞ ones); ``None`` uses the sweep's grid.
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    eps: tuple[float, ...] | None = None

    @classmethod
    def make(cls, name: str, *, eps: Any = None, **params: Any) -> "AttackSpec":
        """Validates and resolves a configuration (``rrjax.attacks.resolve_hparams``)."""
        resolved = resolve_hparams(name, **params)
        json.dumps(resolved, allow_nan=False)  # must be recordable
        grid = None if eps is None else tuple(float(e) for e in parse_grid(eps, name=f"{name} eps"))
        return cls(name, tuple(sorted(resolved.items())), grid)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def threat_norm(self) -> str:
        return attack_norm(self.name, self.kwargs)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A detector to sweep: a label for the records, the detector, its variables, provenance."""

    label: str
    detector: Detector
    variables: Any
    checkpoint: str = ""
    checkpoint_sha256: str = ""


@dataclasses.dataclass(frozen=True)
class SweepData:
    """The samples: ``x`` uint8 or float32 in [0,1] ``[N,...]``, labels and split positions.

    ``source`` identifies how the pixels were produced beyond the dataset name and split (the
    builder config with all its values, the resize); it is part of every cell id, so changing
    e.g. the compression level never reuses results.
    """

    dataset: str
    split: str
    x: np.ndarray
    y: np.ndarray
    index: np.ndarray
    source: str = ""  # everything else that defines the pixels: builder config, resize

    def __post_init__(self):
        n = len(self.x)
        if n == 0:
            raise ValueError("the sweep has no samples (x is empty); expected at least one sample")
        if self.x.dtype != np.uint8:
            V.as_pixels(self.x, name="data.x", ranks=(4, 5))
        V.as_labels(self.y, n, name="data.y")
        if np.shape(self.index) != (n,) or len(np.unique(self.index)) != n:
            raise ValueError(f"data.index must hold {n} distinct sample positions, got shape {np.shape(self.index)}")


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """Grids and options shared by every cell of a sweep."""

    eps: tuple[float, ...]
    tolerance: tuple[float, ...]
    shift_norm: str = metrics.DEFAULT_SHIFT_NORM
    strict: bool = False
    ci_method: str = "wilson"
    seed: int = 0
    batch_size: int = 64
    memory_budget_mb: float | None = None

    def __post_init__(self):
        V.as_grid(self.eps, name="eps", lower=0.0)
        V.as_grid(self.tolerance, name="tolerance", lower=0.0)
        V.check_choice(self.shift_norm, C.SHIFT_NORMS, name="shift_norm")
        V.check_choice(self.ci_method, metrics.CI_METHODS, name="ci_method")
        V.check_int(self.seed, name="seed", minimum=0)
        V.check_int(self.batch_size, name="batch_size", minimum=1)
        if self.memory_budget_mb is not None:
            V.check_number(self.memory_budget_mb, name="memory_budget_mb", lower=0.0, strict=True)
        if len(set(self.eps)) != len(self.eps):
            raise ValueError(f"eps has repeated values {list(self.eps)}; expected distinct budgets")


# ============================================================================ parsing (for scripts)

_GRID_RANGE = re.compile(r"^\s*([^:]+):([^:]+):([^:]+)\s*$")


def parse_grid(spec: str | Sequence[float], *, name: str) -> np.ndarray:
    """Parses ``"0,0.01,0.05"`` or ``"start:stop:num"`` (inclusive linspace) into a float32 grid.

    Raises ``ValueError`` naming ``name`` for malformed specs, non-finite or negative values.
    """
    if not isinstance(spec, str):
        return V.as_grid(list(spec), name=name, lower=0.0)[0]
    m = _GRID_RANGE.match(spec)
    try:
        if m:
            start, stop, num = float(m.group(1)), float(m.group(2)), m.group(3).strip()
            if not num.isdigit() or int(num) < 1:
                raise ValueError
            values = np.linspace(start, stop, int(num))
        else:
            values = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"{name}={spec!r} is malformed; expected comma-separated numbers like '0,0.05,0.1' or "
            "'start:stop:num' like '0:0.2:9'"
        ) from None
    return V.as_grid(values, name=name, lower=0.0)[0]


def _unrollable(attack: AttackSpec) -> bool:
    if attack.name in ("pgd", "cw_bounded"):
        return True
    return attack.name == "cw_l2" and attack.kwargs.get("abort_early") is False


def _loop_length(attack: AttackSpec) -> int:
    """Iterations an unrolled program would contain."""
    kw = attack.kwargs
    return int(kw.get("steps", 1)) * int(kw.get("restarts", 1)) * int(kw.get("binary_search_steps", 1))


_ATTACK_ITEM = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(([^()]*)\))?\s*(?:,|$)")


def parse_attacks(spec: str, *, unroll_max_steps: float = 0) -> list[AttackSpec]:
    """Parses ``"fgsm,pgd(steps=10,norm=l2),cw_l2(steps=200,eps=0:2:9)"`` into attack specs.

    Values are parsed like flag values (``rrjax.cli.parse_value``); ``eps=start:stop:num``
    gives the attack its own ε grid. Every hyperparameter is validated here, so a sweep never
    fails later on its configuration.

    ``unroll_max_steps``: attacks that can unroll their step loop (PGD, ε-bounded CW, CW-L2
    without early abort) and run at most this many steps (× restarts / search rounds) get
    ``unroll=True`` unless the text sets ``unroll`` itself (faster on XLA:CPU; see
    ``rrjax.attacks.pgd``). 0 (default): never.

    Raises ``ValueError`` for unknown attacks (listing valid ones), unknown hyperparameters,
    invalid values and malformed text.
    """
    spec = spec.strip()
    if not spec:
        raise ValueError(f"attacks is empty; expected e.g. 'fgsm,pgd(steps=10)'; valid attacks: {sorted(ATTACKS)}")
    out, pos = [], 0
    while pos < len(spec):
        m = _ATTACK_ITEM.match(spec, pos)
        if not m or m.end() == pos:
            raise ValueError(f"attacks={spec!r} is malformed near {spec[pos:]!r}; expected name or name(k=v,...) items")
        name, body = m.group(1), m.group(2)
        params: dict[str, Any] = {}
        for item in filter(str.strip, (body or "").split(",")):
            if "=" not in item:
                raise ValueError(f"attack {name!r}: {item.strip()!r} is not k=v")
            k, v = item.split("=", 1)
            params[k.strip()] = v.strip() if k.strip() == "eps" else cli.parse_value(v)
        made = AttackSpec.make(name, **params)
        if "unroll" not in params and _unrollable(made) and _loop_length(made) <= unroll_max_steps:
            made = AttackSpec.make(name, **params, unroll=True)
        out.append(made)
        pos = m.end()
    names = [(a.name, a.params, a.eps) for a in out]
    if len(set(names)) != len(names):
        raise ValueError(f"attacks={spec!r} lists the same attack configuration twice")
    return out


def select_samples(n_available: int, n: int | None, seed: int) -> np.ndarray:
    """The sorted positions of ``n`` samples drawn without replacement (all when ``n`` is None);
    ``rrjax.data.subset_indices``."""
    from rrjax.data.pipeline import subset_indices

    return subset_indices(n_available, n, seed)


def load_model(path: str | os.PathLike, *, label: str | None = None) -> ModelEntry:
    """A :class:`ModelEntry` from an rrjax checkpoint directory (label: the model name by default)."""
    from rrjax import checkpoints

    p = pathlib.Path(path)
    if not p.exists():
        raise ValueError(f"checkpoint {str(path)!r} does not exist; expected an rrjax checkpoint directory "
                         "(experiments/train.py or experiments/convert_weights.py write them)")
    detector, variables, meta = checkpoints.load(p)
    return ModelEntry(label or detector.name, detector, variables, str(path), meta.get("content_sha256", ""))


def load_data(
    dataset: str,
    split: str,
    input_shape: Sequence[int],
    *,
    num_samples: int | None = None,
    sample_seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    manual_dir: str | os.PathLike | None = None,
    **dataset_config: Any,
) -> SweepData:
    """The sweep's samples from an ``rrjax.data`` dataset, resized to a detector's input.

    Args:
      dataset, split, data_dir, manual_dir, **dataset_config: as for ``rrjax.data.load``.
      input_shape: the detector's per-sample shape ``(H, W, C)`` or ``(T, H, W, C)``; frames
        are resized to ``H × W``; clips must have ``T`` frames.
      num_samples: how many samples (a seeded random subset; all when None).
      sample_seed: seed of the subset.
    """
    from rrjax import data as D

    builder = D.get_builder(dataset, data_dir=data_dir, **dataset_config)
    source = D.load(dataset, split, data_dir=data_dir, manual_dir=manual_dir, **dataset_config)
    index = select_samples(len(source), num_samples, sample_seed)
    size = int(input_shape[-3])
    parts = list(D.batches(source, 64, indices=index, image_size=size, prefetch=1))
    # The pipeline's pixels are 8-bit values / 255 (resizing included), so uint8 holds them
    # exactly in a quarter of the host memory.
    x = np.concatenate([np.rint(b["x"] * 255.0).astype(np.uint8) for b in parts])
    if x.shape[1:] != tuple(input_shape):
        raise ValueError(
            f"{dataset}/{split} gives samples of shape {x.shape[1:]} but the detector expects {tuple(input_shape)}; "
            "for clips, build the dataset with the detector's number of frames (e.g. --dataset_config=num_frames=8)"
        )
    y = np.concatenate([b["y"] for b in parts]).astype(np.int32)
    got = np.concatenate([b["index"] for b in parts])
    if not np.array_equal(got, index):
        raise RuntimeError("the data pipeline returned samples out of order")
    return SweepData(dataset, split, x, y, index, source=f"{builder.builder_config.name}|resize={size}|bilinear")


# ============================================================================ devices

def _is_writer() -> bool:
    return jax.process_index() == 0


def _everywhere(flag: bool) -> bool:
    """True iff ``flag`` holds on every process."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.all(multihost_utils.process_allgather(np.array([flag]))))


def _agree(value: np.ndarray) -> np.ndarray:
    """Process 0's view of ``value`` on every process (its disk decides what is finished)."""
    if jax.process_count() == 1:
        return value
    return np.asarray(multihost_utils.broadcast_one_to_all(value))


# ============================================================================ planning

def _per_sample_grad_bytes(detector: Detector, variables: Any) -> float:
    """Temporary bytes of one forward+backward of the model per sample (XLA memory analysis)."""
    probe = 2
    x = jax.ShapeDtypeStruct((probe,) + tuple(detector.input_shape), jnp.float32)
    grad = jax.jit(jax.grad(lambda v, xx: jnp.sum(detector.apply(v, xx)), argnums=1))
    try:
        analysis = grad.lower(variables, x).compile().memory_analysis()
        temp = float(analysis.temp_size_in_bytes)
    except Exception as e:  # backends without memory analysis: assume 32 input-sized buffers
        logging.warning("memory analysis unavailable (%s); using a conservative estimate", e)
        temp = 32.0 * probe * 4 * math.prod(detector.input_shape)
    return temp / probe


def plan_chunk(
    attack: str, n_eps: int, per_sample_grad_bytes: float, input_bytes: int, *, n_devices: int,
    batch_size: int, budget_bytes: float | None,
) -> tuple[int, int | None]:
    """Chooses the samples per chunk and the ε vectorisation width under a per-device budget.

    Returns:
      ``(samples_per_chunk, eps_batch_size)``: the chunk is a multiple of ``n_devices``;
      ``eps_batch_size`` is None (whole grid at once) unless even one sample per device with the
      whole grid would exceed the budget, in which case ε is vectorised that many at a time.
    """
    chunk = max(n_devices, (batch_size // n_devices) * n_devices)
    if budget_bytes is None:
        return chunk, None
    unit = per_sample_grad_bytes + _ATTACK_BUFFERS.get(attack, 6) * input_bytes
    grid_width = 1 if attack in _GRID_FREE else n_eps
    outputs = n_eps * input_bytes * 2  # x_adv and its probabilities' inputs
    per_sample = grid_width * unit + outputs
    fit = int(budget_bytes // per_sample)  # samples per device
    if fit >= 1:
        return min(chunk, fit * n_devices), None
    if attack in _GRID_FREE:
        raise ValueError(
            f"memory_budget_mb={budget_bytes / 2**20:.1f} cannot hold one sample of {attack!r} "
            f"(needs {per_sample / 2**20:.1f} MB per sample); raise the budget"
        )
    width = int((budget_bytes - outputs) // unit)
    if width < 1:
        raise ValueError(
            f"memory_budget_mb={budget_bytes / 2**20:.1f} cannot hold one ε of one sample of {attack!r} "
            f"(needs {(unit + outputs) / 2**20:.1f} MB); raise the budget"
        )
    return n_devices, width


# ============================================================================ compiled pieces

def _balanced(n: int, chunk: int, multiple: int) -> int:
    """The smallest chunk (a multiple of ``multiple``, at most ``chunk``) that needs as few
    chunks as ``chunk`` does: e.g. 96 samples in chunks of 64 become two chunks of 48, so the
    padded last chunk does not waste a third of the work."""
    if n == 0:
        return chunk
    pieces = -(-n // chunk)
    return min(chunk, -(-(-(-n // pieces)) // multiple) * multiple)


@jax.jit
def _clean_pass(logits_fn, x, y):
    logits = logits_fn(x).astype(jnp.float32)
    grad = jax.grad(lambda xx: jnp.sum(C.per_sample_loss(C.LossSpec(), logits_fn(xx), y, None)))(x)
    flat = grad.reshape(grad.shape[0], -1)
    dead = jnp.all(flat == 0, axis=1) | ~jnp.all(jnp.isfinite(flat), axis=1)
    return jax.nn.softmax(logits, axis=-1), dead


@jax.jit
def _adv_probabilities(logits_fn, x_adv):
    # One ε at a time inside the program: the forward pass holds a chunk's activations only,
    # whatever the grid size (the memory plan counts one forward per sample).
    return jax.lax.map(lambda xe: jax.nn.softmax(logits_fn(xe).astype(jnp.float32), axis=-1), x_adv)


def _to_float(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32)


# ============================================================================ cells

def _model_def(m: ModelEntry) -> dict:
    return {"model": m.label, "arch": m.detector.name, "config": dict(m.detector.config),
            "checkpoint_sha256": m.checkpoint_sha256}


def _cell_def(m: ModelEntry, data: SweepData, attack: AttackSpec, eps: float, s: SweepSettings | None) -> dict:
    return {
        **_model_def(m), "dataset": data.dataset, "split": data.split, "source": data.source,
        "samples": R.cell_id({"index": [int(i) for i in data.index]}),
        "attack": attack.name, "attack_params": attack.kwargs, "eps": float(np.float32(eps)),
        "seed": None if s is None else s.seed, "shift_norm": None if s is None else s.shift_norm,
    }


def _clean_key(cell_meta: Mapping[str, Any]) -> str:
    """Id of the clean pass a cell uses: its model and sample set only."""
    keep = ("model", "arch", "config", "checkpoint_sha256", "dataset", "split", "source", "samples")
    return R.cell_id({k: cell_meta[k] for k in keep})


def _clean_correct(samples: Mapping[str, np.ndarray]) -> np.ndarray:
    """bool[N]: clean predictions (argmax, ties to real, i.e. fake iff p_fake > 0.5) are right."""
    return (samples["p_fake_clean"] > 0.5).astype(int) == samples["y"]


def _rows(meta: Mapping[str, Any], samples: Mapping[str, np.ndarray], s: SweepSettings, health: str = "") -> list[dict]:
    n = len(samples["index"])
    tol = np.asarray(s.tolerance, np.float32)
    n_correct = int(samples["correct"].sum())
    n_robust = metrics.robust_outcomes(samples["shift"], tol, same_label=samples["same_label"] if s.strict else None).sum(-1)
    ra_ci = metrics.binomial_ci(n_correct, n, method=s.ci_method)
    rr_ci = metrics.binomial_ci(n_robust, n, method=s.ci_method)
    clean_acc = float(np.mean(_clean_correct(samples)))
    base = {
        "model": meta["model"], "checkpoint": meta["checkpoint"], "checkpoint_sha256": meta["checkpoint_sha256"],
        "dataset": meta["dataset"], "split": meta["split"], "attack": meta["attack"],
        "attack_params": meta["attack_params"], "threat_norm": meta["threat_norm"], "eps": meta["eps"],
        "n": n, "n_correct": n_correct, "ra": n_correct / n, "ra_lo": float(ra_ci[0]), "ra_hi": float(ra_ci[1]),
        "clean_accuracy": clean_acc, "shift_norm": meta["shift_norm"], "strict": bool(s.strict),
        "ci_method": s.ci_method, "seed": meta["seed"], "health": health, "cell": meta["cell"],
    }
    return [
        {**base, "tolerance": float(b), "n_robust": int(k), "rr": int(k) / n, "rr_lo": float(lo), "rr_hi": float(hi)}
        for b, k, (lo, hi) in zip(tol, n_robust, rr_ci)
    ]


def _finished(out: pathlib.Path, cell: str) -> bool:
    """Whether a cell is finished and intact; a corrupt cell is reported, removed and redone."""
    if not _is_writer():
        return False
    try:
        return R.read_cell(out, cell) is not None
    except ValueError as e:
        logging.warning("%s -- recomputing the cell", e)
        for suffix in (".json", ".npz"):
            (out / "cells" / f"{cell}{suffix}").unlink(missing_ok=True)
        return False


def _partial_dir(out: pathlib.Path, cell: str) -> pathlib.Path:
    return out / "partial" / cell


def _read_partials(out: pathlib.Path, cell: str) -> list[dict[str, np.ndarray]]:
    parts = []
    d = _partial_dir(out, cell)
    for p in sorted(d.glob("*.npz")) if d.exists() else []:
        try:
            with np.load(p, allow_pickle=False) as z:
                parts.append({k: z[k] for k in z.files})
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:  # torn by a crash: recompute
            logging.warning("ignoring unreadable partial result %s (%s); its samples are recomputed", p, e)
    return parts


def _write_partial(out: pathlib.Path, cell: str, part: Mapping[str, np.ndarray]) -> None:
    d = _partial_dir(out, cell)
    d.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **part)
    R.atomic_write_bytes(d / f"{int(part['index'][0]):09d}-{int(part['index'][-1]):09d}.npz", buf.getvalue())


# ============================================================================ the sweep

def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="sample·ε", dynamic_ncols=True, smoothing=0.1)


def _clean(out: pathlib.Path, m: ModelEntry, data: SweepData, mesh: Mesh, logits_fn, chunk: int) -> dict[str, np.ndarray]:
    """Clean probabilities and dead-gradient flags per sample, computed once and cached."""
    path = out / "clean" / f"{_clean_key(_cell_def(m, data, AttackSpec('fgsm'), 0.0, None))}.npz"
    # Every process must take the same branch (the pass below is a collective program).
    if _everywhere(path.exists()):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    n_dev = mesh.devices.size
    probs, dead = [], []
    chunk = _balanced(len(data.x), chunk, n_dev)
    for start in range(0, len(data.x), chunk):
        rows = np.arange(start, min(start + chunk, len(data.x)))
        padded, _ = pad_batch({"rows": rows}, chunk if len(data.x) > chunk else n_dev)  # one shape
        xs, ys = _to_float(data.x[padded["rows"]]), data.y[padded["rows"]].astype(np.int32)
        p, d = _clean_pass(logits_fn, shard_rows(mesh, xs), shard_rows(mesh, ys))
        probs.append(to_host(p)[: len(rows)])
        dead.append(to_host(d)[: len(rows)])
    result = {"index": np.asarray(data.index), "p_clean": np.concatenate(probs), "dead_grad": np.concatenate(dead)}
    if _is_writer():
        path.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **result)
        R.atomic_write_bytes(path, buf.getvalue())
    return result


def _with_sweep_shift_norm(attacks: Sequence[AttackSpec], settings: SweepSettings) -> list[AttackSpec]:
    """The probability-shift loss maximises the change in the sweep's own RR norm."""
    return [
        AttackSpec(a.name, tuple(sorted({**a.kwargs, "shift_norm": settings.shift_norm}.items())))
        if a.kwargs.get("loss") == "prob_shift" else a
        for a in attacks
    ]


def _eps_grid(attack: AttackSpec, settings: SweepSettings) -> np.ndarray:
    return np.asarray(settings.eps if attack.eps is None else attack.eps, np.float32)


def cell_ids(
    models: Sequence[ModelEntry], data: SweepData, attacks: Sequence[AttackSpec], settings: SweepSettings
) -> list[str]:
    """The ids of the cells a :func:`run_sweep` call with these arguments covers (finished or not):
    the records of *this* run in a directory that may hold other runs' cells too."""
    return [
        R.cell_id(_cell_def(m, data, a, float(e), settings))
        for m in models for a in _with_sweep_shift_norm(attacks, settings) for e in _eps_grid(a, settings)
    ]


def run_sweep(
    models: Sequence[ModelEntry],
    data: SweepData,
    attacks: Sequence[AttackSpec],
    settings: SweepSettings,
    out_dir: str | os.PathLike,
    *,
    progress: bool = True,
    stop_after_chunks: int | None = None,
) -> pathlib.Path:
    """Runs every (model, attack, ε) cell not yet finished in ``out_dir``, then :func:`finalise`.

    Args:
      models: detectors to evaluate (labels must be distinct); each must accept ``data.x``.
      data: the samples (the same samples for every model, so comparisons are paired).
      attacks: attack configurations.
      settings: ε and tolerance grids and options.
      out_dir: the sweep directory (created; finished cells in it are kept and skipped).
      progress: show a tqdm bar (process 0 only).
      stop_after_chunks: stop (as if killed) after this many attack chunks; for tests.

    Returns:
      ``out_dir`` as a path. Only process 0 writes files.
    """
    # The probability-shift loss maximises the change in the sweep's own RR norm.
    attacks = _with_sweep_shift_norm(attacks, settings)
    labels = [m.label for m in models]
    if not models or len(set(labels)) != len(labels):
        raise ValueError(f"models must be a non-empty list with distinct labels, got {labels}")
    if not attacks:
        raise ValueError(f"attacks is empty; expected at least one of {sorted(ATTACKS)}")
    for m in models:
        m.detector.check_input(np.zeros((1,) + data.x.shape[1:]))
    out = pathlib.Path(out_dir)
    if _is_writer():
        out.mkdir(parents=True, exist_ok=True)
    mesh = data_mesh()
    n_dev = int(mesh.devices.size)
    budget = None if settings.memory_budget_mb is None else settings.memory_budget_mb * 2**20
    base_key = jax.random.key(settings.seed)
    sample_keys = np.asarray(jax.random.key_data(
        jax.vmap(lambda i: jax.random.fold_in(base_key, i))(jnp.asarray(data.index, jnp.uint32))))
    input_bytes = 4 * int(np.prod(data.x.shape[1:]))

    # What is pending (process 0's disk decides).
    plan = []
    for m in models:
        for a in attacks:
            eps_grid = _eps_grid(a, settings)
            cells = [(R.cell_id(meta), meta) for meta in (_cell_def(m, data, a, float(e), settings) for e in eps_grid)]
            finished = _agree(np.array([_finished(out, c) for c, _ in cells]))
            pending = [(c, meta, e) for (c, meta), e, f in zip(cells, eps_grid, finished) if not f]
            plan.append((m, a, pending))
    total = sum(len(p) * len(data.x) for _, _, p in plan)
    n_cells, done_cells = sum(len(p) for _, _, p in plan), 0
    bar = _progress(total, progress and _is_writer() and total > 0)
    chunks_run = 0
    try:
        for m in models:
            entries = [(a, pending) for mm, a, pending in plan if mm is m and pending]
            if not entries:
                continue
            variables = replicate(mesh, m.variables)
            logits_fn = m.detector.logits_fn(variables)
            grad_bytes = _per_sample_grad_bytes(m.detector, m.variables) if budget is not None else 0.0
            clean_chunk, _ = plan_chunk("fgsm", 1, grad_bytes, input_bytes, n_devices=n_dev,
                                        batch_size=settings.batch_size, budget_bytes=budget)
            clean = _clean(out, m, data, mesh, logits_fn, clean_chunk)
            for a, pending in entries:
                cells = [c for c, _, _ in pending]
                eps_pending = np.asarray([e for _, _, e in pending], np.float32)
                chunk, eps_batch = plan_chunk(a.name, len(eps_pending), grad_bytes, input_bytes, n_devices=n_dev,
                                              batch_size=settings.batch_size, budget_bytes=budget)
                covered = _covered(out, cells, data)
                todo = np.flatnonzero(~covered)
                kwargs = a.kwargs
                if eps_batch is not None:  # execution detail, not part of the cell: results are the same
                    try:
                        kwargs = resolve_hparams(a.name, **kwargs, eps_batch_size=eps_batch)
                    except ValueError:
                        raise ValueError(f"attack {a.name!r} cannot vectorise ε in groups; raise memory_budget_mb") from None
                if bar is not None:
                    bar.set_description(f"{m.label} · {a.name}")
                    bar.update(int(covered.sum()) * len(cells))
                attack = functools.partial(get_attack(a.name), **kwargs)
                chunk = _balanced(len(todo), chunk, n_dev)
                for start in range(0, len(todo), chunk):
                    if stop_after_chunks is not None and chunks_run >= stop_after_chunks:
                        return out
                    sel = todo[start:start + chunk]
                    # Pad to the full chunk (not just the device count): one shape, one compilation.
                    rows = pad_batch({"rows": sel}, chunk if len(todo) > chunk else n_dev)[0]["rows"]
                    parts = _attack_chunk(attack, logits_fn, mesh, data, sample_keys, sel, rows, eps_pending,
                                          clean["p_clean"][sel], settings.shift_norm)
                    if _is_writer():
                        for c, part in zip(cells, parts):
                            _write_partial(out, c, part)
                    chunks_run += 1
                    if bar is not None:
                        bar.update(len(sel) * len(cells))
                        bar.set_postfix_str(f"cells {done_cells}/{n_cells}")
                if _is_writer():
                    for c, meta, _ in pending:
                        _complete_cell(out, c, {**meta, "cell": c, "checkpoint": m.checkpoint,
                                                "threat_norm": a.threat_norm}, data, settings)
                    R.rebuild_tables(out)
                done_cells += len(pending)
                if bar is not None:
                    bar.set_postfix_str(f"cells {done_cells}/{n_cells}")
    finally:
        if bar is not None:
            bar.close()
    if _is_writer():
        finalise(out, settings)
        if (out / "partial").exists() and not any((out / "partial").iterdir()):
            (out / "partial").rmdir()
    return out


def _covered(out: pathlib.Path, cells: Sequence[str], data: SweepData) -> np.ndarray:
    """bool[N]: samples whose results are already saved (``partial/``) for *every* given cell."""
    covered = np.ones(len(data.x), bool)
    if _is_writer():
        position = {int(i): k for k, i in enumerate(data.index)}
        for c in cells:
            have = np.zeros(len(data.x), bool)
            for part in _read_partials(out, c):
                have[[position[int(i)] for i in part["index"] if int(i) in position]] = True
            covered &= have
    return _agree(covered)


def _attack_chunk(
    attack: Callable[..., jax.Array], logits_fn: Any, mesh: Mesh, data: SweepData, sample_keys: np.ndarray,
    sel: np.ndarray, rows: np.ndarray, eps: np.ndarray, p_clean: np.ndarray, shift_norm: str,
) -> list[dict[str, np.ndarray]]:
    """Attacks ``rows`` (samples ``sel`` then padding copies) over the ε grid in one program.

    Returns one dict of per-sample results (``rrjax.records.SAMPLE_FIELDS``) per ε, for ``sel`` only.
    """
    x_adv = attack(logits_fn, shard_rows(mesh, _to_float(data.x[rows])), shard_rows(mesh, data.y[rows].astype(np.int32)),
                   eps, key=shard_rows(mesh, sample_keys[rows]))
    p_adv = to_host(_adv_probabilities(logits_fn, x_adv))[:, : len(sel)]  # padding dropped here
    y = data.y[sel].astype(np.int32)
    shift = np.asarray(metrics.prob_shift(p_clean, p_adv, norm=shift_norm))
    index = np.asarray(data.index)[sel]
    return [
        {"index": index, "y": y, "correct": p_adv[k].argmax(-1) == y, "shift": shift[k],
         "p_fake_clean": p_clean[:, 1], "p_fake_adv": p_adv[k][:, 1],
         "same_label": p_adv[k].argmax(-1) == p_clean.argmax(-1)}
        for k in range(len(eps))
    ]


def _complete_cell(out: pathlib.Path, cell: str, meta: dict, data: SweepData, s: SweepSettings) -> None:
    parts = _read_partials(out, cell)
    merged = {k: np.concatenate([p[k] for p in parts]) for k in R.SAMPLE_FIELDS}
    order = np.argsort(merged["index"], kind="stable")
    merged = {k: v[order] for k, v in merged.items()}
    _, first = np.unique(merged["index"], return_index=True)  # a chunk saved twice counts once
    merged = {k: v[first] for k, v in merged.items()}
    if not np.array_equal(merged["index"], np.sort(np.asarray(data.index))):
        raise RuntimeError(f"cell {cell}: partial results do not cover the sample set; rerun the same sweep command")
    R.write_cell(out, cell, meta, merged, _rows(meta, merged, s))
    shutil.rmtree(_partial_dir(out, cell), ignore_errors=True)


# ============================================================================ finalisation

class GroupKey(NamedTuple):
    """The cells that form one RA/RR curve over ε: a model, data, attack variant, seed and norm."""

    model: str
    dataset: str
    split: str
    attack: str
    params: str  # canonical JSON of the resolved hyperparameters
    seed: int
    shift_norm: str

    @classmethod
    def of(cls, meta: Mapping[str, Any]) -> "GroupKey":
        return cls(meta["model"], meta["dataset"], meta["split"], meta["attack"],
                   R.canonical_json(meta["attack_params"]), meta["seed"], meta["shift_norm"])


def _health(groups: dict, clean_dead: dict) -> dict[str, list[str]]:
    """Attack-health flags per group key (model, dataset, split, attack, params) from its cells."""
    flags: dict[tuple, list[str]] = {}
    by_key = {}
    for key, cells in groups.items():
        cells = sorted(cells, key=lambda c: c["meta"]["eps"])
        f = []
        eps = np.array([c["meta"]["eps"] for c in cells])
        n = np.array([len(c["samples"]["index"]) for c in cells])
        k = np.array([int(c["samples"]["correct"].sum()) for c in cells])
        ra = k / n
        ci = np.array([c["rows"][0]["ra_lo"] for c in cells]), np.array([c["rows"][0]["ra_hi"] for c in cells])
        if any(ra[j] > ci[1][i] for i in range(len(ra)) for j in range(i + 1, len(ra))):
            f.append("ra_increases_with_eps")
        zero = [c for c in cells if c["meta"]["eps"] == 0.0]
        for c in zero:
            s = c["samples"]
            if int(s["correct"].sum()) != int(_clean_correct(s).sum()):
                f.append("eps0_differs_from_clean")
        top = cells[int(np.argmax(eps))]
        s = top["samples"]
        clean_correct = _clean_correct(s)
        if top["meta"]["eps"] > 0 and clean_correct.any() and not np.any(clean_correct & ~s["correct"]):
            f.append("no_success_at_max_eps")
        if any(not np.all(np.isfinite(c["samples"]["p_fake_adv"])) or not np.all(np.isfinite(c["samples"]["p_fake_clean"]))
               for c in cells):
            f.append("nonfinite_probabilities")
        if clean_dead.get(key[:3], 0.0) > 0.05:
            f.append("gradient_masking")
        flags[key] = f
        by_key[key] = (eps, ra, ci)
    # Iterative attacks must not be weaker than FGSM of the same norm at the same ε.
    for key, (eps, ra, _) in by_key.items():
        if key.attack not in ("pgd", "cw_bounded"):
            continue
        norm = json.loads(key.params).get("norm", "linf")
        for other, (e2, ra2, ci2) in by_key.items():
            same_model = other._replace(attack=key.attack, params=key.params) == key
            if not same_model or other.attack != "fgsm" or json.loads(other.params).get("norm", "linf") != norm:
                continue
            for i, e in enumerate(eps):
                j = np.flatnonzero(np.isclose(e2, e))
                if len(j) and ra[i] > ci2[1][j[0]]:
                    flags[key].append("iterative_weaker_than_fgsm")
                    break
    return {k: sorted(set(v)) for k, v in flags.items()}


def finalise(out_dir: str | os.PathLike, settings: SweepSettings | None = None) -> dict:
    """Health flags, summary and paired comparisons from the finished cells of a sweep.

    Rewrites each cell's rows with its group's health flags (and, when ``settings`` is given,
    with that tolerance grid / strictness / CI method), rebuilds the tables, and writes
    ``summary.json``, ``summary.md`` and ``comparisons.jsonl``. Deterministic in the cells.
    """
    out = pathlib.Path(out_dir)
    cells = {c: R.read_cell(out, c) for c in R.finished_cells(out)}
    groups: dict[GroupKey, list[dict]] = {}
    for info in cells.values():
        groups.setdefault(GroupKey.of(info["meta"]), []).append(info)
    dead_by_model = {}
    for info in cells.values():
        meta = info["meta"]
        path = out / "clean" / f"{_clean_key(meta)}.npz"
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                dead_by_model[(meta["model"], meta["dataset"], meta["split"])] = float(np.mean(z["dead_grad"]))
    flags = _health(groups, dead_by_model)
    for key, infos in groups.items():
        text = ";".join(flags.get(key, []))
        for info in infos:
            s = settings or _settings_from_rows(info["rows"])
            rows = _rows(info["meta"], info["samples"], s, health=text)
            if rows != info["rows"]:
                R.rewrite_rows(out, info["meta"]["cell"], rows)
                info["rows"] = rows
    R.rebuild_tables(out)
    summary = _summary(groups, flags, dead_by_model)
    comparisons = _comparisons(groups)
    R.atomic_write_bytes(out / "summary.json", (json.dumps(summary, indent=1, allow_nan=False) + "\n").encode())
    R.atomic_write_bytes(out / "summary.md", _summary_md(summary, comparisons).encode())
    R.atomic_write_bytes(out / "comparisons.jsonl",
                         "".join(json.dumps(c, allow_nan=False) + "\n" for c in comparisons).encode())
    return summary


def _settings_from_rows(rows: list[dict]) -> SweepSettings:
    r = rows[0]
    return SweepSettings(eps=(r["eps"],), tolerance=tuple(x["tolerance"] for x in rows), shift_norm=r["shift_norm"],
                         strict=r["strict"], ci_method=r["ci_method"], seed=r["seed"])


def _summary(groups: dict, flags: dict, dead: dict) -> dict:
    out = []
    for key in sorted(groups):
        infos = sorted(groups[key], key=lambda i: i["meta"]["eps"])
        rows0 = infos[0]["rows"]
        out.append({
            "model": key.model, "dataset": key.dataset, "split": key.split, "attack": key.attack,
            "attack_params": json.loads(key.params), "seed": key.seed, "shift_norm": key.shift_norm,
            "n": rows0[0]["n"], "clean_accuracy": rows0[0]["clean_accuracy"],
            "eps": [i["meta"]["eps"] for i in infos],
            "ra": [i["rows"][0]["ra"] for i in infos],
            "ra_ci": [[i["rows"][0]["ra_lo"], i["rows"][0]["ra_hi"]] for i in infos],
            "tolerance": [r["tolerance"] for r in rows0],
            "rr": [[r["rr"] for r in i["rows"]] for i in infos],
            "median_shift": [float(np.median(i["samples"]["shift"])) for i in infos],
            "dead_gradient_share": dead.get(key[:3]),
            "health": flags.get(key, []),
        })
    return {"groups": out, "health_flags": HEALTH_FLAGS}


def _comparisons(groups: dict) -> list[dict]:
    """Paired tests between every two models on the same (dataset, split, attack, params, ε)."""
    by_cell: dict[tuple, dict[str, dict]] = {}
    for key, infos in groups.items():
        for info in infos:
            by_cell.setdefault(tuple(key[1:]) + (info["meta"]["eps"], info["meta"]["samples"]), {})[key.model] = info
    out = []
    for ck in sorted(by_cell):
        models = sorted(by_cell[ck])
        for i in range(len(models)):
            for j in range(i + 1, len(models)):
                a, b = by_cell[ck][models[i]], by_cell[ck][models[j]]
                sa, sb = a["samples"], b["samples"]
                mc = metrics.mcnemar_exact(sa["correct"], sb["correct"])
                tol = np.array([r["tolerance"] for r in a["rows"]], np.float32)
                strict = a["rows"][0]["strict"]
                phi_a = metrics.robust_outcomes(sa["shift"], tol, same_label=sa["same_label"] if strict else None)
                phi_b = metrics.robust_outcomes(sb["shift"], tol, same_label=sb["same_label"] if strict else None)
                bs = metrics.paired_bootstrap(phi_a, phi_b, n_boot=2000, seed=0)
                out.append({
                    "dataset": ck[0], "split": ck[1], "attack": ck[2], "attack_params": json.loads(ck[3]),
                    "seed": ck[4], "shift_norm": ck[5], "eps": ck[6], "model_a": models[i], "model_b": models[j],
                    "n": int(len(sa["shift"])),
                    "ra_diff": float(mc.difference), "mcnemar_p": float(mc.p_value),
                    "a_only": int(mc.a_only), "b_only": int(mc.b_only),
                    "tolerance": [float(t) for t in tol], "rr_diff": [float(v) for v in bs.difference],
                    "rr_diff_ci": [[float(lo), float(hi)] for lo, hi in bs.ci],
                    "rr_diff_p": [float(v) for v in bs.p_value],
                })
    return out


def _summary_md(summary: dict, comparisons: list[dict]) -> str:
    lines = ["# Sweep summary", ""]
    for g in summary["groups"]:
        params = ", ".join(f"{k}={v}" for k, v in sorted(g["attack_params"].items()))
        lines += [f"## {g['model']} · {g['dataset']}/{g['split']} · {g['attack']}({params})", "",
                  f"n = {g['n']}, clean accuracy {g['clean_accuracy']:.3f}"
                  + ("" if g["dead_gradient_share"] is None else f", dead-gradient share {g['dead_gradient_share']:.3f}"),
                  ""]
        tol = g["tolerance"]
        show = sorted({0, len(tol) // 4, len(tol) // 2, (3 * len(tol)) // 4, len(tol) - 1})
        lines.append("| ε | RA [95% CI] | " + " | ".join(f"RR(b={tol[t]:.2g})" for t in show) + " |")
        lines.append("|---|---|" + "---|" * len(show))
        for e, ra, ci, rr in zip(g["eps"], g["ra"], g["ra_ci"], g["rr"]):
            lines.append(f"| {e:.4g} | {ra:.3f} [{ci[0]:.3f}, {ci[1]:.3f}] | "
                         + " | ".join(f"{rr[t]:.3f}" for t in show) + " |")
        lines.append("")
        if g["health"]:
            lines += ["**Attack-health warnings:**", ""] + [f"- `{h}`: {HEALTH_FLAGS[h]}" for h in g["health"]] + [""]
    if comparisons:
        lines += ["## Paired comparisons (same samples)", "",
                  "| dataset | attack | ε | a | b | RA_a − RA_b | McNemar p | RR_a − RR_b at b=0.5 [95% CI] |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in comparisons:
            t = int(np.argmin(np.abs(np.asarray(c["tolerance"]) - 0.5)))
            lo, hi = c["rr_diff_ci"][t]
            lines.append(f"| {c['dataset']} | {c['attack']} | {c['eps']:.4g} | {c['model_a']} | {c['model_b']} | "
                         f"{c['ra_diff']:+.3f} | {c['mcnemar_p']:.3g} | {c['rr_diff'][t]:+.3f} [{lo:+.3f}, {hi:+.3f}] |")
        lines.append("")
    return "\n".join(lines) + "\n"
