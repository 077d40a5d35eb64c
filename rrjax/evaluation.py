"""One call for prototypes: attack over an ε grid, then RA and RR with confidence intervals.

    >>> import jax, jax.numpy as jnp, rrjax
    >>> w = jnp.linspace(-1.0, 1.0, 12)
    >>> logits_fn = lambda x: jnp.stack([jnp.zeros(len(x)), x.reshape(len(x), -1) @ w], -1)
    >>> x = jax.random.uniform(jax.random.key(0), (16, 2, 2, 3))
    >>> y = (x.reshape(16, -1) @ w > 0).astype(jnp.int32)
    >>> res = rrjax.evaluate(logits_fn, x, y, attack="pgd", eps=[0.0, 0.05, 0.1],
    ...                      tolerance=[0.0, 0.1, 0.5, 1.0], key=jax.random.key(1), steps=5)
    >>> res.ra.shape, res.rr.shape, res.rr_ci.shape
    ((3,), (3, 4), (3, 4, 2))
    >>> float(res.ra[0]) == res.clean_accuracy == 1.0
    True
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.tree_util import Partial
from jax.typing import ArrayLike

from rrjax import _validation as V
from rrjax import metrics
from rrjax.attacks import _common as C
from rrjax.attacks.registry import get_def

__all__ = ["Evaluation", "evaluate", "probabilities"]


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Result of :func:`evaluate` (NumPy arrays on the host).

    Attributes:
      eps: f32[E] budgets. tolerance: f32[B] tolerances.
      ra: f64[E] robust accuracy; ra_ci: f64[E,2] its 95% interval.
      rr: f64[E,B] robust ratio; rr_ci: f64[E,B,2] its 95% interval.
      clean_accuracy: accuracy on the clean inputs (over samples with a finite clean output).
      n: number of samples given.
      n_valid: int[E] samples with a verdict at each ε (finite clean and attacked outputs); RA,
        RR and their intervals are over these. ``n_valid < n`` means the detector returned NaN
        or ±inf for some inputs: those never count as correct or robust (``nonfinite`` > 0).
      nonfinite: int[E] = ``n - n_valid``.
      p_clean: f32[N,C]; p_adv: f32[E,N,C] probabilities.
      shift: f32[E,N] per-sample ``‖p_adv − p_clean‖`` in ``norm`` (0 where invalid).
      correct: bool[E,N] per-sample correctness under attack (for paired tests).
      robust: bool[E,B,N] per-sample φ_rob (for paired tests).
      valid: bool[E,N] per-sample verdict exists.
      same_label: bool[E,N] the attacked prediction equals the clean one (strict RR).
      shift_norm, require_same_label, ci_method: the RR definition and interval used.
      members: for an ensemble attack, each member's own :class:`Evaluation` by label (None
        otherwise); the fields above are then the worst case per metric over the members.
      ra_member, rr_member: int[E,N] for an ensemble: index (in ``members`` order) of the member
        that broke the sample first / moved its output most; -1 where none / no verdict.
    """

    eps: np.ndarray
    tolerance: np.ndarray
    ra: np.ndarray
    ra_ci: np.ndarray
    rr: np.ndarray
    rr_ci: np.ndarray
    clean_accuracy: float
    n: int
    n_valid: np.ndarray
    nonfinite: np.ndarray
    p_clean: np.ndarray
    p_adv: np.ndarray
    shift: np.ndarray
    correct: np.ndarray
    robust: np.ndarray
    valid: np.ndarray
    same_label: np.ndarray
    shift_norm: str
    require_same_label: bool
    ci_method: str
    members: dict[str, "Evaluation"] | None = None
    ra_member: np.ndarray | None = None
    rr_member: np.ndarray | None = None


@jax.jit
def _probabilities(logits_fn: Partial, x: jax.Array) -> jax.Array:
    return metrics.softmax_or_nan(logits_fn(x))


def probabilities(logits_fn: Any, x: jax.Array, *, batch_dims: int = 1) -> jax.Array:
    """Softmax probabilities of ``logits_fn`` on ``x`` with ``batch_dims`` leading batch axes.

    ``x[E,N,...]`` with ``batch_dims=2`` is flattened to one batch of ``E·N`` samples (one
    compiled call) and reshaped back to ``[E,N,C]``.
    """
    fn = C.as_logits_fn(logits_fn)
    lead = x.shape[:batch_dims]
    flat = x.reshape((-1,) + x.shape[batch_dims:])
    p = _probabilities(fn, flat)
    return p.reshape(lead + p.shape[-1:])


def evaluate(
    logits_fn: Any,
    x: ArrayLike,
    y: ArrayLike,
    *,
    attack: Any,
    eps: ArrayLike,
    tolerance: ArrayLike,
    key: ArrayLike,
    shift_norm: str = metrics.DEFAULT_SHIFT_NORM,
    require_same_label: bool = False,
    ci_method: str = "wilson",
    **attack_kwargs: Any,
) -> Evaluation:
    """Attacks ``x`` over an ε grid and reports RA[E] and RR[E,B] with 95% intervals.

    Args:
      logits_fn: any pure ``x -> logits[N,C]`` (index 1 = fake). A
        ``jax.tree_util.Partial(apply, variables)`` keeps the weights as traced arguments.
      x: f32[N,...] in [0,1]. y: int[N] labels (0 = real, 1 = fake).
      attack: a registered attack name (``rrjax.attacks.ATTACKS``, including your own from
        ``rrjax.attacks.register``) or any callable with the attack signature.
      eps: scalar or f32[E] grid of budgets in pixel units.
      tolerance: scalar or f32[B] grid of output-change tolerances ``b ≥ 0``.
      key: PRNG key for the attack.
      shift_norm: output-change norm of RR (``linf`` default, ``l1``, ``l2``); an attack with
        ``loss="prob_shift"`` maximises the change in this same norm.
      require_same_label: strict RR (label must also be unchanged).
      ci_method: ``"wilson"`` or ``"clopper_pearson"``.
      **attack_kwargs: hyperparameters of the attack (``steps``, ``loss``, ``norm`` — the
        threat-model norm ``"linf"``/``"l2"`` — ...), validated by the attack's checker.

    Returns:
      :class:`Evaluation`.
    """
    V.check_choice(shift_norm, metrics.SHIFT_NORMS, name="shift_norm")
    V.check_choice(ci_method, metrics.CI_METHODS, name="ci_method")
    rr = dict(shift_norm=shift_norm, require_same_label=require_same_label, ci_method=ci_method)
    if isinstance(attack, str):
        definition = get_def(attack)
        if definition.members is not None:
            return _evaluate_ensemble(definition, definition.resolve(**attack_kwargs), logits_fn, x, y, eps,
                                      tolerance, key, **rr)
        attack_kwargs = _resolve(definition, attack_kwargs, shift_norm)
        attack_fn, threat_norm = definition.fn, definition.threat_norm(attack_kwargs)
    elif callable(attack):
        if attack_kwargs.get("loss") == "prob_shift":
            attack_kwargs["shift_norm"] = shift_norm
        attack_fn, threat_norm = attack, attack_kwargs.get("norm")
    else:
        raise ValueError(f"attack must be an attack name or a callable, got {type(attack).__name__}")
    prep = C.prepare(logits_fn, x, y, eps, key)
    tol, _ = V.as_grid(tolerance, name="tolerance", lower=0.0)
    x_adv = _attacked(attack_fn, prep, key, attack_kwargs, threat_norm)
    p_clean = probabilities(prep.logits_fn, prep.x)
    p_adv = probabilities(prep.logits_fn, x_adv, batch_dims=2)
    return summarise(p_clean, p_adv, prep.y, np.asarray(prep.eps), tol, **rr)


def _resolve(definition: Any, hparams: dict, shift_norm: str) -> dict:
    """A configuration's recorded hyperparameters; ``prob_shift`` maximises the RR norm's shift."""
    resolved = definition.resolve(**hparams)
    if resolved.get("loss") == "prob_shift" and resolved.get("shift_norm") != shift_norm:
        resolved = definition.resolve(**{**resolved, "shift_norm": shift_norm})
    return resolved


def _attacked(attack_fn: Any, prep: C.Prepared, key: Any, hparams: dict, threat_norm: str | None) -> jax.Array:
    """The attack's outputs, checked: shape ``[E,N,...]``, pixels in [0,1], inside the ε-ball."""
    x_adv = jnp.asarray(attack_fn(prep.logits_fn, prep.x, prep.y, np.asarray(prep.eps), key=key, **hparams))
    if x_adv.shape != prep.eps.shape + prep.x.shape:
        raise ValueError(
            f"attack returned shape {x_adv.shape}; expected {prep.eps.shape + prep.x.shape} "
            "(a leading ε-grid axis, then the input shape)"
        )
    _check_attack_output(x_adv, prep.x, prep.eps, threat_norm)
    return x_adv


def _evaluate_ensemble(definition: Any, hparams: dict, logits_fn: Any, x: Any, y: Any, eps: Any, tolerance: Any,
                       key: Any, **rr: Any) -> Evaluation:
    """Each member as an ordinary attack (same key), then the worst case per metric."""
    from rrjax.attacks.ensemble import combine

    prep = C.prepare(logits_fn, x, y, eps, key)
    tol, _ = V.as_grid(tolerance, name="tolerance", lower=0.0)
    p_clean = probabilities(prep.logits_fn, prep.x)
    members: dict[str, Evaluation] = {}
    for label, name, hp in definition.members(hparams):
        member = get_def(name)
        resolved = _resolve(member, hp, rr["shift_norm"])
        x_adv = _attacked(member.fn, prep, key, resolved, member.threat_norm(resolved))
        p_adv = probabilities(prep.logits_fn, x_adv, batch_dims=2)
        members[label] = summarise(p_clean, p_adv, prep.y, np.asarray(prep.eps), tol, **rr)
    ms = list(members.values())
    worst = combine(*(np.stack([getattr(m, f) for m in ms]) for f in ("correct", "shift", "same_label", "valid")))
    pick = np.maximum(worst["rr_member"], 0)  # the member whose shift is the worst case
    p_adv = np.take_along_axis(np.stack([m.p_adv for m in ms]), pick[None, ..., None], 0)[0]
    base = _from_outcomes(worst, np.asarray(p_clean), p_adv, ms[0].clean_accuracy, np.asarray(prep.eps), tol, **rr)
    return dataclasses.replace(base, members=members, ra_member=worst["ra_member"], rr_member=worst["rr_member"])


@jax.jit
def _violations(x_adv: jax.Array, x: jax.Array, eps: jax.Array) -> tuple[jax.Array, ...]:
    d = (x_adv - x[None]).reshape(x_adv.shape[0], x_adv.shape[1], -1)
    linf, l2 = jnp.max(jnp.abs(d), -1), jnp.sqrt(jnp.sum(d * d, -1))
    return (jnp.all(jnp.isfinite(x_adv)), jnp.min(x_adv), jnp.max(x_adv),
            jnp.max(linf - eps[:, None]), jnp.max(l2 / jnp.maximum(eps[:, None], 1e-12) - 1.0))


def _check_attack_output(x_adv: jax.Array, x: jax.Array, eps: jax.Array, norm: str | None) -> None:
    """Refuses attack outputs outside [0,1] or the ε-ball, so a faulty (e.g. user-written) attack
    cannot inflate robustness silently. ``‖δ‖∞ ≤ ε`` holds for every ℓp ball with p ≥ 1, so it
    is checked for any attack; the L2 ball when the attack's norm is known to be L2."""
    finite, lo, hi, linf_over, l2_over = (float(v) for v in _violations(x_adv, x, eps))
    if not finite:
        raise ValueError("attack returned NaN or inf pixels")
    if lo < 0.0 or hi > 1.0:
        raise ValueError(f"attack returned pixels in [{lo:.4g}, {hi:.4g}]; adversarial inputs must stay in [0, 1]")
    if linf_over > 1e-6:
        raise ValueError(f"attack moved a pixel {linf_over:.3g} beyond ε; outputs must satisfy ‖x_adv − x‖ ≤ ε")
    if norm == "l2" and l2_over > 1e-5:
        raise ValueError(f"attack exceeded its L2 budget by {100 * l2_over:.3g}% of ε; outputs must satisfy ‖x_adv − x‖₂ ≤ ε")


def summarise(
    p_clean: jax.Array,
    p_adv: jax.Array,
    y: jax.Array,
    eps: np.ndarray,
    tolerance: np.ndarray,
    *,
    shift_norm: str,
    require_same_label: bool,
    ci_method: str = "wilson",
) -> Evaluation:
    """Builds an :class:`Evaluation` from probabilities (no attack, no validation)."""
    o = jax.tree_util.tree_map(np.asarray, metrics.outcomes(p_clean, p_adv, y, norm=shift_norm))
    clean_n = int(o.clean_valid.sum())
    clean_accuracy = float(o.clean_correct.sum() / clean_n) if clean_n else float("nan")
    return _from_outcomes(o._asdict(), np.asarray(p_clean), np.asarray(p_adv), clean_accuracy, eps, tolerance,
                          shift_norm=shift_norm, require_same_label=require_same_label, ci_method=ci_method)


def _from_outcomes(o: dict, p_clean: np.ndarray, p_adv: np.ndarray, clean_accuracy: float, eps: np.ndarray,
                   tolerance: np.ndarray, *, shift_norm: str, require_same_label: bool, ci_method: str) -> Evaluation:
    """Counts and intervals (``metrics.summarise``) from per-sample outcome arrays."""
    tol = np.asarray(tolerance, np.float32)
    robust = metrics.robust_outcomes(o["shift"], tol, same_label=o["same_label"] if require_same_label else None,
                                     valid=o["valid"])
    n_valid = o["valid"].sum(-1)
    s = metrics.summarise(o["correct"].sum(-1), robust.sum(-1), n_valid, ci_method=ci_method)
    n = int(p_clean.shape[0])
    return Evaluation(
        eps=np.asarray(eps, np.float32), tolerance=tol, ra=s.ra, ra_ci=s.ra_ci, rr=s.rr, rr_ci=s.rr_ci,
        clean_accuracy=clean_accuracy, n=n, n_valid=n_valid, nonfinite=n - n_valid, p_clean=p_clean, p_adv=p_adv,
        shift=o["shift"], correct=o["correct"], robust=robust, valid=o["valid"], same_label=o["same_label"],
        shift_norm=shift_norm,
        require_same_label=bool(require_same_label), ci_method=ci_method,
    )
