"""Adversarial attacks as pure functions batched over an ε grid.

Every attack has the signature ``attack(logits_fn, x, y, eps, *, key, **hparams) -> x_adv``:
``eps`` scalar -> ``x_adv[N,...]``; ``eps`` grid ``[E]`` -> ``x_adv[E,N,...]`` from one compiled
program, with ``‖x_adv − x‖ ≤ ε`` in the attack's norm and ``0 ≤ x_adv ≤ 1``.
"""

from __future__ import annotations

from rrjax.attacks.cw import CWResult, cw_l2, cw_l2_minimal
from rrjax.attacks.fgsm import fgsm
from rrjax.attacks.pgd import cw_bounded, default_rel_step_size, pgd
from rrjax.types import Attack

__all__ = [
    "ATTACKS", "ATTACK_NORMS", "get_attack", "attack_norm",
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
