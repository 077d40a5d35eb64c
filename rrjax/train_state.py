"""The training state and what changes it: the optimizer, the jitted data-parallel step, and the
state's orbax checkpoints (the shape of flax's imagenet example; :mod:`rrjax.train` drives them).

A run's state is one :class:`TrainState` pytree, replicated on the devices of a one-axis
``"data"`` mesh. The optimizer is not part of it: :class:`OptimizerConfig` (hashable
hyperparameters) rebuilds the same ``optax`` transformation wherever it is needed, so the state
holds arrays only and orbax saves and restores it whole. Each epoch is one
``CheckpointManager`` step (``work_dir/state/<epoch>``) holding the state and, as JSON, the
run's fingerprint and history; a resumed run restores the latest against an abstract target
(``jax.eval_shape``) and refuses one whose fingerprint differs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax
import orbax.checkpoint as ocp
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from rrjax._validation import check_choice, check_number
from rrjax.models.base import Detector

__all__ = [
    "WEIGHT_DECAY_MODES",
    "OptimizerConfig",
    "TrainState",
    "make_optimizer",
    "create_train_state",
    "make_train_step",
    "fingerprint",
    "restore_or_init",
    "save_state",
]

WEIGHT_DECAY_MODES = ("l2", "decoupled")
ADAM = {"b1": 0.9, "b2": 0.999, "eps": 1e-8}  # torch.optim.Adam's defaults, as DeepfakeBench uses


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
        return optax.adamw(learning_rate, weight_decay=weight_decay, **ADAM)
    return optax.chain(
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_adam(**ADAM),
        optax.scale(-learning_rate),
    )


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer's hyperparameters, validated; hashable, so it is a static jit argument and a
    cache key of the compiled step (one compilation per detector, optimizer and mesh)."""

    learning_rate: float = 2e-4
    weight_decay: float = 5e-4
    weight_decay_mode: str = "l2"

    def __post_init__(self) -> None:
        make_optimizer(**dataclasses.asdict(self))  # validates
        object.__setattr__(self, "learning_rate", float(self.learning_rate))
        object.__setattr__(self, "weight_decay", float(self.weight_decay))

    def tx(self) -> optax.GradientTransformation:
        """The ``optax`` transformation (:func:`make_optimizer`)."""
        return make_optimizer(**dataclasses.asdict(self))


@flax.struct.dataclass
class TrainState:
    """Everything a resumed run needs, as one pytree of arrays.

    Attributes:
      params: the detector's ``params`` collection.
      collections: its other variable collections (e.g. ``batch_stats``), as training-mode
        passes update them.
      opt_state: the optimizer state of ``OptimizerConfig.tx()`` for ``params``.
      step: int32[] optimizer steps taken; step ``s`` draws dropout with ``fold_in(rng, s)``.
      epoch: int32[] completed epochs.
      rng: the training key.
    """

    params: Any
    collections: Any
    opt_state: Any
    step: jax.Array
    epoch: jax.Array
    rng: jax.Array

    @property
    def variables(self) -> dict:
        """The detector's variables (``params`` plus the other collections)."""
        return {"params": self.params, **self.collections}


def _init_state(detector: Detector, optimizer: OptimizerConfig, seed: int, init_variables: Any) -> TrainState:
    init_key, train_key = jax.random.split(jax.random.PRNGKey(seed))
    variables = detector.init(init_key) if init_variables is None else init_variables
    variables = {k: v for k, v in variables.items()}
    params = variables.pop("params")
    return TrainState(
        params=params,
        collections=variables,
        opt_state=optimizer.tx().init(params),
        step=jnp.zeros((), jnp.int32),
        epoch=jnp.zeros((), jnp.int32),
        rng=train_key,
    )


@functools.lru_cache(maxsize=8)
def _init_fn(mesh: Mesh) -> Callable:
    # jit, not eager: eager Linen init dispatches (and compiles) every op separately.
    return jax.jit(_init_state, static_argnums=(0, 1, 2), out_shardings=NamedSharding(mesh, P()))


def create_train_state(
    detector: Detector, optimizer: OptimizerConfig, seed: int, mesh: Mesh, init_variables: Any = None
) -> TrainState:
    """A fresh state, replicated over ``mesh``.

    Args:
      detector: the detector to train.
      optimizer: its optimizer's hyperparameters.
      seed: ``PRNGKey(seed)`` splits into the init key and the training key.
      mesh: the data-parallel mesh.
      init_variables: start from these variables instead of ``detector.init`` (already checked
        against the detector by the caller).
    """
    return _init_fn(mesh)(detector, optimizer, seed, init_variables)


def _abstract_state(
    detector: Detector, optimizer: OptimizerConfig, seed: int, mesh: Mesh, init_variables: Any
) -> TrainState:
    replicated = NamedSharding(mesh, P())
    return jax.tree_util.tree_map(
        lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
        jax.eval_shape(_init_fn(mesh), detector, optimizer, seed, init_variables),
    )


@functools.lru_cache(maxsize=8)
def make_train_step(detector: Detector, optimizer: OptimizerConfig, mesh: Mesh) -> Callable:
    """The jitted step ``(state, x, y, mask) -> (state, sums)``.

    ``x: f32[B, *input_shape]`` and ``y: int32[B]`` are split over ``mesh``'s ``"data"`` axis,
    ``mask: f32[B]`` is 0 on padding rows; the state is replicated and donated. ``sums`` holds
    f32[] ``loss``, ``correct`` and ``n`` summed over the batch's real rows (sums add across
    steps; the host divides once per epoch). Cached per detector, optimizer and mesh, so repeated
    ``train`` calls in one process (resume, sweeps, tests) compile once.
    """
    tx = optimizer.tx()

    def step(state: TrainState, x, y, mask):
        key = jax.random.fold_in(state.rng, state.step)

        def loss_fn(params):
            variables = {"params": params, **state.collections}
            logits, updates = detector.apply_train(variables, x, key=key)
            ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
            loss = jnp.sum(ce * mask) / jnp.maximum(jnp.sum(mask), 1.0)
            return loss, (logits, updates, ce)

        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, (logits, updates, ce)), grads = grad_fn(state.params)
        deltas, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            params=optax.apply_updates(state.params, deltas),
            opt_state=opt_state,
            collections={**state.collections, **updates},
            step=state.step + 1,
        )
        correct = (jnp.argmax(logits, axis=-1) == y).astype(jnp.float32)
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


def fingerprint(
    detector: Detector, optimizer: OptimizerConfig, seed: int, run_info: Mapping[str, Any]
) -> dict[str, Any]:
    """What defines a run (model, config, hyperparameters, seed, the caller's ``run_info``), as
    JSON; a resumed run must have the saved one."""
    return json.loads(
        json.dumps(
            {
                "model": detector.name,
                "config": dict(detector.config),
                "input_shape": list(detector.input_shape),
                **dataclasses.asdict(optimizer),
                "seed": seed,
                **{f"run:{k}": v for k, v in sorted(run_info.items())},
            }
        )
    )


def restore_or_init(
    manager: ocp.CheckpointManager,
    *,
    detector: Detector,
    optimizer: OptimizerConfig,
    seed: int,
    mesh: Mesh,
    init_variables: Any,
    run_fingerprint: dict[str, Any],
    resume: bool,
    epochs: int,
) -> tuple[TrainState, list[dict]]:
    """The latest state in ``manager`` with its history, or a fresh state and an empty history.

    The saved state is restored against the abstract target of :func:`create_train_state`
    (``jax.eval_shape``, replicated shardings); nothing is unpickled.

    Raises:
      ValueError: a saved state exists but ``resume`` is False, it was written by a run with
        another fingerprint, or it holds more than ``epochs`` epochs.
    """
    work_dir = str(pathlib.Path(manager.directory).parent)
    latest = manager.latest_step()
    if latest is None:
        return create_train_state(detector, optimizer, seed, mesh, init_variables), []
    if not resume:
        raise ValueError(
            f"work_dir={work_dir!r} already holds training state (epoch {latest}); pass "
            "resume=True to continue it, or use a fresh work_dir"
        )
    abstract = _abstract_state(detector, optimizer, seed, mesh, init_variables)
    restored = manager.restore(
        latest,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), run=ocp.args.JsonRestore()),
    )
    saved = restored.run["fingerprint"]
    if saved != run_fingerprint:
        diff = sorted(k for k in saved.keys() | run_fingerprint.keys() if saved.get(k) != run_fingerprint.get(k))
        raise ValueError(
            f"work_dir={work_dir!r} holds a run with different {diff} "
            f"(saved {[saved.get(k) for k in diff]}, now {[run_fingerprint.get(k) for k in diff]}); "
            "resume with the same settings or use a fresh work_dir"
        )
    state = restored.state
    if int(state.epoch) > epochs:
        raise ValueError(f"work_dir={work_dir!r} holds {int(state.epoch)} completed epochs, more than epochs={epochs}")
    logging.info("resumed %s from epoch %d, step %d", work_dir, int(state.epoch), int(state.step))
    return state, list(restored.run["history"])


def save_state(
    manager: ocp.CheckpointManager, state: TrainState, run_fingerprint: dict[str, Any], history: list[dict]
) -> None:
    """Saves ``state`` as step ``state.epoch`` with the fingerprint and history (orbax commits the
    step atomically), and waits until it is on disk."""
    manager.save(
        int(state.epoch),
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            run=ocp.args.JsonSave({"fingerprint": run_fingerprint, "history": history}),
        ),
    )
    manager.wait_until_finished()
