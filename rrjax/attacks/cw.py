"""Carlini–Wagner L2 (minimal-norm), as in the original paper, batched per sample.

The attack minimises ``‖x' − x‖₂² + c · f(x')`` over ``x' = (tanh(w) + 1) / 2`` (the box
constraint becomes a change of variables) with Adam, where for an untargeted attack
``f(x') = max(Z(x')_y − max_{j≠y} Z(x')_j, −κ)``. An outer binary search adjusts ``c`` *per
sample*; every iterate that is adversarial (with confidence κ) and closer than the best so far
is kept. Optimisation of a sample stops early when its objective has not improved by 0.01%
over the last tenth of the iterations.

Because the result is the smallest adversarial perturbation found for each sample, the
attack at *any* L2 budget ε follows at once: the sample is adversarial at ε iff a perturbation
was found with ``‖δ‖₂ ≤ ε``. :func:`cw_l2` therefore runs the optimisation once for the whole
ε grid.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.tree_util import Partial
from jax.typing import ArrayLike

from rrjax import _validation as V
from rrjax.attacks import _common as C
from rrjax.attacks.base import AttackDef, keyword_defaults

__all__ = ["CWResult", "cw_l2_minimal", "cw_l2", "check_hparams", "DEFINITION"]

_NO_UPPER = 1e10  # "no successful c yet", as in the reference implementation


@dataclasses.dataclass(frozen=True)
class CWResult:
    """Minimal-norm CW-L2 output.

    Attributes:
      x_adv: f32[N,...], the closest adversarial example found (``x`` where none was found).
      distance: f32[N], ``‖x_adv − x‖₂`` (``inf`` where none was found; 0 where ``x`` is
        already misclassified).
      success: bool[N], whether an adversarial example was found.
    """

    x_adv: jax.Array
    distance: jax.Array
    success: jax.Array


jax.tree_util.register_dataclass(CWResult, data_fields=["x_adv", "distance", "success"], meta_fields=[])


def _adversarial(logits: jax.Array, label: jax.Array, kappa: jax.Array, targeted: bool) -> jax.Array:
    """Carlini's ``compare``: shift the label logit by κ against the attacker, then argmax."""
    onehot = jax.nn.one_hot(label, logits.shape[-1], dtype=logits.dtype)
    shifted = logits - kappa * onehot if targeted else logits + kappa * onehot
    pred = jnp.argmax(shifted, axis=-1)
    return pred == label if targeted else pred != label


def _hinge(logits: jax.Array, label: jax.Array, kappa: jax.Array, targeted: bool) -> jax.Array:
    real = C.true_class_logit(logits, label)
    other = C.other_class_max(logits, label)
    gap = other - real if targeted else real - other
    return jnp.maximum(gap, -kappa)


@functools.partial(jax.jit, static_argnames=("steps", "binary_search_steps", "abort_early", "targeted", "unroll"))
def _cw_l2(
    logits_fn: Partial,
    x: jax.Array,
    label: jax.Array,
    learning_rate: jax.Array,
    initial_const: jax.Array,
    kappa: jax.Array,
    *,
    steps: int,
    binary_search_steps: int,
    abort_early: bool,
    targeted: bool,
    unroll: bool = False,
) -> CWResult:
    n = x.shape[0]
    axes = tuple(range(1, x.ndim))
    w0 = jnp.arctanh((2.0 * x - 1.0) * (1.0 - 1e-6))
    to_x = lambda w: (jnp.tanh(w) + 1.0) / 2.0  # noqa: E731
    opt = optax.adam(learning_rate)
    check_every = max(steps // 10, 1)

    def objective(w, c):
        xa = to_x(w)
        logits = logits_fn(xa)
        l2sq = jnp.sum(jnp.square(xa - x), axis=axes)
        per = l2sq + c * _hinge(logits, label, kappa, targeted)
        return jnp.sum(per), (per, l2sq, logits, xa)

    grad_fn = jax.grad(objective, has_aux=True)

    # A sample misclassified as it stands is adversarial at distance 0.
    clean_adv = _adversarial(logits_fn(x), label, kappa, targeted)

    def search_round(_, state):
        c, lower, upper, best_x, best_l2sq, found = state

        def cond(s):
            it, active = s[0], s[3]
            return (it < steps) & jnp.any(active)

        def body(s):
            it, w, opt_state, active, prev, best_x, best_l2sq, found, round_ok = s
            g, (per, l2sq, logits, xa) = grad_fn(w, c)
            g = C.finite_or_zero(g)  # a NaN/inf model output must not turn w (and x') into NaN
            adv = _adversarial(logits, label, kappa, targeted) & active
            improve = adv & (l2sq < best_l2sq)
            best_x = jnp.where(C._bcast(improve, x), xa, best_x)
            best_l2sq = jnp.where(improve, l2sq, best_l2sq)
            found = found | adv
            round_ok = round_ok | adv
            updates, new_opt_state = opt.update(g, opt_state, w)
            w = jnp.where(C._bcast(active, w), optax.apply_updates(w, updates), w)
            if abort_early:
                check = (it % check_every) == 0
                stalled = check & (per > prev * 0.9999)
                active = active & ~stalled
                prev = jnp.where(check, per, prev)
            return (it + 1, w, new_opt_state, active, prev, best_x, best_l2sq, found, round_ok)

        init = (
            jnp.int32(0), w0, opt.init(w0), ~clean_adv, jnp.full((n,), jnp.finfo(x.dtype).max),
            best_x, best_l2sq, found, jnp.zeros((n,), bool),
        )
        if unroll:  # a fixed step count (no early abort); steps after every sample has become
            # inactive change nothing, as the while loop would have stopped there
            final = jax.lax.fori_loop(0, steps, lambda _, s: body(s), init, unroll=True)
        else:
            final = jax.lax.while_loop(cond, body, init)
        _, _, _, _, _, best_x, best_l2sq, found, round_ok = final
        return (*_binary_search(c, lower, upper, round_ok), best_x, best_l2sq, found)

    state = _search_start(x, initial_const, clean_adv)
    if unroll:  # a Python loop: a while loop around the rounds (even one trip) would put the
        # unrolled steps back inside a loop body, where XLA:CPU's input-gradient convs are slow
        for r in range(binary_search_steps):
            state = search_round(r, state)
    else:
        state = jax.lax.fori_loop(0, binary_search_steps, search_round, state)
    _, _, _, best_x, _, found = state
    return _result(x, best_x, found, clean_adv)


def _search_start(x: jax.Array, initial_const: jax.Array, clean_adv: jax.Array) -> tuple[jax.Array, ...]:
    """(c, lower, upper, best_x, best_l2sq, found) before the first round."""
    n = x.shape[0]
    return (jnp.full((n,), initial_const, x.dtype), jnp.zeros((n,), x.dtype), jnp.full((n,), _NO_UPPER, x.dtype),
            x, jnp.full((n,), jnp.finfo(x.dtype).max), clean_adv)


def _binary_search(c: jax.Array, lower: jax.Array, upper: jax.Array, round_ok: jax.Array) -> tuple[jax.Array, ...]:
    """Per-sample update of c after a round (Carlini & Wagner's schedule): x10 until the first
    success, then bisection between the largest failing and the smallest successful c."""
    upper = jnp.where(round_ok, jnp.minimum(upper, c), upper)
    lower = jnp.where(round_ok, lower, jnp.maximum(lower, c))
    bounded = upper < _NO_UPPER * 0.1
    c = jnp.where(bounded, (lower + upper) / 2.0, jnp.where(round_ok, c, c * 10.0))
    return c, lower, upper


def _result(x: jax.Array, best_x: jax.Array, found: jax.Array, clean_adv: jax.Array) -> CWResult:
    best_x = jnp.where(C._bcast(clean_adv, x), x, jnp.clip(best_x, 0.0, 1.0))
    return CWResult(best_x, jnp.where(found, C.l2_norm(best_x - x), jnp.inf), found)


def check_hparams(
    *, steps: Any, binary_search_steps: Any, learning_rate: Any, initial_const: Any, confidence: Any,
    abort_early: Any, unroll: Any = False,
) -> dict[str, Any]:
    """Validates CW-L2's hyperparameters on the host; returns them normalised (ValueError on misuse)."""
    for flag, value in (("abort_early", abort_early), ("unroll", unroll)):
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{flag} must be True or False, got {value!r}")
    if unroll and abort_early:
        raise ValueError("unroll=True needs a fixed step count: pass abort_early=False as well")
    return {
        "steps": V.check_int(steps, name="steps", minimum=1),
        "binary_search_steps": V.check_int(binary_search_steps, name="binary_search_steps", minimum=1),
        "learning_rate": V.check_number(learning_rate, name="learning_rate", lower=0.0, strict=True),
        "initial_const": V.check_number(initial_const, name="initial_const", lower=0.0, strict=True),
        "confidence": V.check_number(confidence, name="confidence", lower=0.0),
        "abort_early": bool(abort_early),
        "unroll": bool(unroll),
    }


def cw_l2_minimal(
    logits_fn: Any,
    x: ArrayLike,
    y: ArrayLike,
    *,
    key: ArrayLike | None = None,
    steps: int = 1000,
    binary_search_steps: int = 9,
    learning_rate: float = 1e-2,
    initial_const: float = 1e-3,
    confidence: float = 0.0,
    abort_early: bool = True,
    target: ArrayLike | None = None,
    unroll: bool = False,
) -> CWResult:
    """Carlini–Wagner L2: the smallest adversarial perturbation found for each sample.

    Args:
      logits_fn: pure ``x -> logits[N,C]``.
      x: f32[N,...] in [0,1]. y: int[N] true labels.
      key: accepted for the common signature; the attack is deterministic.
      steps: Adam iterations per binary-search round (the paper uses up to 10 000 with
        early abort; 1000 is the default here).
      binary_search_steps: rounds of the per-sample search over ``c`` (paper: 9).
      learning_rate: Adam step size on ``w`` (paper: 1e-2).
      initial_const: starting ``c`` (paper: 1e-3); multiplied by 10 until a round succeeds,
        then bisected.
      confidence: κ ≥ 0; an example counts as adversarial only when it wins by κ in logits.
      abort_early: stop a sample's round when its objective stalls (checked every
        ``steps // 10`` iterations, improvement < 0.01%).
      target: optional int[N] target classes (targeted attack).
      unroll: unroll the iterations (requires ``abort_early=False``; same result; faster on
        XLA:CPU for convolutional detectors, see :func:`rrjax.attacks.pgd`'s ``unroll``).

    Returns:
      :class:`CWResult` with ``x_adv[N,...]``, ``distance[N]`` and ``success[N]``.

    References:
      Carlini & Wagner, "Towards evaluating the robustness of neural networks", IEEE S&P 2017.
    """
    prep = C.prepare(logits_fn, x, y, 0.0, key if key is not None else jax.random.key(0))
    hp = check_hparams(steps=steps, binary_search_steps=binary_search_steps, learning_rate=learning_rate,
                       initial_const=initial_const, confidence=confidence, abort_early=abort_early,
                       unroll=unroll)
    label = prep.y if target is None else C.prepare_target(target, prep)
    return _minimal(prep.logits_fn, prep.x, label, targeted=target is not None, **hp)


def _minimal(logits_fn: Partial, x: jax.Array, label: jax.Array, *, steps: int, binary_search_steps: int,
             learning_rate: float, initial_const: float, confidence: float, abort_early: bool,
             unroll: bool = False, targeted: bool = False) -> CWResult:
    return _cw_l2(
        logits_fn, x, label, jnp.float32(learning_rate), jnp.float32(initial_const), jnp.float32(confidence),
        steps=steps, binary_search_steps=binary_search_steps, abort_early=abort_early, targeted=targeted,
        unroll=unroll,
    )


@jax.jit
def _select_within(res: CWResult, x: jax.Array, eps: jax.Array) -> jax.Array:
    inside = res.success[None, :] & (res.distance[None, :] <= eps[:, None])
    return jnp.where(C._bcast(inside, x[None]), res.x_adv[None], x[None])


def cw_l2(
    logits_fn: Any,
    x: ArrayLike,
    y: ArrayLike,
    eps: ArrayLike,
    *,
    key: ArrayLike,
    **kwargs: Any,
) -> jax.Array:
    """CW-L2 over an L2 ε grid from a single minimal-norm run.

    ``x_adv[e] = cw_x`` where the minimal perturbation found has ``‖δ‖₂ ≤ ε_e``, else ``x``.
    Robust accuracy at every ε follows from one optimisation; note that CW minimises the
    perturbation, not the probability shift, so RR under CW is the RR of the *smallest*
    successful perturbation (or of no perturbation), not a worst case for RR.

    Args:
      eps: scalar or f32[E] grid of L2 budgets. Other arguments: :func:`cw_l2_minimal`.

    Returns:
      f32[N,...] or f32[E,N,...] with ``‖x_adv − x‖₂ ≤ ε`` and ``0 ≤ x_adv ≤ 1``.
    """
    grid, scalar = V.as_grid(eps, name="eps", lower=0.0)
    if key is None:  # the common attack signature requires a key
        C.sample_keys(key, 0)
    res = cw_l2_minimal(logits_fn, x, y, key=key, **kwargs)
    x = jnp.asarray(x, jnp.float32)
    return C.finish(_select_within(res, x, jnp.asarray(grid)), scalar)


def _core(logits_fn: Partial, x: jax.Array, label: jax.Array, eps: Any, keys: jax.Array, **hparams: Any) -> jax.Array:
    """CW-L2 over an L2 ε grid on validated inputs: ``x_adv[E,N,...]`` (``keys`` unused)."""
    full = {**keyword_defaults(cw_l2_minimal), **hparams}
    res = _minimal(logits_fn, x, label, **full)
    return _select_within(res, x, jnp.asarray(eps, jnp.float32))


def _loop_length(hparams: Any) -> int | None:
    if hparams.get("abort_early", True):
        return None  # a data-dependent stop cannot unroll
    return int(hparams.get("steps", 1000)) * int(hparams.get("binary_search_steps", 9))


# Not ``iterative`` for the health checks: CW-L2 minimises the perturbation instead of
# maximising a loss inside the ε-ball, so "weaker than FGSM at the same ε" is no symptom.
DEFINITION = AttackDef(
    "cw_l2", cw_l2, check=lambda **hp: check_hparams(**hp), defaults=lambda: keyword_defaults(cw_l2_minimal),
    core=_core, threat_norm=lambda hparams: "l2", grid_free=True, buffers=10,
    loop_length=_loop_length,
)
