"""Training and clean evaluation of detectors: optax Adam, data-parallel jit step, resumable state.

The library half of ``experiments/train.py``; it knows nothing about datasets or flags. Data
comes in through two callables, ``train_batches(epoch) -> iterable of batch dicts`` and
``val_batches() -> iterable of batch dicts``, with the batch dicts of the data contract::

    {"x": f32[B, *input_shape] in [0,1], "y": int32[B], "index": int64[B], "video_id": int64[B]}

(``index`` and ``video_id`` are optional here; ``video_id`` enables video-level metrics).

Decisions (details in notes/train.md):

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
* **Resume.** The training state (params, other collections, optimizer state, step, epoch, rng)
  and the history are saved together by an orbax ``CheckpointManager`` after every epoch
  (``work_dir/state/<epoch>``; orbax commits each step atomically). A resumed run restores the
  latest one against an abstract target (``jax.eval_shape``) and continues; it refuses a state
  written with another model or other hyperparameters.
* **Clean metrics.** Probabilities are recomputed on the host in float64 from the logits
  (``expit(l1 - l0)``), so that confident predictions do not collapse into float32 ties at 1.0,
  which would distort AUC/AP.
"""

from __future__ import annotations

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
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from scipy import special

from rrjax import checkpoints, clean_metrics
from rrjax._io import atomic_write_json
from rrjax.sharding import data_mesh, pad_batch, shard_rows
from rrjax._validation import as_labels, as_pixels, check_choice, check_int, check_number
from rrjax.models.base import Detector

__all__ = [
    "WEIGHT_DECAY_MODES",
    "TrainResult",
    "make_optimizer",
    "pad_batch",
    "train",
    "predict",
    "evaluate",
    "export",
]

WEIGHT_DECAY_MODES = ("l2", "decoupled")
_ADAM = {"b1": 0.9, "b2": 0.999, "eps": 1e-8}  # torch.optim.Adam's defaults, as DeepfakeBench uses
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


def make_optimizer(
    *, learning_rate: float = 2e-4, weight_decay: float = 5e-4, weight_decay_mode: str = "l2"
) -> optax.GradientTransformation:
    """Adam with L2 (torch ``Adam(weight_decay=...)``) or decoupled (AdamW) weight decay.

    Args:
      learning_rate: step size (> 0).
      weight_decay: decay coefficient (>= 0).
      weight_decay_mode: ``"l2"`` adds ``weight_decay * param`` to the gradient before Adam's
        moments (DeepfakeBench / torch ``Adam``); ``"decoupled"`` applies
        ``-learning_rate * weight_decay * param`` outside them (torch ``AdamW``, ``optax.adamw``).

    Returns:
      An ``optax.GradientTransformation``.

    References:
      Kingma & Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015.
      Loshchilov & Hutter, "Decoupled Weight Decay Regularization", ICLR 2019.
    """
    learning_rate = check_number(learning_rate, name="learning_rate", lower=0.0, strict=True)
    weight_decay = check_number(weight_decay, name="weight_decay", lower=0.0)
    check_choice(weight_decay_mode, WEIGHT_DECAY_MODES, name="weight_decay_mode")
    if weight_decay_mode == "decoupled":
        return optax.adamw(learning_rate, weight_decay=weight_decay, **_ADAM)
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_adam(**_ADAM),
        optax.scale(-learning_rate),
    )


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


# ----------------------------------------------------------------------------- compiled steps


@functools.lru_cache(maxsize=8)
def _train_step(detector: Detector, hparams: tuple[tuple[str, Any], ...], mesh: Mesh) -> Callable:
    """The jitted step ``(state, x, y, mask) -> (state, sums)``, cached per detector/optimizer/mesh
    so repeated ``train`` calls in one process (resume, sweeps, tests) compile once."""
    tx = make_optimizer(**dict(hparams))

    def step(state, x, y, mask):
        key = jax.random.fold_in(state["rng"], state["step"])

        def loss_fn(params):
            variables = {"params": params, **state["collections"]}
            logits, updates = detector.apply_train(variables, x, key=key)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
            loss = jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
            return loss, (logits, updates, ce)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, (logits, updates, ce)), grads = grad_fn(state["params"])
        deltas, opt_state = tx.update(grads, state["opt_state"], state["params"])
        new_state = {
            **state,
            "params": optax.apply_updates(state["params"], deltas),
            "opt_state": opt_state,
            "collections": {**state["collections"], **updates},
            "step": state["step"] + 1,
        }
        correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
        # Sums, not means: they add across steps and the host divides once per epoch.
        sums = {"loss": jnp.sum(ce * mask), "correct": jnp.sum(correct * mask), "n": jnp.sum(mask)}
        return new_state, sums

    replicated = NamedSharding(mesh, P())
    batch = NamedSharding(mesh, P("data"))
    return jax.jit(
        step,
        in_shardings=(replicated, batch, batch, batch),
        out_shardings=(replicated, replicated),
        donate_argnums=(0,),
    )


@functools.partial(jax.jit, static_argnames=("detector",))
def _eval_logits(variables: Any, x: jax.Array, *, detector: Detector) -> jax.Array:
    return detector.apply(variables, x).astype(jnp.float32)


# ----------------------------------------------------------------------------- evaluation


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


def _fingerprint(detector: Detector, config: dict, run_info: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("learning_rate", "weight_decay", "weight_decay_mode", "seed")
    return json.loads(
        json.dumps(
            {
                "model": detector.name,
                "config": dict(detector.config),
                "input_shape": list(detector.input_shape),
                **{k: config[k] for k in keep},
                **{f"run:{k}": v for k, v in sorted(run_info.items())},
            }
        )
    )


def _init_state(detector: Detector, hparams: tuple, seed: int, init_variables: Any) -> dict:
    tx = make_optimizer(**dict(hparams))
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = detector.init(init_key) if init_variables is None else init_variables
    variables = {k: v for k, v in variables.items()}
    params = variables.pop("params")
    return {
        "params": params,
        "collections": variables,
        "opt_state": tx.init(params),
        "step": jnp.zeros((), jnp.int32),
        "epoch": jnp.zeros((), jnp.int32),
        "rng": train_key,
    }


@functools.lru_cache(maxsize=8)
def _init_fn(mesh: Mesh) -> Callable:
    # jit, not eager: eager Linen init dispatches (and compiles) every op separately.
    return jax.jit(_init_state, static_argnums=(0, 1, 2), out_shardings=NamedSharding(mesh, P()))


def _variables(state: dict) -> dict:
    return {"params": state["params"], **state["collections"]}


def _mean_or_none(num: float, den: float) -> float | None:
    return num / den if den > 0 else None


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
    make_optimizer(  # validates the three before they become cache keys
        learning_rate=learning_rate, weight_decay=weight_decay, weight_decay_mode=weight_decay_mode
    )
    hparams = (
        ("learning_rate", float(learning_rate)),
        ("weight_decay", float(weight_decay)),
        ("weight_decay_mode", weight_decay_mode),
    )
    mesh = _mesh(devices)
    n_dev = int(mesh.devices.size)
    config = {
        "optimizer": f"adam(b1={_ADAM['b1']}, b2={_ADAM['b2']}, eps={_ADAM['eps']})",
        "learning_rate": float(learning_rate),
        "weight_decay": float(weight_decay),
        "weight_decay_mode": weight_decay_mode,
        "seed": seed,
        "epochs": epochs,
        "devices": n_dev,
    }
    fingerprint = _fingerprint(detector, config, dict(run_info or {}))
    if init_variables is not None:
        problems = checkpoints.variable_mismatches(detector, init_variables)
        if problems:
            raise ValueError(
                f"init_variables do not match detector {detector.name!r}: "
                f"{checkpoints.summarise_mismatches(problems)}"
            )

    work_dir = pathlib.Path(work_dir).absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    replicated = NamedSharding(mesh, P())
    init_fn = _init_fn(mesh)
    abstract = jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
        jax.eval_shape(init_fn, detector, hparams, seed, init_variables),
    )
    manager = ocp.CheckpointManager(
        work_dir / "state",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False
        ),
    )
    try:
        latest = manager.latest_step()
        if latest is None:
            state = init_fn(detector, hparams, seed, init_variables)
            history: list[dict] = []
        else:
            if not resume:
                raise ValueError(
                    f"work_dir={str(work_dir)!r} already holds training state (epoch {latest}); pass "
                    "resume=True to continue it, or use a fresh work_dir"
                )
            restored = manager.restore(
                latest,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract), run=ocp.args.JsonRestore()
                ),
            )
            saved = restored.run["fingerprint"]
            if saved != fingerprint:
                diff = sorted(k for k in saved.keys() | fingerprint.keys() if saved.get(k) != fingerprint.get(k))
                raise ValueError(
                    f"work_dir={str(work_dir)!r} holds a run with different {diff} "
                    f"(saved {[saved.get(k) for k in diff]}, now {[fingerprint.get(k) for k in diff]}); "
                    "resume with the same settings or use a fresh work_dir"
                )
            state, history = restored.state, list(restored.run["history"])
            if int(state["epoch"]) > epochs:
                raise ValueError(
                    f"work_dir={str(work_dir)!r} holds {int(state['epoch'])} completed epochs, more "
                    f"than epochs={epochs}"
                )
            logging.info("resumed %s from epoch %d, step %d", work_dir, int(state["epoch"]), int(state["step"]))

        step_fn = _train_step(detector, hparams, mesh)
        step = int(state["step"])
        for epoch in range(int(state["epoch"]), epochs):
            start = time.perf_counter()
            sums = None
            for batch in train_batches(epoch):
                host = _host_batch(batch, detector, where=f"train_batches({epoch})")
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
                raise ValueError(f"train_batches({epoch}) yielded no batches; expected at least one")
            sums = {k: float(v) for k, v in sums.items()}
            if not np.isfinite(sums["loss"]):
                raise FloatingPointError(
                    f"training diverged in epoch {epoch + 1} (mean loss {sums['loss'] / sums['n']}); "
                    f"the state of epoch {epoch} is kept in {str(work_dir)!r}. Lower learning_rate."
                )
            state = {**state, "epoch": jax.device_put(jnp.int32(epoch + 1), replicated)}
            record: dict[str, Any] = {
                "epoch": epoch + 1,
                "step": step,
                "train": {
                    "loss": _mean_or_none(sums["loss"], sums["n"]),
                    "acc": _mean_or_none(sums["correct"], sums["n"]),
                    "n": int(sums["n"]),
                },
            }
            if val_batches is not None:
                record["val"] = evaluate(detector, _variables(state), val_batches(), devices=list(mesh.devices.flat))
            record["seconds"] = round(time.perf_counter() - start, 3)
            history.append(record)
            logging.info("epoch %d/%d: %s", epoch + 1, epochs, json.dumps(record))
            manager.save(
                epoch + 1,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    run=ocp.args.JsonSave({"fingerprint": fingerprint, "history": history}),
                ),
            )
            manager.wait_until_finished()
            atomic_write_json(work_dir / "history.json", history, indent=2, sort_keys=True)
    finally:
        manager.close()
    return TrainResult(
        variables=_variables(state),
        history=history,
        config={**config, "steps": int(state["step"])},
        step=int(state["step"]),
        epoch=int(state["epoch"]),
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
