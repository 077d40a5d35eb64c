"""Adversarial attacks as pure functions batched over an ε grid, and their registry.

Every attack has the signature ``attack(logits_fn, x, y, eps, *, key, **hparams) -> x_adv``:
``eps`` scalar -> ``x_adv[N,...]``; ``eps`` grid ``[E]`` -> ``x_adv[E,N,...]`` from one compiled
program, with ``‖x_adv − x‖ ≤ ε`` in the attack's norm and ``0 ≤ x_adv ≤ 1``.

The registry (:data:`ATTACKS`, name -> :class:`AttackDef`) holds everything rrjax knows about
each attack; :func:`register` adds your own (see the README, "Your own attack").
"""

from __future__ import annotations

from rrjax.attacks._common import sample_keys
from rrjax.attacks.apgd import APGDResult, apgd, apgd_with_info
from rrjax.attacks.base import AttackDef
from rrjax.attacks.cw import CWResult, cw_l2, cw_l2_minimal
from rrjax.attacks.ensemble import autoattack
from rrjax.attacks.fgsm import fgsm
from rrjax.attacks.pgd import cw_bounded, default_rel_step_size, pgd
from rrjax.attacks.registry import (
    ATTACKS,
    attack_norm,
    get_attack,
    get_def,
    register,
    register_ensemble,
    resolve_hparams,
)
from rrjax.attacks.square import square

__all__ = [
    "ATTACKS", "AttackDef", "register", "register_ensemble", "autoattack", "get_def", "get_attack", "attack_norm",
    "resolve_hparams", "sample_keys",
    "fgsm", "pgd", "cw_bounded", "cw_l2", "cw_l2_minimal", "CWResult", "default_rel_step_size",
    "apgd", "apgd_with_info", "APGDResult", "square",
]
