"""Adversarial attacks as pure functions batched over an ε grid.

Every attack has the signature ``attack(logits_fn, x, y, eps, *, key, **hparams) -> x_adv``:
``eps`` scalar -> ``x_adv[N,...]``; ``eps`` grid ``[E]`` -> ``x_adv[E,N,...]`` from one compiled
program, with ``‖x_adv − x‖ ≤ ε`` in the attack's norm and ``0 ≤ x_adv ≤ 1``.
"""

from __future__ import annotations

import inspect
from typing import Any

from rrjax.attacks import cw as _cw
from rrjax.attacks import fgsm as _fgsm
from rrjax.attacks import pgd as _pgd
from rrjax.attacks.cw import CWResult, cw_l2, cw_l2_minimal
from rrjax.attacks.fgsm import fgsm
from rrjax.attacks.pgd import cw_bounded, default_rel_step_size, pgd
from rrjax.types import Attack

__all__ = [
    "ATTACKS", "ATTACK_NORMS", "get_attack", "attack_norm", "resolve_hparams",
    "fgsm", "pgd", "cw_bounded", "cw_l2", "cw_l2_minimal", "CWResult", "default_rel_step_size",
]

ATTACKS: dict[str, Attack] = {
    "fgsm": fgsm,
    "pgd": pgd,
    "cw_bounded": cw_bounded,
    "cw_l2": cw_l2,
}

# Threat-model norm of each attack when called without ``norm=`` (cw_l2 is always L2).
ATTACK_NORMS = {"fgsm": "linf", "pgd": "linf", "cw_bounded": "linf", "cw_l2": "l2"}


def get_attack(name: str) -> Attack:
    """Looks an attack up by name; unknown names raise ``ValueError`` listing the valid ones."""
    try:
        return ATTACKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attack {name!r}; valid attacks: {', '.join(sorted(ATTACKS))}") from None


def attack_norm(name: str, hparams: dict | None = None) -> str:
    """The perturbation norm an attack configuration uses (``linf`` or ``l2``)."""
    get_attack(name)
    if name == "cw_l2":
        return "l2"
    return (hparams or {}).get("norm", ATTACK_NORMS[name])


def _keyword_defaults(fn: Any, drop: tuple[str, ...] = ("key", "target")) -> dict[str, Any]:
    return {
        p.name: p.default for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in drop
    }


def _pgd_defaults() -> dict[str, Any]:
    return _keyword_defaults(pgd)


# name -> (default hyperparameters, host-side checker). The checker is the one the attack
# itself runs, so a configuration accepted here cannot fail later for its hyperparameters.
_HPARAMS = {
    "fgsm": (lambda: _keyword_defaults(fgsm), _fgsm.check_hparams),
    "pgd": (_pgd_defaults, _pgd.check_hparams),
    "cw_bounded": (lambda: {**_pgd_defaults(), **_keyword_defaults(cw_bounded), "loss": "margin"}, _pgd.check_hparams),
    "cw_l2": (lambda: _keyword_defaults(cw_l2_minimal), _cw.check_hparams),
}


def resolve_hparams(name: str, **hparams: Any) -> dict[str, Any]:
    """Validates an attack configuration on the host and fills in every default.

    Args:
      name: a key of ``ATTACKS``.
      **hparams: keyword hyperparameters of that attack (``target`` is per-sample data, not a
        hyperparameter, and is rejected).

    Returns:
      All hyperparameters the attack will use (``None`` values dropped), suitable for
      recording and for ``get_attack(name)(..., **resolved)``.

    Raises:
      ValueError: unknown attack or hyperparameter (the valid ones are listed), or an invalid value.
    """
    get_attack(name)
    if "target" in hparams:
        raise ValueError("target= is per-sample data and cannot be a hyperparameter of a configuration")
    defaults_fn, check = _HPARAMS[name]
    defaults = defaults_fn()
    if name == "cw_bounded" and "loss" in hparams:
        raise ValueError(f"cw_bounded always uses the CW margin loss; got loss={hparams['loss']!r}")
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ValueError(f"attack {name!r} has no hyperparameter(s) {unknown}; valid: {sorted(defaults)}")
    merged = {**defaults, **hparams}
    checked = check(**merged)
    resolved = {k: v for k, v in checked.items() if v is not None}
    if resolved.get("loss") != "prob_shift":
        resolved.pop("shift_norm", None)  # only the probability-shift loss reads it
    if name == "cw_bounded":
        resolved.pop("loss", None)
    if not resolved.get("unroll", True):
        # An execution choice with the same result: the default stays out of configurations (and
        # so out of sweep cell ids); unroll=True is recorded, its float rounding may differ.
        resolved.pop("unroll")
    return resolved

