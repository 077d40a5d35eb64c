"""Training and clean evaluation of detectors: optax Adam, data-parallel jit step, resumable state.

The library half of ``experiments/train.py``; it knows nothing about datasets or flags. Data
comes in through two callables, ``train_batches(epoch) -> iterable of batch dicts`` and
``val_batches() -> iterable of batch dicts``, with the batch dicts of the data contract::

    {"x": f32[B, *input_shape] in [0,1], "y": int32[B], "index": int64[B], "video_id": int64[B]}

(``index`` and ``video_id`` are optional here; ``video_id`` enables video-level metrics).

Decisions (details in BUILD_NOTES.md, "Training, clean metrics and checkpoints"):

* **Optimizer.** Adam (b1 0.9, b2 0.999, eps 1e-8) with DeepfakeBench's defaults lr 2e-4 and
  weight decay 5e-4. DeepfakeBench passes ``weight_decay`` to ``torch.optim.Adam``, which adds
  ``wd * param`` to the gradient *before* the moment estimates (L2 regularisation, "coupled"),
  so ``weight_decay_mode="l2"`` is the default, to reproduce its training. ``"decoupled"`` is
  AdamW (Loshchilov & Hutter, 2019): the decay bypasses the moments and is scaled by the
  learning rate. Decay applies to every parameter, as in torch's Adam.
* **Data parallelism.** One ``Mesh`` over the local devices with a single ``"data"`` axis;
  parameters, optimizer state and BatchNorm statistics are replicated (``P()``), batches are
  split along the batch axis (``P("data")``) and XLA inserts the gradient all-reduce. BatchNorm
  in training mode therefore normalises with statistics of the whole global batch, exactly as on
  one device.
* **Padding.** A batch whose size is not a multiple of the device count is padded by repeating
  its first rows, with a mask that is 0 on the copies: they add nothing to the loss, the
  gradient or any metric. Dropout masks of real rows do not change either (with partitionable
  threefry, the random bits of row i do not depend on the batch size). The one place padding
  leaks is BatchNorm's training-mode batch statistics, which see the repeated rows; that happens
  only for the last, short batch of an epoch on more than one device, changes those statistics by
  re-weighting at most ``devices - 1`` real rows, and is exact for models without BatchNorm.
  Evaluation runs in eval mode (running statistics), where padding is exact for every model.
* **Randomness.** The dropout key of step ``s`` is ``fold_in(rng, s)``, so a resumed run draws
  the same keys as an uninterrupted one; the data order is the callable's business and must be
  a function of (seed, epoch), as ``rrjax.data.batches`` is.
* **State and resume.** The training state is one ``rrjax.train_state.TrainState`` pytree
  (params, other collections, optimizer state, step, epoch, rng); the optimizer is rebuilt from
  its hyperparameters. ``train`` is a short loop over :func:`train_epoch`; the state and the
  history are saved together by an orbax ``CheckpointManager`` after every epoch
  (``work_dir/state/<epoch>``; orbax commits each step atomically), and a resumed run restores
  the latest one against an abstract target (``jax.eval_shape``) and continues; it refuses a
  state written with another model or other hyperparameters (``train_state.restore_or_init``).
* **Clean metrics.** Probabilities are recomputed on the host in float64 from the logits
  (``expit(l1 - l0)``), so that confident predictions do not collapse into float32 ties at 1.0,
  which would distort AUC/AP.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import pathlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from scipy import special

from rrjax import checkpoints, clean_metrics
from rrjax._io import atomic_write_json
from rrjax._validation import as_labels, as_pixels, check_int
from rrjax.models.base import Detector
from rrjax.sharding import data_mesh, pad_batch, shard_rows
from rrjax.train_state import (
    ADAM,
    WEIGHT_DECAY_MODES,
    OptimizerConfig,
    TrainState,
    fingerprint,
    make_optimizer,
    make_train_step,
    restore_or_init,
    save_state,
)

__all__ = [
    "WEIGHT_DECAY_MODES",
    "TrainResult",
    "TrainState",
    "make_optimizer",
    "pad_batch",
    "train",
    "train_epoch",
    "predict",
    "evaluate",
    "export",
]

BatchFn = Callable[[int], Iterable[Mapping[str, Any]]]


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What ``train`` returns.

    Attributes:
      variables: the trained detector variables (``params`` plus e.g. ``batch_stats``).
      history: one record per completed epoch: ``epoch``, ``step``, ``train`` (``loss``,
        ``acc``, ``n``), ``val`` (``clean_metrics`` output, when validation data was given),
        ``seconds``.
      config: the training hyperparameters (written to exported checkpoints).
      step: optimizer steps taken in total.
      epoch: completed epochs.
    """

    variables: dict
    history: list[dict]
    config: dict
    step: int
    epoch: int


# ----------------------------------------------------------------------------- batches


def _host_batch(batch: Any, detector: Detector, *, where: str) -> dict[str, np.ndarray]:
    if not isinstance(batch, Mapping) or "x" not in batch or "y" not in batch:
        raise ValueError(
            f"{where} yielded {type(batch).__name__}; expected batch dicts with keys 'x' and 'y' "
            "(and optionally 'index', 'video_id')"
        )
    x = np.asarray(as_pixels(batch["x"], name=f"{where} batch['x']", ranks=(len(detector.input_shape) + 1,)))
    detector.check_input(x)
    out = {"x": x, "y": np.asarray(as_labels(batch["y"], x.shape[0], name=f"{where} batch['y']"))}
    for key in ("index", "video_id"):
        if batch.get(key) is not None:
            v = np.asarray(batch[key])
            if v.shape != (x.shape[0],) or not np.issubdtype(v.dtype, np.integer):
                raise ValueError(
                    f"{where} batch[{key!r}] has shape {v.shape} and dtype {v.dtype}; expected "
                    f"integers of shape ({x.shape[0]},)"
                )
            out[key] = v.astype(np.int64)
    return out


def _mesh(devices: Sequence[Any] | None) -> Mesh:
    if jax.process_count() > 1:
        raise ValueError(
            f"jax.process_count()={jax.process_count()}: rrjax.train is data-parallel over the "
            "local devices of one process; multi-host training is not supported"
        )
    return data_mesh(jax.local_devices() if devices is None else devices)


def _put(arrays: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    return {k: shard_rows(mesh, v) for k, v in arrays.items()}


# ----------------------------------------------------------------------------- evaluation


@functools.partial(jax.jit, static_argnames=("detector",))
def _eval_logits(variables: Any, x: jax.Array, *, detector: Detector) -> jax.Array:
    return detector.apply(variables, x).astype(jnp.float32)


def predict(
    detector: Detector,
    variables: Any,
    batches: Iterable[Mapping[str, Any]],
    *,
    devices: Sequence[Any] | None = None,
) -> dict[str, np.ndarray]:
    """Eval-mode predictions over an iterable of batch dicts, data-parallel over ``devices``.

    Args:
      detector: the detector.
      variables: its variables.
      batches: batch dicts (``x``, ``y``, optional ``index`` and ``video_id``).
      devices: devices to shard batches over (default: all local devices).

    Returns:
      ``{"logits": f32[N,2], "p_fake": f64[N], "y": int32[N]}`` plus ``index`` / ``video_id``
      (int64[N]) when every batch had them. ``p_fake`` is ``expit(logit_1 - logit_0)`` in
      float64, which equals ``softmax(logits)[:, 1]``.
    """
    mesh = _mesh(devices)
    n_dev = mesh.devices.size
    variables = jax.device_put(variables, NamedSharding(mesh, P()))
    parts: dict[str, list[np.ndarray]] = {"logits": [], "y": [], "index": [], "video_id": []}
    n_batches = 0
    for batch in batches:
        host = _host_batch(batch, detector, where="batches")
        padded, mask = pad_batch({"x": host["x"]}, n_dev)
        logits = np.asarray(_eval_logits(variables, _put(padded, mesh)["x"], detector=detector))
        parts["logits"].append(logits[mask > 0])
        for key in ("y", "index", "video_id"):
            if key in host:
                parts[key].append(host[key])
        n_batches += 1
    if n_batches == 0:
        raise ValueError("batches yielded no batches; expected at least one batch to evaluate")
    out = {"logits": np.concatenate(parts["logits"]), "y": np.concatenate(parts["y"])}
    for key in ("index", "video_id"):
        if len(parts[key]) == n_batches:
            out[key] = np.concatenate(parts[key])
    margin = out["logits"][:, 1].astype(np.float64) - out["logits"][:, 0].astype(np.float64)
    out["p_fake"] = special.expit(margin)
    return out


def evaluate(
    detector: Detector,
    variables: Any,
    batches: Iterable[Mapping[str, Any]],
    *,
    devices: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Clean metrics (ACC, AUC, EER, AP) of a detector; video-level too for frame detectors.

    Args:
      detector: the detector.
      variables: its variables.
      batches: batch dicts; frame detectors get video-level metrics (mean frame probability per
        ``video_id``) when the batches carry ``video_id``.
      devices: devices to shard batches over (default: all local devices).

    Returns:
      ``rrjax.clean_metrics.clean_metrics`` output: ``acc``, ``auc``, ``eer``, ``ap``, ``n``,
      ``n_real``, ``n_fake`` and, for frame detectors with video ids, ``video``.
    """
    pred = predict(detector, variables, batches, devices=devices)
    video_ids = None if detector.is_video else pred.get("video_id")
    if video_ids is not None and len(np.unique(video_ids)) == len(video_ids):
        video_ids = None  # every frame its own video (an image dataset): nothing to aggregate
    return clean_metrics.clean_metrics(pred["p_fake"], pred["y"], video_ids)


# ----------------------------------------------------------------------------- training


def train_epoch(
    state: TrainState,
    batches: Iterable[Mapping[str, Any]],
    *,
    detector: Detector,
    optimizer: OptimizerConfig,
    mesh: Mesh,
    epoch: int,
    log_every: int = 0,
) -> tuple[TrainState, dict[str, float]]:
    """One epoch of the jitted data-parallel step (``train_state.make_train_step``) over ``batches``.

    Args:
      state: the training state, replicated over ``mesh``.
      batches: this epoch's batch dicts (``x``, ``y``; see the module docstring).
      detector, optimizer, mesh: what the step is compiled for.
      epoch: the 0-based epoch (for messages and logs).
      log_every: log the running mean loss every this many steps (0: never).

    Returns:
      ``(state, sums)``: the state after the epoch and the epoch's ``loss``, ``correct`` and
      ``n`` summed over real (unpadded) rows, as host floats.

    Raises:
      ValueError: a batch is invalid, or ``batches`` yielded none.
    """
    step_fn = make_train_step(detector, optimizer, mesh)
    n_dev = int(mesh.devices.size)
    where = f"train_batches({epoch})"
    step = int(state.step)
    sums = None
    for batch in batches:
        host = _host_batch(batch, detector, where=where)
        padded, mask = pad_batch({"x": host["x"], "y": host["y"]}, n_dev)
        dev = _put({**padded, "mask": mask}, mesh)
        state, s = step_fn(state, dev["x"], dev["y"], dev["mask"])
        sums = s if sums is None else jax.tree_util.tree_map(jnp.add, sums, s)
        step += 1
        if log_every and step % log_every == 0:
            logging.info(
                "epoch %d step %d: mean train loss so far %.4f",
                epoch + 1, step, float(sums["loss"]) / float(sums["n"]),
            )
    if sums is None:
        raise ValueError(f"{where} yielded no batches; expected at least one")
    return state, {k: float(v) for k, v in sums.items()}


def _check_train_args(
    detector: Any,
    train_batches: Any,
    val_batches: Any,
    init_variables: Any,
    *,
    epochs: Any,
    seed: Any,
    log_every: Any,
    max_to_keep: Any,
    resume: Any,
    learning_rate: Any,
    weight_decay: Any,
    weight_decay_mode: Any,
) -> tuple[int, int, int, int, OptimizerConfig]:
    """Validates ``train``'s arguments; returns ``(epochs, seed, log_every, max_to_keep, optimizer)``."""
    if not isinstance(detector, Detector):
        raise ValueError(f"detector must be an rrjax.models.Detector, got {type(detector).__name__}")
    if not callable(train_batches):
        raise ValueError("train_batches must be a callable epoch -> iterable of batch dicts")
    if val_batches is not None and not callable(val_batches):
        raise ValueError("val_batches must be None or a callable () -> iterable of batch dicts")
    epochs = check_int(epochs, name="epochs", minimum=1)
    seed = check_int(seed, name="seed", minimum=0)
    log_every = check_int(log_every, name="log_every", minimum=0)
    max_to_keep = check_int(max_to_keep, name="max_to_keep", minimum=1)
    if not isinstance(resume, bool):
        raise ValueError(f"resume must be True or False, got {resume!r}")
    optimizer = OptimizerConfig(learning_rate, weight_decay, weight_decay_mode)
    if init_variables is not None:
        problems = checkpoints.variable_mismatches(detector, init_variables)
        if problems:
            raise ValueError(
                f"init_variables do not match detector {detector.name!r}: "
                f"{checkpoints.summarise_mismatches(problems)}"
            )
    return epochs, seed, log_every, max_to_keep, optimizer


def _mean_or_none(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


def _epoch_record(epoch: int, step: int, sums: dict[str, float], work_dir: pathlib.Path) -> dict[str, Any]:
    if not np.isfinite(sums["loss"]):
        raise FloatingPointError(
            f"training diverged in epoch {epoch + 1} (mean loss {sums['loss'] / sums['n']}); "
            f"the state of epoch {epoch} is kept in {str(work_dir)!r}. Lower learning_rate."
        )
    train_metrics = {
        "loss": _mean_or_none(sums["loss"], sums["n"]),
        "acc": _mean_or_none(sums["correct"], sums["n"]),
        "n": int(sums["n"]),
    }
    return {"epoch": epoch + 1, "step": step, "train": train_metrics}


def train(
    detector: Detector,
    train_batches: BatchFn,
    val_batches: Callable[[], Iterable[Mapping[str, Any]]] | None = None,
    *,
    epochs: int,
    work_dir: str | os.PathLike,
    learning_rate: float = 2e-4,
    weight_decay: float = 5e-4,
    weight_decay_mode: str = "l2",
    seed: int = 0,
    resume: bool = False,
    init_variables: Any = None,
    devices: Sequence[Any] | None = None,
    log_every: int = 50,
    max_to_keep: int = 2,
    run_info: Mapping[str, Any] | None = None,
) -> TrainResult:
    """Trains ``detector`` with Adam, evaluating on the validation data after every epoch.

    Args:
      detector: the detector to train (``apply_train`` gives training-mode BatchNorm/dropout).
      train_batches: ``train_batches(epoch) -> iterable of batch dicts`` for epoch 0, 1, ...;
        its order must be a deterministic function of (seed, epoch) for resumed runs to equal
        uninterrupted ones.
      val_batches: ``val_batches() -> iterable of batch dicts``, or None to skip validation.
      epochs: total number of epochs (a resumed run continues up to this number).
      work_dir: directory for the training state (``state/``) and ``history.json``.
      learning_rate: Adam step size (DeepfakeBench: 2e-4).
      weight_decay: weight decay (DeepfakeBench: 5e-4).
      weight_decay_mode: ``"l2"`` (torch Adam, DeepfakeBench) or ``"decoupled"`` (AdamW).
      seed: seeds initialisation and dropout.
      resume: continue from the latest state in ``work_dir`` (or start, if it has none).
        Without it, a ``work_dir`` that already holds training state is an error (nothing is
        overwritten silently).
      init_variables: start from these variables instead of ``detector.init`` (fine-tuning
        imported weights); same leaves, shapes and dtypes as ``detector.init``.
      devices: devices for data parallelism (default: all local devices).
      log_every: log the running training loss every this many steps (0 = per epoch only).
      max_to_keep: training states kept in ``work_dir/state``.
      run_info: JSON-able facts that define the run but are not arguments here (dataset, its
        config, batch size, ...); resuming refuses a ``work_dir`` saved with different ones.

    Returns:
      A ``TrainResult`` with the final variables and the per-epoch history.

    Raises:
      ValueError: invalid arguments or batches, a ``work_dir`` holding state without
        ``resume``, or a state written by a different model / hyperparameters.
      FloatingPointError: the training loss became NaN or inf (nothing of that epoch is saved).
    """
    epochs, seed, log_every, max_to_keep, optimizer = _check_train_args(
        detector, train_batches, val_batches, init_variables, epochs=epochs, seed=seed, log_every=log_every,
        max_to_keep=max_to_keep, resume=resume, learning_rate=learning_rate, weight_decay=weight_decay,
        weight_decay_mode=weight_decay_mode,
    )
    mesh = _mesh(devices)
    config = {
        "optimizer": f"adam(b1={ADAM['b1']}, b2={ADAM['b2']}, eps={ADAM['eps']})",
        **dataclasses.asdict(optimizer),
        "seed": seed,
        "epochs": epochs,
        "devices": int(mesh.devices.size),
    }
    run_fingerprint = fingerprint(detector, optimizer, seed, dict(run_info or {}))
    work_dir = pathlib.Path(work_dir).absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False)
    with contextlib.closing(ocp.CheckpointManager(work_dir / "state", options=options)) as manager:
        state, history = restore_or_init(
            manager, detector=detector, optimizer=optimizer, seed=seed, mesh=mesh, init_variables=init_variables,
            run_fingerprint=run_fingerprint, resume=resume, epochs=epochs,
        )
        for epoch in range(int(state.epoch), epochs):
            start = time.perf_counter()
            state, sums = train_epoch(state, train_batches(epoch), detector=detector, optimizer=optimizer,
                                      mesh=mesh, epoch=epoch, log_every=log_every)
            record = _epoch_record(epoch, int(state.step), sums, work_dir)
            state = state.replace(epoch=jax.device_put(jnp.int32(epoch + 1), NamedSharding(mesh, P())))
            if val_batches is not None:
                record["val"] = evaluate(detector, state.variables, val_batches(), devices=list(mesh.devices.flat))
            record["seconds"] = round(time.perf_counter() - start, 3)
            history.append(record)
            logging.info("epoch %d/%d: %s", epoch + 1, epochs, json.dumps(record))
            save_state(manager, state, run_fingerprint, history)
            atomic_write_json(work_dir / "history.json", history, indent=2, sort_keys=True)
    return TrainResult(
        variables=state.variables,
        history=history,
        config={**config, "steps": int(state.step)},
        step=int(state.step),
        epoch=int(state.epoch),
    )


def export(
    path: str | os.PathLike,
    detector: Detector,
    result: TrainResult,
    *,
    metadata: Mapping[str, Any] | None = None,
    test_metrics: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> pathlib.Path:
    """Saves a trained detector with its provenance (``rrjax.checkpoints.save``).

    Args:
      path: checkpoint directory.
      detector: the trained detector.
      result: ``train``'s result.
      metadata: caller fields, conventionally ``dataset``, ``dataset_config`` and ``command``.
      test_metrics: clean metrics on the test split (``evaluate``), recorded next to the last
        epoch's validation metrics.
      overwrite: replace an existing checkpoint.

    Returns:
      The checkpoint path. The sidecar gains ``metrics`` (``val``, ``test``), ``training``
      (hyperparameters, steps) and ``history``. Only the variables are stored (float32, no
      optimizer state), so detector checkpoints stay small.
    """
    if not isinstance(result, TrainResult):
        raise ValueError(f"result must be a TrainResult from rrjax.train.train, got {type(result).__name__}")
    meta = dict(metadata or {})
    metrics = {"val": result.history[-1].get("val") if result.history else None}
    if test_metrics is not None:
        metrics["test"] = dict(test_metrics)
    meta.setdefault("metrics", metrics)
    meta.setdefault("training", result.config)
    meta.setdefault("history", result.history)
    return checkpoints.save(path, detector, result.variables, metadata=meta, overwrite=overwrite)
