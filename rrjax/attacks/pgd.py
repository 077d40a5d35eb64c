"""Projected gradient descent (Madry et al., 2018), L∞ and L2, with restarts and targets.

Written for one ε; ``_common.over_eps`` adds the grid axis, so the whole grid (and every
sample) is one compiled program whose loop is a ``lax.fori_loop``.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial
from jax.typing import ArrayLike

from rrjax import _validation as V
from rrjax.attacks import _common as C
from rrjax.attacks.base import AttackDef, keyword_defaults

__all__ = ["pgd", "cw_bounded", "default_rel_step_size", "check_hparams", "PGD", "CW_BOUNDED"]


def default_rel_step_size(steps: int) -> float:
    """Step size as a multiple of ε: ``2.5 / steps`` (Madry et al.).

    The iterate can then travel 2.5 ε in total, enough to cross the ball from any start and
    still explore its boundary.
    """
    return 2.5 / steps


def _best(better: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    return jnp.where(C._bcast(better, new), new, old)


def _pgd_one(
    logits_fn: Partial,
    x: jax.Array,
    label: jax.Array,
    p_ref: jax.Array | None,
    keys: jax.Array,
    eps: jax.Array,
    step: jax.Array,
    *,
    steps: int,
    norm: str,
    spec: C.LossSpec,
    random_start: bool,
    restarts: int,
    unroll: bool,
) -> jax.Array:
    """PGD for one scalar ε over a batch ``x[N,...]``; returns ``x_adv[N,...]``."""

    def objective(xa):
        return jnp.sum(C.per_sample_loss(spec, logits_fn(xa), label, p_ref))

    grad = jax.grad(objective)

    def body(_, xa):
        return C.project(xa + step * C.ascent_direction(grad(xa), norm), x, eps, norm)

    def run(run_keys, from_x=False):
        x0 = x
        if random_start and not from_x:
            x0 = C.project(x + eps * C.random_in_ball(run_keys, x, norm), x, eps, norm)
        return jax.lax.fori_loop(0, steps, body, x0, unroll=unroll)

    # ||p(x') - p(x)|| has a local maximum on each side (lowering or raising the predicted
    # class). From x itself the tie-breaker takes the side away from the prediction, the
    # larger one for two classes in most cases; random starts then explore the other side.
    first_from_x = spec.name == "prob_shift" and restarts > 1

    if restarts == 1:
        return run(keys)

    def score(xa):
        logits = logits_fn(xa)
        return C.success(spec, logits, label), C.per_sample_loss(spec, logits, label, p_ref)

    def restart(carry, r):
        best_x, best_ok, best_loss = carry
        xa = run(jax.vmap(lambda k: jax.random.fold_in(k, r))(keys))
        ok, loss = score(xa)
        better = C.worse_case(spec, ok, loss, best_ok, best_loss)
        return (_best(better, xa, best_x), best_ok | ok, jnp.where(better, loss, best_loss)), None

    x_first = run(keys, from_x=first_from_x)
    ok0, loss0 = score(x_first)
    carry = (x_first, ok0, loss0)
    if unroll:  # a Python loop: a scan around the restarts would put the unrolled steps back
        # inside a loop body, where XLA:CPU's input-gradient convs are slow
        for r in range(1, restarts):
            carry, _ = restart(carry, jnp.int32(r))
    else:
        carry, _ = jax.lax.scan(restart, carry, jnp.arange(1, restarts))
    return carry[0]


@functools.partial(
    jax.jit, static_argnames=("steps", "norm", "spec", "random_start", "restarts", "eps_batch_size", "unroll")
)
def _pgd_grid(
    logits_fn: Partial,
    x: jax.Array,
    label: jax.Array,
    keys: jax.Array,
    eps: jax.Array,
    step: jax.Array,
    *,
    steps: int,
    norm: str,
    spec: C.LossSpec,
    random_start: bool,
    restarts: int,
    eps_batch_size: int | None,
    unroll: bool = False,
) -> jax.Array:
    p_ref = jax.nn.softmax(logits_fn(x)) if spec.name == "prob_shift" else None
    single = functools.partial(
        _pgd_one, logits_fn, x, label, p_ref, keys,
        steps=steps, norm=norm, spec=spec, random_start=random_start, restarts=restarts, unroll=unroll,
    )
    x_adv = C.over_eps(single, eps, step, batch_size=eps_batch_size)
    if norm == "linf":
        x_adv = C.enforce_linf(x_adv, x[None], eps.reshape((-1,) + (1,) * x.ndim))
    return x_adv


def pgd(
    logits_fn: Any,
    x: ArrayLike,
    y: ArrayLike,
    eps: ArrayLike,
    *,
    key: ArrayLike,
    steps: int = 10,
    norm: str = "linf",
    rel_step_size: float | None = None,
    step_size: float | None = None,
    random_start: bool = True,
    restarts: int = 1,
    loss: str = "ce",
    target: ArrayLike | None = None,
    confidence: float | None = None,
    shift_norm: str = "linf",
    eps_batch_size: int | None = None,
    unroll: bool = False,
) -> jax.Array:
    """Projected gradient ascent inside the ε-ball (L∞ or L2) intersected with [0,1].

    Each step moves by ``step·sign(∇ℓ)`` (L∞) or ``step·∇ℓ/‖∇ℓ‖₂`` (L2) and projects back.
    The final iterate of each restart is returned; with ``restarts > 1`` each sample keeps its
    worst case: a successful restart first, then the highest loss (for ``prob_shift``: the
    largest probability shift).

    Args:
      logits_fn: pure ``x -> logits[N,C]`` (a ``jax.tree_util.Partial`` keeps weights traced).
      x: f32[N,...] in [0,1]. y: int[N] true labels.
      eps: scalar or f32[E] grid (≥ 0) in pixel units.
      key: PRNG key (sample ``i`` uses ``k_i = fold_in(key, i)``) or a batch of ``N`` keys
        ``k_i``; restart 0 starts from ``k_i`` and restart ``r ≥ 1`` from ``fold_in(k_i, r)``,
        so a single-restart run is exactly restart 0 of a multi-restart run.
      steps: iterations per restart (static).
      norm: ``"linf"`` or ``"l2"`` (static).
      rel_step_size: step as a multiple of ε (default ``2.5 / steps``, Madry et al.).
      step_size: absolute step size in pixel units, the same for every ε (e.g. to match
        torchattacks' ``alpha``); exclusive with ``rel_step_size``.
      random_start: start uniformly inside the ball (L∞: each coordinate in [−ε, ε];
        L2: uniform in volume) — on by default.
      restarts: number of random restarts (static); 1 = a single run. With
        ``loss="prob_shift"`` and ``restarts > 1``, restart 0 starts at ``x`` itself (see the
        loss) and the others at random points.
      loss: ``"ce"``, ``"margin"`` (CW margin, max other logit − true logit) or
        ``"prob_shift"`` (‖p(x')−p(x)‖ in ``shift_norm``, the worst case for RR).
      target: optional int[N]; a targeted attack descends toward these classes.
      confidence: optional κ for ``loss="margin"``: the margin is clipped at κ.
      shift_norm: ``"linf"``, ``"l1"`` or ``"l2"`` for ``loss="prob_shift"``.
      eps_batch_size: grid points vectorised at once (``None`` = all); bounds memory.
      unroll: unroll the step (and restart) loop instead of compiling a while loop (static).
        Same result; on XLA:CPU about 2-3x faster per step for convolutional detectors, at a
        compile time that grows with ``steps``. Set
        ``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false`` with it, or the
        CPU scheduler keeps every step's activations alive (see ``rrjax.attacks._common``).

    Returns:
      f32[N,...] for scalar ``eps``, else f32[E,N,...]. ``‖x_adv − x‖_∞ ≤ ε`` exactly in
      float32; for L2, ``‖x_adv − x‖₂ ≤ ε`` up to float32 rounding of the norm (≤ 1e-5 relative).

    References:
      Madry et al., "Towards deep learning models resistant to adversarial attacks", ICLR 2018.
    """
    prep = C.prepare(logits_fn, x, y, eps, key)
    hp = check_hparams(steps=steps, norm=norm, rel_step_size=rel_step_size, step_size=step_size,
                       random_start=random_start, restarts=restarts, loss=loss, confidence=confidence,
                       shift_norm=shift_norm, eps_batch_size=eps_batch_size, unroll=unroll,
                       targeted=target is not None)
    label = prep.y if target is None else C.prepare_target(target, prep)
    x_adv = _core(prep.logits_fn, prep.x, label, prep.eps, prep.keys, targeted=target is not None, **hp)
    return C.finish(x_adv, prep.scalar_eps)


def _core(
    logits_fn: Partial, x: jax.Array, label: jax.Array, eps: Any, keys: jax.Array, *, steps: int = 10,
    norm: str = "linf", rel_step_size: float | None = None, step_size: float | None = None,
    random_start: bool = True, restarts: int = 1, loss: str = "ce", confidence: float | None = None,
    shift_norm: str = "linf", eps_batch_size: int | None = None, unroll: bool = False, targeted: bool = False,
) -> jax.Array:
    """PGD on validated inputs: ``x_adv[E,N,...]`` (``keys``: one typed key per sample)."""
    spec = C.loss_spec(loss, targeted=targeted, confidence=confidence, shift_norm=shift_norm)
    eps_np = np.asarray(eps, np.float32)
    if step_size is not None:
        step = np.full_like(eps_np, step_size)
    else:
        rel = default_rel_step_size(max(steps, 1)) if rel_step_size is None else rel_step_size
        step = eps_np * rel
    return _pgd_grid(
        logits_fn, x, label, keys, jnp.asarray(eps_np), jnp.asarray(step, jnp.float32),
        steps=steps, norm=norm, spec=spec, random_start=random_start, restarts=restarts,
        eps_batch_size=eps_batch_size, unroll=unroll,
    )


def check_hparams(
    *, steps: Any, norm: Any, rel_step_size: Any, step_size: Any, random_start: Any, restarts: Any, loss: Any,
    confidence: Any, shift_norm: Any, eps_batch_size: Any, unroll: Any = False, targeted: bool = False,
) -> dict[str, Any]:
    """Validates PGD's hyperparameters on the host; returns them normalised (ValueError on misuse)."""
    V.check_choice(norm, C.NORMS, name="norm")
    for flag, value in (("random_start", random_start), ("unroll", unroll)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{flag} must be True or False, got {value!r}")
    C.loss_spec(loss, targeted=targeted, confidence=confidence, shift_norm=shift_norm)
    if step_size is not None and rel_step_size is not None:
        raise ValueError("pass either step_size (absolute) or rel_step_size (multiple of eps), not both")
    return {
        "steps": V.check_int(steps, name="steps", minimum=0),
        "norm": norm,
        "rel_step_size": None if rel_step_size is None else V.check_number(rel_step_size, name="rel_step_size", lower=0.0),
        "step_size": None if step_size is None else V.check_number(step_size, name="step_size", lower=0.0),
        "random_start": bool(random_start),
        "restarts": V.check_int(restarts, name="restarts", minimum=1),
        "loss": loss,
        "confidence": None if confidence is None else V.check_number(confidence, name="confidence", lower=0.0),
        "shift_norm": shift_norm,
        "eps_batch_size": None if eps_batch_size is None else V.check_int(eps_batch_size, name="eps_batch_size", minimum=1),
        "unroll": bool(unroll),
    }


def cw_bounded(
    logits_fn: Any,
    x: ArrayLike,
    y: ArrayLike,
    eps: ArrayLike,
    *,
    key: ArrayLike,
    norm: str = "linf",
    steps: int = 10,
    confidence: float | None = None,
    **pgd_kwargs: Any,
) -> jax.Array:
    """ε-bounded Carlini–Wagner: the CW margin loss maximised under projection onto the ε-ball.

    This is how "CW at budget ε" is evaluated on an ε grid (the CW-L∞ of Madry et al. and
    Croce & Hein): PGD with ``loss="margin"``, optionally clipped at confidence κ. Minimal-norm
    CW-L2 is :func:`rrjax.attacks.cw_l2`. Keyword arguments are those of :func:`pgd`.

    References:
      Carlini & Wagner, "Towards evaluating the robustness of neural networks", S&P 2017.
    """
    if "loss" in pgd_kwargs:
        raise ValueError(f"cw_bounded always uses the CW margin loss; got loss={pgd_kwargs['loss']!r} (use pgd for other losses)")
    return pgd(
        logits_fn, x, y, eps, key=key, norm=norm, steps=steps, loss="margin",
        confidence=confidence, **pgd_kwargs,
    )


_recorded = C.recorded_checker(check_hparams)


def _cw_bounded_recorded(**hparams: Any) -> dict[str, Any]:
    if hparams.get("loss", "margin") != "margin":
        raise ValueError(f"cw_bounded always uses the CW margin loss; got loss={hparams['loss']!r} "
                         "(use pgd for other losses)")
    out = _recorded(**hparams)
    out.pop("loss")
    return out


def _cw_bounded_core(logits_fn: Partial, x: jax.Array, label: jax.Array, eps: Any, keys: jax.Array,
                     **hparams: Any) -> jax.Array:
    return _core(logits_fn, x, label, eps, keys, loss="margin", **hparams)


def _loop_length(hparams: Any) -> int:
    return int(hparams.get("steps", 10)) * int(hparams.get("restarts", 1))


def _pgd_defaults() -> dict[str, Any]:
    return keyword_defaults(pgd)


PGD = AttackDef("pgd", pgd, check=_recorded, defaults=_pgd_defaults, core=_core, buffers=6, iterative=True,
                loop_length=_loop_length)
CW_BOUNDED = AttackDef(
    "cw_bounded", cw_bounded, check=_cw_bounded_recorded,
    defaults=lambda: {**_pgd_defaults(), **keyword_defaults(cw_bounded), "loss": "margin"},
    core=_cw_bounded_core, buffers=6, iterative=True, loop_length=_loop_length,
)
