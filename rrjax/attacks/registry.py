"""The attack registry: one :class:`~rrjax.attacks.base.AttackDef` per name, read by every consumer."""

from __future__ import annotations

import inspect
import keyword
from collections.abc import Callable, Mapping
from typing import Any

import jax

from rrjax.attacks.apgd import DEFINITION as APGD
from rrjax.attacks.base import AttackDef
from rrjax.attacks.cw import DEFINITION as CW_L2
from rrjax.attacks.ensemble import AUTOATTACK, ensemble_definition
from rrjax.attacks.fgsm import DEFINITION as FGSM
from rrjax.attacks.pgd import CW_BOUNDED, PGD
from rrjax.attacks.square import DEFINITION as SQUARE

__all__ = ["ATTACKS", "BUILTIN", "register", "register_ensemble", "get_def", "get_attack", "resolve_hparams",
           "attack_norm"]

BUILTIN: tuple[AttackDef, ...] = (FGSM, PGD, CW_BOUNDED, CW_L2, APGD, SQUARE, AUTOATTACK)
ATTACKS: dict[str, AttackDef] = {d.name: d for d in BUILTIN}


def get_def(name: str) -> AttackDef:
    """The registry entry of ``name``; unknown names raise ``ValueError`` listing the valid ones."""
    try:
        return ATTACKS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown attack {name!r}; valid attacks: {', '.join(sorted(ATTACKS))} "
                         "(or register your own with rrjax.attacks.register)") from None


def get_attack(name: str) -> Callable[..., jax.Array]:
    """The public attack function registered as ``name`` (``ValueError`` lists the valid names)."""
    return get_def(name).fn


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
    return get_def(name).resolve(**hparams)


def attack_norm(name: str, hparams: Mapping[str, Any] | None = None) -> str:
    """The perturbation norm an attack configuration uses (``linf`` or ``l2``)."""
    return get_def(name).threat_norm(dict(hparams or {}))


def _check_signature(name: str, fn: Callable[..., Any]) -> None:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        raise ValueError(f"attack {name!r}: cannot read the signature of {fn!r}") from None
    positional = [p for p in params.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    takes_key = "key" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
    if len(positional) < 4 and not any(p.kind is p.VAR_POSITIONAL for p in params.values()) or not takes_key:
        raise ValueError(
            f"attack {name!r}: {getattr(fn, '__name__', fn)!r} must follow the attack contract "
            "fn(logits_fn, x, y, eps, *, key, **hparams) -> x_adv[E,N,...]"
        )


def _check_name(name: str, overwrite: bool) -> None:
    if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
        raise ValueError(f"attack name {name!r} must be a Python identifier (it appears in --attacks=name(...))")
    if any(d.name == name for d in BUILTIN):
        raise ValueError(f"attack {name!r} is built into rrjax and cannot be replaced; register under another name")
    if name in ATTACKS and not overwrite:
        raise ValueError(f"attack {name!r} is already registered; pass overwrite=True to replace it")


def register_ensemble(name: str, members: list[tuple[str, str, dict]], *, overwrite: bool = False) -> AttackDef:
    """Adds an ensemble of registered attacks: per sample and ε the worst case for each metric
    separately (``rrjax.attacks.ensemble``), by name in ``evaluate`` and the sweep.

    Args:
      name: a new attack name.
      members: ``[(label, attack name, hyperparameters), ...]``, at least one, distinct labels;
        every configuration is validated now (its attack's checker).
      overwrite: replace an earlier user registration.

    Raises:
      ValueError: a bad or taken name, no members, repeated labels, an unknown attack or an
        invalid configuration.
    """
    _check_name(name, overwrite)
    if not members:
        raise ValueError(f"ensemble {name!r} has no members; expected [(label, attack, hparams), ...]")
    labels = [m[0] for m in members]
    if len(set(labels)) != len(labels):
        raise ValueError(f"ensemble {name!r} repeats member labels {labels}")
    fixed = [(str(label), attack, get_def(attack).resolve(**dict(hp))) for label, attack, hp in members]
    if any(get_def(a).members is not None for _, a, _ in fixed):
        raise ValueError(f"ensemble {name!r}: members must be single attacks, not ensembles")
    definition = ensemble_definition(name, lambda hparams: list(fixed), lambda **hp: dict(hp), lambda: {})
    ATTACKS[name] = definition
    return definition


def register(
    name: str,
    fn: Callable[..., jax.Array],
    *,
    check: Callable[..., dict[str, Any]] | None = None,
    threat_norm: str | Callable[[Mapping[str, Any]], str] | None = None,
    grid_free: bool = False,
    buffers: int = 6,
    iterative: bool = False,
    gradient_free: bool = False,
    core: Callable[..., jax.Array] | None = None,
    overwrite: bool = False,
) -> AttackDef:
    """Adds an attack to the registry, so ``rrjax.evaluate(attack=name)`` and
    ``experiments/sweep.py --attacks=name(...)`` (with ``--extra_modules=<your module>``) run it.

    ``register(name, fn)`` alone works; every other field has a safe default.

    Args:
      name: a Python identifier not yet registered (``overwrite=True`` replaces a user entry;
        built-in attacks cannot be replaced).
      fn: ``fn(logits_fn, x, y, eps, *, key, **hparams) -> x_adv``: for an ε grid ``eps[E]`` it
        returns ``x_adv[E,N,...]`` with ``‖x_adv − x‖ ≤ ε`` in its threat norm and pixels in
        [0, 1]. The sweep passes ``key`` as one PRNG key per sample (``[N]``; use
        ``rrjax.attacks.sample_keys(key, n)`` to accept either form) and the recorded
        hyperparameters as keywords. Its keyword-only parameters (besides ``key``/``target``)
        are its hyperparameters; a ``**kwargs`` parameter accepts any name.
      check: ``check(**hparams) -> dict`` validating a configuration (``ValueError`` on bad
        values) and returning it as it should be recorded; default: unknown names are refused,
        values must be JSON numbers, strings, booleans or lists.
      threat_norm: ``"linf"``/``"l2"`` or a function of the hyperparameters; default: the
        ``norm`` hyperparameter, else ``"linf"``.
      grid_free: one run serves every ε (the sweep then budgets memory for one ε).
      buffers: input-sized arrays kept per (ε, sample) besides the model's activations (the
        sweep's memory plan; 6 is PGD's).
      iterative: a multi-step ε-ball attack (health check: not weaker than FGSM).
      gradient_free: uses model outputs only.
      core: an unvalidated fast path ``core(logits_fn, x, y, eps, keys, **hparams)``; default
        ``fn`` itself.
      overwrite: replace an earlier user registration of ``name``.

    Returns:
      The new :class:`AttackDef`.

    Raises:
      ValueError: a bad name, a taken name, a built-in name, or ``fn`` without the contract.
    """
    _check_name(name, overwrite)
    if not callable(fn):
        raise ValueError(f"attack {name!r}: fn must be callable, got {type(fn).__name__}")
    _check_signature(name, fn)
    if buffers < 1 or isinstance(buffers, bool) or not isinstance(buffers, int):
        raise ValueError(f"attack {name!r}: buffers={buffers!r}; expected an integer >= 1")
    fields: dict[str, Any] = dict(grid_free=bool(grid_free), buffers=buffers, iterative=bool(iterative),
                                  gradient_free=bool(gradient_free), core=core, check=check)
    if threat_norm is not None:
        fields["threat_norm"] = threat_norm if callable(threat_norm) else (lambda hparams, n=str(threat_norm): n)
    definition = AttackDef.for_function(name, fn, **fields)
    ATTACKS[name] = definition
    return definition
