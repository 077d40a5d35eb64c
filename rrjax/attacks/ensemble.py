"""Ensembles of attacks: a worst case per sample and ε, for each metric separately.

An ensemble runs each of its members (ordinary registered attacks, each with the same key, so a
member's result equals a standalone run of it) and keeps, per sample and ε:

* **RA**: the sample is correct only if every member leaves it correct;
* **RR**: its shift ‖p(x′) − p(x)‖ is the largest any member found (strict RR: the label must
  also stay under every member).

The two worst cases may come from different members; which member produced each is recorded
(``ra_member``: the first member in order that broke the sample, -1 if none did;
``rr_member``: the member with the largest shift). A sample with a non-finite output under any
member has no verdict (so the ensemble's counts never exceed a member's). Every member attacks
every sample: AutoAttack stops attacking samples that are already misclassified, which is
enough for RA, but RR's worst case needs each member's shift, which can still grow.

:data:`AUTOATTACK` is AutoAttack (Croce & Hein, ICML 2020) for two-class detectors: APGD with
the cross-entropy, the CW margin (DLR needs >= 3 classes) and the RR shift as losses, plus the
gradient-free Square Attack. ``version="standard"`` follows AutoAttack's budgets (100 steps,
5000 queries); ``version="fast"`` is for CPU runs (20 steps, 500 queries).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from rrjax import _validation as V
from rrjax.attacks.base import AttackDef

__all__ = ["Member", "ensemble_definition", "combine", "AUTOATTACK", "AUTOATTACK_MEMBERS", "AUTOATTACK_VERSIONS",
           "autoattack_members", "autoattack"]

Member = tuple[str, str, dict]  # (label, registered attack, hyperparameters before resolution)

AUTOATTACK_MEMBERS: dict[str, tuple[str, dict]] = {
    "apgd-ce": ("apgd", {"loss": "ce"}),
    "apgd-margin": ("apgd", {"loss": "margin"}),
    "apgd-prob_shift": ("apgd", {"loss": "prob_shift"}),
    "square": ("square", {"loss": "margin"}),
}
AUTOATTACK_VERSIONS = {"standard": {"steps": 100, "queries": 5000}, "fast": {"steps": 20, "queries": 500}}


def combine(correct: np.ndarray, shift: np.ndarray, same_label: np.ndarray, valid: np.ndarray) -> dict[str, np.ndarray]:
    """The per-metric worst case over members (axis 0) of per-sample outcomes.

    Args:
      correct, same_label, valid: bool[M, ...]; shift: f[M, ...] (members first).

    Returns:
      ``correct``, ``same_label``, ``valid`` (bool[...]), ``shift`` (f[...]), ``ra_member``
      and ``rr_member`` (int32[...]; -1 where no member broke the sample / it has no verdict).
    """
    correct, same_label, valid = (np.asarray(a, bool) for a in (correct, same_label, valid))
    shift = np.asarray(shift)
    ok = valid.all(axis=0)
    broken = ~correct & valid
    ra_member = np.where(broken.any(axis=0), np.argmax(broken, axis=0), -1)
    worst = np.argmax(np.where(valid, shift, -np.inf), axis=0)
    return {
        "correct": correct.all(axis=0) & ok,
        "same_label": same_label.all(axis=0) & ok,
        "valid": ok,
        "shift": np.where(ok, np.take_along_axis(shift, worst[None], 0)[0], 0.0).astype(shift.dtype),
        "ra_member": np.where(ok, ra_member, -1).astype(np.int32),
        "rr_member": np.where(ok, worst, -1).astype(np.int32),
    }


def _run_members(members: Callable[[dict], list[Member]]) -> Callable[..., dict[str, jax.Array]]:
    def run(logits_fn: Any, x: Any, y: Any, eps: Any, *, key: Any, **hparams: Any) -> dict[str, jax.Array]:
        from rrjax.attacks.registry import get_def

        out = {}
        for label, name, hp in members(hparams):
            d = get_def(name)
            out[label] = d.fn(logits_fn, x, y, eps, key=key, **d.resolve(**hp))
        return out

    return run


def ensemble_definition(
    name: str, members: Callable[[dict], list[Member]], check: Callable[..., dict], defaults: Callable[[], dict],
    *, threat_norm: Callable[[Mapping[str, Any]], str] | None = None,
) -> AttackDef:
    """The registry entry of an ensemble: ``fn`` returns ``{member label: x_adv}``; the
    consumers (``rrjax.evaluate``, the sweep) run its ``members`` and :func:`combine` them."""
    fields = {} if threat_norm is None else {"threat_norm": threat_norm}
    return AttackDef(name, _run_members(members), check=check, defaults=defaults, members=members,
                     iterative=True, **fields)


def _autoattack_defaults() -> dict[str, Any]:
    return {"version": "standard", "norm": "linf", "members": None, "steps": None, "queries": None}


def _check_autoattack(*, version: Any, norm: Any, members: Any, steps: Any, queries: Any) -> dict[str, Any]:
    V.check_choice(version, AUTOATTACK_VERSIONS, name="version")
    V.check_choice(norm, ("linf", "l2"), name="norm")
    if members is None:
        members = list(AUTOATTACK_MEMBERS)
    if isinstance(members, str):
        members = [m for m in members.replace(";", ",").split(",") if m.strip()]
    if not isinstance(members, (list, tuple)) or not members:
        raise ValueError(f"members={members!r}: an ensemble needs at least one member; valid members: "
                         f"{', '.join(AUTOATTACK_MEMBERS)}")
    members = [str(m).strip() for m in members]
    unknown = [m for m in members if m not in AUTOATTACK_MEMBERS]
    if unknown or len(set(members)) != len(members):
        raise ValueError(f"members={members!r} has unknown or repeated names {unknown or members}; valid members: "
                         f"{', '.join(AUTOATTACK_MEMBERS)}")
    out = {"version": version, "norm": norm, "members": members}
    if steps is not None:
        out["steps"] = V.check_int(steps, name="steps", minimum=1)
    if queries is not None:
        out["queries"] = V.check_int(queries, name="queries", minimum=1)
    return out


def autoattack_members(hparams: Mapping[str, Any]) -> list[Member]:
    """The members of an ``autoattack`` configuration (recorded hyperparameters), in order."""
    budget = {**AUTOATTACK_VERSIONS[hparams.get("version", "standard")],
              **{k: hparams[k] for k in ("steps", "queries") if k in hparams}}
    out = []
    for label in hparams.get("members") or list(AUTOATTACK_MEMBERS):
        name, hp = AUTOATTACK_MEMBERS[label]
        size = {"steps": budget["steps"]} if name == "apgd" else {"queries": budget["queries"]}
        out.append((label, name, {**hp, **size, "norm": hparams.get("norm", "linf")}))
    return out


AUTOATTACK = ensemble_definition("autoattack", autoattack_members, _check_autoattack, _autoattack_defaults)


def autoattack(logits_fn: Any, x: Any, y: Any, eps: Any, *, key: Any, version: str = "standard", norm: str = "linf",
               members: Sequence[str] | None = None, steps: int | None = None,
               queries: int | None = None) -> dict[str, jax.Array]:
    """AutoAttack's members over an ε grid: ``{member label: x_adv[E,N,...]}``.

    The worst case per metric is formed by ``rrjax.evaluate(attack="autoattack", ...)`` and by
    the sweep (``--attacks='autoattack(version=fast)'``), from each member's outputs (module
    docstring). Members: ``apgd-ce``, ``apgd-margin``, ``apgd-prob_shift``, ``square``.

    Args:
      version: ``"standard"`` (APGD 100 steps, Square 5000 queries) or ``"fast"`` (20, 500).
      norm: threat norm of every member, ``"linf"`` or ``"l2"``.
      members: a subset of the members, in order (default: all four).
      steps, queries: override the version's APGD steps / Square queries.

    References:
      Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
      parameter-free attacks", ICML 2020.
    """
    hp = AUTOATTACK.resolve(version=version, norm=norm, members=members, steps=steps, queries=queries)
    return AUTOATTACK.fn(logits_fn, x, y, eps, key=key, **hp)
