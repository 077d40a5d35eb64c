"""Auto-PGD (Croce & Hein, ICML 2020), L∞ and L2, with restarts, targets and a convergence signal.

APGD is PGD with momentum whose step size needs no tuning: it starts at 2ε and is halved at
fixed checkpoints when the attack stalls, each halving restarting from the best point found.
Written for one ε like :mod:`rrjax.attacks.pgd`; ``_common.over_eps`` adds the grid axis, so
the whole grid (and every sample) is one compiled program. Step sizes and the stall counters
are per-sample arrays; the checkpoint schedule depends only on ``steps`` and is static.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial
from jax.typing import ArrayLike

from rrjax import _validation as V
from rrjax.attacks import _common as C
from rrjax.attacks.base import AttackDef, keyword_defaults

__all__ = ["apgd", "apgd_with_info", "APGDResult", "core_with_info", "checkpoints", "check_hparams", "DEFINITION"]

LOSSES = C.LOSSES + ("dlr",)
_MOMENTUM = 0.75  # α of the paper: weight of the new gradient step against the previous move
_DLR_DENOMINATOR_FLOOR = 1e-12  # as the reference implementation


@dataclasses.dataclass(frozen=True)
class APGDResult:
    """APGD's output with its convergence signal.

    Attributes:
      x_adv: f32[E,N,...] (``[N,...]`` for a scalar ε), as :func:`apgd` returns.
      improved_since_last_checkpoint: bool[E,N] (``[N]`` for a scalar ε): the best loss of the
        returned run rose after the checkpoint before the last one, ``w_{J−1}`` — during the
        last checkpoint interval or after it (for ``steps=100``: after iteration 93). The
        step-size rule would test this next: such a sample's attack had not converged, and
        more steps could still raise its loss. Computed on the loss alone; for RA a sample
        already adversarial is settled whatever the flag says.
    """

    x_adv: jax.Array
    improved_since_last_checkpoint: jax.Array


jax.tree_util.register_dataclass(APGDResult, data_fields=["x_adv", "improved_since_last_checkpoint"],
                                 meta_fields=[])


def checkpoints(steps: int) -> tuple[int, ...]:
    """The iterations ``w_j`` after which APGD may halve its step size (the paper's schedule).

    ``w_j = ⌈p_j · steps⌉`` with ``p_0 = 0``, ``p_1 = 0.22`` and
    ``p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)``, computed exactly in hundredths;
    checkpoints at ``steps`` or later (which could change nothing) and repeats are dropped.
    For ``steps=100``: ``(22, 41, 57, 70, 80, 87, 93, 99)``.
    """
    out: list[int] = []
    p_prev, p = 0, 22
    while (w := -(-p * steps // 100)) < steps:
        if not out or w > out[-1]:
            out.append(w)
        p_prev, p = p, p + max(p - p_prev - 3, 6)
    return tuple(out)


class _State(NamedTuple):
    x: jax.Array  # current iterate x^(k)
    x_old: jax.Array  # x^(k-1), for the momentum term
    g: jax.Array  # gradient at x
    loss_prev: jax.Array  # loss at the previous iterate: counts successful steps
    x_best: jax.Array  # highest-loss point, where a halving restarts
    g_best: jax.Array
    loss_best: jax.Array
    x_out: jax.Array  # the sample's worst case for the metric (success first, then loss)
    ok_out: jax.Array
    loss_out: jax.Array
    step: jax.Array  # per-sample step size
    n_up: jax.Array  # successful steps since the last checkpoint
    reduced: jax.Array  # whether the last checkpoint halved the step
    loss_check: jax.Array  # best loss at the last checkpoint
    loss_ref: jax.Array  # best loss at checkpoint w_{J-1} (the convergence signal)


def dlr(logits: jax.Array, label: jax.Array) -> jax.Array:
    """Difference-of-logits ratio ``−(z_y − max_{i≠y} z_i) / (z_π1 − z_π3)`` per sample (C ≥ 3)."""
    top = jax.lax.top_k(logits, 3)[0]
    return C.margin(logits, label) / (top[:, 0] - top[:, 2] + _DLR_DENOMINATOR_FLOOR)


def _loss(spec: C.LossSpec, logits: jax.Array, label: jax.Array, p_ref: jax.Array | None) -> jax.Array:
    return dlr(logits, label) if spec.name == "dlr" else C.per_sample_loss(spec, logits, label, p_ref)


def _start(keys: jax.Array, x: jax.Array, eps: jax.Array, norm: str) -> jax.Array:
    """Uniform in the L∞ ball; on the L2 sphere (a normalised Gaussian, as the reference)."""
    d = C.random_in_ball(keys, x, norm)
    if norm == "l2":
        d = C.ascent_direction(d, "l2")
    return C.project(x + eps * d, x, eps, norm)


def _run(evaluate, x, x0, eps, rho, *, spec, steps, norm, unroll) -> tuple[jax.Array, ...]:
    """One APGD run from ``x0``: ``(x_out, ok_out, loss_out, improved)``, each per sample."""
    ws = checkpoints(steps)
    is_check = np.zeros(steps, bool)
    window = np.ones(steps, np.float32)
    is_check[np.asarray(ws, int) - 1] = True
    window[np.asarray(ws, int) - 1] = np.diff((0,) + ws)
    ref_iter = (ws[-2] if len(ws) >= 2 else 0) - 1  # -1: the start point
    is_check, window = jnp.asarray(is_check), jnp.asarray(window)
    sel = lambda c, a, b: jnp.where(C._bcast(c, a), a, b)  # noqa: E731

    loss0, ok0, g0 = evaluate(x0)
    n = x.shape[0]
    init = _State(x0, x0, g0, loss0, x0, g0, loss0, x0, ok0, loss0, jnp.full((n,), 2.0, x.dtype) * eps,
                  jnp.zeros((n,), jnp.int32), jnp.ones((n,), bool), loss0, loss0)

    def body(i, s: _State) -> _State:
        a = jnp.where(i > 0, _MOMENTUM, 1.0).astype(x.dtype)
        z = C.project(s.x + C._bcast(s.step, x) * C.ascent_direction(s.g, norm), x, eps, norm)
        x_new = C.project(s.x + a * (z - s.x) + (1 - a) * (s.x - s.x_old), x, eps, norm)
        loss, ok, g = evaluate(x_new)
        n_up = s.n_up + (loss > s.loss_prev)
        up = loss > s.loss_best
        loss_best = jnp.where(up, loss, s.loss_best)
        worse = C.worse_case(spec, ok, loss, s.ok_out, s.loss_out)
        # Checkpoint: halve where few steps raised the loss (condition 1) or where the last
        # checkpoint kept the step and the best loss has not risen since (condition 2).
        at = is_check[i]
        halve = (n_up < rho * window[i]) | (~s.reduced & (s.loss_check >= loss_best))
        restart = at & halve
        x_best, g_best = sel(up, x_new, s.x_best), sel(up, g, s.g_best)
        return _State(
            x=sel(restart, x_best, x_new), x_old=s.x, g=sel(restart, g_best, g), loss_prev=loss,
            x_best=x_best, g_best=g_best, loss_best=loss_best,
            x_out=sel(worse, x_new, s.x_out), ok_out=jnp.where(worse, ok, s.ok_out),
            loss_out=jnp.where(worse, loss, s.loss_out),
            step=jnp.where(restart, s.step / 2, s.step), n_up=jnp.where(at, 0, n_up),
            reduced=jnp.where(at, halve, s.reduced), loss_check=jnp.where(at, loss_best, s.loss_check),
            loss_ref=jnp.where(i == ref_iter, loss_best, s.loss_ref),
        )

    s = jax.lax.fori_loop(0, steps, body, init, unroll=unroll)
    return s.x_out, s.ok_out, s.loss_out, s.loss_best > s.loss_ref


def _apgd_one(
    logits_fn: Partial, x: jax.Array, label: jax.Array, p_ref: jax.Array | None, keys: jax.Array,
    eps: jax.Array, rho: jax.Array, *, steps: int, norm: str, spec: C.LossSpec, random_start: bool,
    restarts: int, unroll: bool,
) -> tuple[jax.Array, jax.Array]:
    """APGD for one scalar ε over a batch ``x[N,...]``: ``(x_adv[N,...], improved[N])``."""

    def objective(xa):
        logits = logits_fn(xa)
        loss = _loss(spec, logits, label, p_ref)
        return jnp.sum(loss), (loss, C.success(spec, logits, label))

    def evaluate(xa):
        (_, (loss, ok)), g = jax.value_and_grad(objective, has_aux=True)(xa)
        return loss, ok, g

    def run(run_keys, from_x=False):
        x0 = _start(run_keys, x, eps, norm) if random_start and not from_x else x
        return _run(evaluate, x, x0, eps, rho, spec=spec, steps=steps, norm=norm, unroll=unroll)

    # As in pgd: the probability shift has a local maximum on each side of the prediction;
    # restart 0 starts at x (the tie-breaker's side), the others at random points.
    first = run(keys, from_x=spec.name == "prob_shift" and restarts > 1)

    def restart(carry, r):
        out = run(jax.vmap(lambda k: jax.random.fold_in(k, r))(keys))
        worse = C.worse_case(spec, out[1], out[2], carry[1], carry[2])
        return tuple(jnp.where(C._bcast(worse, new), new, old) for new, old in zip(out, carry)), None

    carry = first
    if unroll:  # a Python loop: a scan would put the unrolled steps back inside a loop body
        for r in range(1, restarts):
            carry, _ = restart(carry, jnp.int32(r))
    elif restarts > 1:
        carry, _ = jax.lax.scan(restart, carry, jnp.arange(1, restarts))
    return carry[0], carry[3]


@functools.partial(
    jax.jit, static_argnames=("steps", "norm", "spec", "random_start", "restarts", "eps_batch_size", "unroll")
)
def _apgd_grid(
    logits_fn: Partial, x: jax.Array, label: jax.Array, keys: jax.Array, eps: jax.Array, rho: jax.Array, *,
    steps: int, norm: str, spec: C.LossSpec, random_start: bool, restarts: int, eps_batch_size: int | None,
    unroll: bool = False,
) -> tuple[jax.Array, jax.Array]:
    p_ref = jax.nn.softmax(logits_fn(x)) if spec.name == "prob_shift" else None
    single = functools.partial(
        _apgd_one, logits_fn, x, label, p_ref, keys, rho=rho, steps=steps, norm=norm, spec=spec,
        random_start=random_start, restarts=restarts, unroll=unroll,
    )
    x_adv, improved = C.over_eps(single, eps, batch_size=eps_batch_size)
    if norm == "linf":
        x_adv = C.enforce_linf(x_adv, x[None], eps.reshape((-1,) + (1,) * x.ndim))
    return x_adv, improved


def apgd_with_info(
    logits_fn: Any, x: ArrayLike, y: ArrayLike, eps: ArrayLike, *, key: ArrayLike, target: ArrayLike | None = None,
    **hparams: Any,
) -> APGDResult:
    """Auto-PGD with its per-(ε, sample) convergence signal; ``hparams`` are :func:`apgd`'s.

    Returns:
      :class:`APGDResult`: ``x_adv`` as :func:`apgd` returns it, and
      ``improved_since_last_checkpoint`` (bool ``[E,N]``, ``[N]`` for a scalar ε): whether the
      best loss was still rising at the end of the schedule (a health check's "attack not
      converged").

    Raises:
      ValueError: an unknown hyperparameter (the valid ones are listed) or an invalid value.
    """
    defaults = keyword_defaults(apgd)
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(f"apgd has no hyperparameter(s) {unknown}; valid: {sorted(defaults)}")
    prep = C.prepare(logits_fn, x, y, eps, key)
    hp = check_hparams(**{**defaults, **hparams}, targeted=target is not None)
    label = prep.y if target is None else C.prepare_target(target, prep)
    x_adv, improved = core_with_info(prep.logits_fn, prep.x, label, prep.eps, prep.keys,
                                     targeted=target is not None, num_classes=prep.num_classes, **hp)
    return APGDResult(C.finish(x_adv, prep.scalar_eps), C.finish(improved, prep.scalar_eps))


def apgd(
    logits_fn: Any,
    x: ArrayLike,
    y: ArrayLike,
    eps: ArrayLike,
    *,
    key: ArrayLike,
    steps: int = 100,
    norm: str = "linf",
    loss: str = "ce",
    restarts: int = 1,
    rho: float = 0.75,
    random_start: bool = True,
    target: ArrayLike | None = None,
    shift_norm: str = "linf",
    eps_batch_size: int | None = None,
    unroll: bool = False,
) -> jax.Array:
    """Auto-PGD: momentum ascent in the ε-ball (L∞ or L2) ∩ [0,1] with an automatic step size.

    Each step ``z = P(x⁽ᵏ⁾ + η·sign(∇ℓ))`` (L∞; ``η·∇ℓ/‖∇ℓ‖₂`` for L2), then
    ``x⁽ᵏ⁺¹⁾ = P(x⁽ᵏ⁾ + α(z − x⁽ᵏ⁾) + (1 − α)(x⁽ᵏ⁾ − x⁽ᵏ⁻¹⁾))`` with α = 0.75 (1 on the first
    step), ``P`` the projection onto the ball ∩ [0,1]. The step ``η`` starts at 2ε per sample
    and is halved at the checkpoints of :func:`checkpoints` where fewer than ``rho`` of the
    steps since the last checkpoint raised the loss (condition 1), or where the last
    checkpoint kept the step and the best loss has not risen since (condition 2); a halving
    restarts that sample from its highest-loss point. The returned point is the worst case
    over every iterate of every restart: a success first, then the highest loss (for
    ``prob_shift``: the largest probability shift).

    Args:
      logits_fn: pure ``x -> logits[N,C]`` (a ``jax.tree_util.Partial`` keeps weights traced).
      x: f32[N,...] in [0,1]. y: int[N] true labels.
      eps: scalar or f32[E] grid (≥ 0) in pixel units.
      key: PRNG key (sample ``i`` uses ``k_i = fold_in(key, i)``) or a batch of ``N`` keys;
        restart 0 starts from ``k_i``, restart ``r ≥ 1`` from ``fold_in(k_i, r)``.
      steps: iterations per restart (static; 100 in AutoAttack). One gradient each, plus one
        at the start point.
      norm: ``"linf"`` or ``"l2"`` (static).
      loss: ``"ce"``; ``"margin"`` (CW margin, max other logit − true logit); ``"dlr"`` (the
        difference-of-logits ratio of Croce & Hein, scale-invariant, which needs C ≥ 3
        classes: with two classes its denominator ``z_π1 − z_π3`` does not exist, and
        ``"margin"`` — DLR's numerator, the same ordering of points per sample — is the
        meaningful replacement); ``"prob_shift"`` (‖p(x')−p(x)‖ in ``shift_norm``, the worst
        case for RR).
      restarts: runs per sample (static); each sample keeps its worst case.
      rho: condition 1's threshold on the fraction of successful steps (0.75 in the paper).
      random_start: start uniformly in the L∞ ball / on the L2 sphere of radius ε (the
        reference's starts); ``False`` starts at ``x``. With ``loss="prob_shift"`` and
        ``restarts > 1``, restart 0 starts at ``x`` (see :func:`rrjax.attacks.pgd`).
      target: optional int[N]; a targeted attack ascends ``−CE(target)`` or the targeted
        margin (``loss="ce"`` / ``"margin"``).
      shift_norm: ``"linf"``, ``"l1"`` or ``"l2"`` for ``loss="prob_shift"``.
      eps_batch_size: grid points vectorised at once (``None`` = all); bounds memory.
      unroll: unroll the step (and restart) loop (static); same result, faster on XLA:CPU for
        convolutional detectors at a compile time that grows with ``steps`` (see
        :func:`rrjax.attacks.pgd`).

    Returns:
      f32[N,...] for scalar ``eps``, else f32[E,N,...]; ``‖x_adv − x‖_∞ ≤ ε`` exactly in
      float32, ``‖x_adv − x‖₂ ≤ ε`` up to float32 rounding of the norm; ``x_adv = x`` at ε = 0.
      :func:`apgd_with_info` also returns the per-sample convergence signal.

    Raises:
      ValueError: invalid inputs or hyperparameters (each names the argument and the valid
        choices), ``loss="dlr"`` with fewer than 3 classes, ``dlr``/``prob_shift`` with ``target``.

    References:
      Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
      parameter-free attacks", ICML 2020.
    """
    return apgd_with_info(logits_fn, x, y, eps, key=key, steps=steps, norm=norm, loss=loss, restarts=restarts,
                          rho=rho, random_start=random_start, target=target, shift_norm=shift_norm,
                          eps_batch_size=eps_batch_size, unroll=unroll).x_adv


def core_with_info(
    logits_fn: Partial, x: jax.Array, label: jax.Array, eps: Any, keys: jax.Array, *, steps: int = 100,
    norm: str = "linf", loss: str = "ce", restarts: int = 1, rho: float = 0.75, random_start: bool = True,
    shift_norm: str = "linf", eps_batch_size: int | None = None, unroll: bool = False, targeted: bool = False,
    num_classes: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """APGD on validated inputs (the sweep's hot path) with the convergence signal.

    Takes what ``AttackDef.core`` takes (``x`` f32 device array, ``label`` int32 true or target
    classes, ``eps`` f32[E], ``keys`` one typed PRNG key per sample, the recorded
    hyperparameters) and returns ``(x_adv[E,N,...], improved_since_last_checkpoint[E,N])``
    (see :class:`APGDResult`). Raises ``ValueError`` for ``loss="dlr"`` on fewer than 3 classes
    (``num_classes``: the model's, when the caller knows it), before compiling.
    """
    if loss == "dlr":
        check_classes(C.check_logits_shape(logits_fn, x) if num_classes is None else num_classes)
    spec = _spec(loss, targeted=targeted, shift_norm=shift_norm)
    return _apgd_grid(
        logits_fn, x, label, keys, jnp.asarray(eps, jnp.float32), jnp.float32(rho), steps=steps, norm=norm,
        spec=spec, random_start=random_start, restarts=restarts, eps_batch_size=eps_batch_size, unroll=unroll,
    )


def _core(logits_fn: Partial, x: jax.Array, label: jax.Array, eps: Any, keys: jax.Array, **hparams: Any) -> jax.Array:
    """APGD on validated inputs: ``x_adv[E,N,...]`` (``keys``: one typed key per sample)."""
    return core_with_info(logits_fn, x, label, eps, keys, **hparams)[0]


def _diagnostics(logits_fn: Partial, x: jax.Array, label: jax.Array, eps: Any, keys: jax.Array,
                 **hparams: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
    x_adv, improved = core_with_info(logits_fn, x, label, eps, keys, **hparams)
    return x_adv, {"still_improving": improved}


def check_classes(num_classes: int) -> None:
    """``loss="dlr"`` needs the third-largest logit: C ≥ 3 classes (``ValueError`` otherwise)."""
    if num_classes < 3:
        raise ValueError(f"loss='dlr' needs a model with >= 3 classes (its denominator uses the third-largest "
                         f"logit); this model has {num_classes}. Use loss='margin' (DLR's numerator, the "
                         "CW margin) for a binary detector")


def _spec(loss: str, *, targeted: bool, shift_norm: str) -> C.LossSpec:
    if loss == "dlr":
        if targeted:
            raise ValueError("loss='dlr' is untargeted here; with target= use loss='ce' or loss='margin'")
        V.check_choice(shift_norm, C.SHIFT_NORMS, name="shift_norm")
        return C.LossSpec("dlr")
    return C.loss_spec(loss, targeted=targeted, confidence=None, shift_norm=shift_norm)


def check_hparams(
    *, steps: Any, norm: Any, loss: Any, restarts: Any, rho: Any, random_start: Any, shift_norm: Any,
    eps_batch_size: Any, unroll: Any = False, targeted: bool = False,
) -> dict[str, Any]:
    """Validates APGD's hyperparameters on the host; returns them normalised (ValueError on misuse)."""
    V.check_choice(norm, C.NORMS, name="norm")
    V.check_choice(loss, LOSSES, name="loss")
    for flag, value in (("random_start", random_start), ("unroll", unroll)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{flag} must be True or False, got {value!r}")
    _spec(loss, targeted=targeted, shift_norm=shift_norm)
    return {
        "steps": V.check_int(steps, name="steps", minimum=1),
        "norm": norm,
        "loss": loss,
        "restarts": V.check_int(restarts, name="restarts", minimum=1),
        "rho": V.check_number(rho, name="rho", lower=0.0, upper=1.0),
        "random_start": bool(random_start),
        "shift_norm": shift_norm,
        "eps_batch_size": None if eps_batch_size is None else V.check_int(eps_batch_size, name="eps_batch_size", minimum=1),
        "unroll": bool(unroll),
    }


_recorded = C.recorded_checker(check_hparams)


def _loop_length(hparams: Any) -> int:
    return int(hparams.get("steps", 100)) * int(hparams.get("restarts", 1))


DEFINITION = AttackDef(
    "apgd", apgd, check=_recorded, defaults=lambda: keyword_defaults(apgd), core=_core,
    # x, the iterate, the previous iterate, its gradient, the best point and its gradient,
    # the returned point, and the step's temporaries.
    buffers=9, iterative=True, loop_length=_loop_length, diagnostics=_diagnostics,
)
