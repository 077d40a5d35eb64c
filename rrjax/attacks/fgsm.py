"""Fast gradient sign method (L∞) and the L2 fast gradient method.

One gradient serves the whole ε grid: the ascent direction at ``x`` does not depend on ε, so
``x_adv[e] = clip(x + eps[e] * direction)``. The grid costs one forward/backward pass plus
``E`` element-wise updates, instead of ``E`` gradients.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.tree_util import Partial
from jax.typing import ArrayLike

from rrjax import _validation as V
from rrjax.attacks import _common as C
from rrjax.attacks.base import AttackDef, keyword_defaults

__all__ = ["fgsm", "check_hparams", "DEFINITION"]


@functools.partial(jax.jit, static_argnames=("norm", "spec"))
def _fgsm_grid(
    logits_fn: Partial, x: jax.Array, y: jax.Array, eps: jax.Array, *, norm: str, spec: C.LossSpec
) -> jax.Array:
    p_ref = jax.nn.softmax(logits_fn(x)) if spec.name == "prob_shift" else None
    g = jax.grad(lambda xa: jnp.sum(C.per_sample_loss(spec, logits_fn(xa), y, p_ref)))(x)
    direction = C.ascent_direction(g, norm)
    e = eps.reshape((-1,) + (1,) * x.ndim)
    x_adv = jnp.clip(x[None] + e * direction[None], 0.0, 1.0)
    if norm == "linf":
        x_adv = C.enforce_linf(x_adv, x[None], e)
    return x_adv


def fgsm(
    logits_fn: Any,
    x: ArrayLike,
    y: ArrayLike,
    eps: ArrayLike,
    *,
    key: ArrayLike,
    norm: str = "linf",
    loss: str = "ce",
    target: ArrayLike | None = None,
    shift_norm: str = "linf",
) -> jax.Array:
    """Fast gradient attack over an ε grid (one gradient for all ε).

    ``norm="linf"``: FGSM, ``x' = clip(x + ε·sign(∇ℓ))`` (Goodfellow et al., 2015).
    ``norm="l2"``: fast gradient method, ``x' = clip(x + ε·∇ℓ/‖∇ℓ‖₂)``.

    Args:
      logits_fn: pure ``x -> logits[N,C]`` (a ``jax.tree_util.Partial`` keeps weights traced).
      x: f32[N,...] in [0,1] (images ``[N,H,W,C]``, videos ``[N,T,H,W,C]``).
      y: int[N] true labels.
      eps: scalar or f32[E] grid of budgets (≥ 0) in pixel units.
      key: PRNG key (unused — FGSM is deterministic — accepted for the common signature).
      norm: ``"linf"`` or ``"l2"``.
      loss: ``"ce"``, ``"margin"`` (CW margin) or ``"prob_shift"`` (‖p(x')−p(x)‖).
      target: optional int[N]; when given the attack is targeted (descends toward ``target``).
      shift_norm: output-change norm of the ``prob_shift`` loss (``linf``, ``l1``, ``l2``).

    Returns:
      ``x_adv``: f32[N,...] for scalar ``eps``, else f32[E,N,...]; ``‖x_adv−x‖ ≤ ε`` in ``norm``
      and ``0 ≤ x_adv ≤ 1``.

    References:
      Goodfellow, Shlens & Szegedy, "Explaining and harnessing adversarial examples", ICLR 2015.
    """
    prep = C.prepare(logits_fn, x, y, eps, key)
    hp = check_hparams(norm=norm, loss=loss, shift_norm=shift_norm, targeted=target is not None)
    label = prep.y if target is None else C.prepare_target(target, prep)
    x_adv = _core(prep.logits_fn, prep.x, label, prep.eps, prep.keys, targeted=target is not None, **hp)
    return C.finish(x_adv, prep.scalar_eps)


def _core(logits_fn: Partial, x: jax.Array, label: jax.Array, eps: Any, keys: jax.Array, *, norm: str = "linf",
          loss: str = "ce", shift_norm: str = "linf", targeted: bool = False) -> jax.Array:
    """FGSM on validated inputs: ``x_adv[E,N,...]`` (``keys`` unused: FGSM is deterministic)."""
    spec = C.loss_spec(loss, targeted=targeted, confidence=None, shift_norm=shift_norm)
    return _fgsm_grid(logits_fn, x, label, jnp.asarray(eps, jnp.float32), norm=norm, spec=spec)


def check_hparams(*, norm: Any, loss: Any, shift_norm: Any, targeted: bool = False) -> dict[str, Any]:
    """Validates FGSM's hyperparameters on the host; returns them (ValueError on misuse)."""
    V.check_choice(norm, C.NORMS, name="norm")
    C.loss_spec(loss, targeted=targeted, confidence=None, shift_norm=shift_norm)
    return {"norm": norm, "loss": loss, "shift_norm": shift_norm}


_recorded = C.recorded_checker(check_hparams)


DEFINITION = AttackDef(
    "fgsm", fgsm, check=_recorded, defaults=lambda: keyword_defaults(fgsm), core=_core,
    grid_free=True, buffers=3, single_step=True,
)
