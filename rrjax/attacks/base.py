"""What rrjax knows about an attack, in one record: :class:`AttackDef`.

Every consumer reads the registry entry instead of keeping its own list: ``rrjax.evaluate``
(the function, its checker, its threat norm), the sweep's planner (memory buffers, whether one
program serves the whole ε grid, unrollable loops), its hot path (the jitted ``core``, called
after the sweep validated its inputs once), the health checks (iterative vs single-step,
gradient-free) and the report. The built-in attacks define their entry next to their code
(``fgsm.DEFINITION`` ...); users add theirs with :func:`rrjax.attacks.register`.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
from collections.abc import Callable, Mapping
from typing import Any

import jax

__all__ = ["AttackDef", "keyword_defaults", "threat_norm_from_hparams"]

_NOT_HPARAMS = ("key", "target")


def keyword_defaults(fn: Callable[..., Any], drop: tuple[str, ...] = _NOT_HPARAMS) -> dict[str, Any]:
    """The keyword-only parameters of ``fn`` with their defaults (``key``/``target`` excluded)."""
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in inspect.signature(fn).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in drop
    }


def _accepts_any_keyword(fn: Callable[..., Any]) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in inspect.signature(fn).parameters.values())


def threat_norm_from_hparams(hparams: Mapping[str, Any]) -> str:
    """The default threat model: the attack's ``norm`` hyperparameter, else L∞."""
    return str(hparams.get("norm", "linf"))


@dataclasses.dataclass(frozen=True)
class AttackDef:
    """One registered attack.

    Attributes:
      name: registry name (what ``--attacks`` and ``evaluate(attack=...)`` accept).
      fn: the public attack, ``fn(logits_fn, x, y, eps, *, key, **hparams) -> x_adv`` with
        ``x_adv[E,N,...]`` for an ε grid (validates its inputs).
      check: ``check(**hparams) -> dict``: validates on the host (``ValueError`` naming the
        argument) and returns the hyperparameters *as recorded*: defaults filled in, values
        normalised, entries the configuration does not use left out. ``None`` values are
        dropped by :meth:`resolve`.
      defaults: every hyperparameter the attack accepts, with its default; ``None`` = any name
        (a function taking ``**kwargs``).
      core: ``core(logits_fn, x, y, eps, keys, **recorded) -> x_adv[E,N,...]`` without
        validation (``x`` f32 device array, ``y`` int32, ``eps`` f32[E], ``keys`` a typed PRNG
        key per sample); the sweep's hot path. ``None``: ``fn`` is called with ``key=keys``.
      threat_norm: recorded hyperparameters -> the perturbation norm (``"linf"``, ``"l2"``).
      grid_free: one run serves every ε (work and memory independent of the grid size).
      buffers: input-sized arrays the attack keeps per (ε, sample) besides the model's
        activations (the sweep's memory plan).
      iterative: a multi-step attack (health: must not be weaker than a single-step one).
      single_step: the health checks' single-step reference (FGSM).
      loop_length: recorded hyperparameters -> iterations of an unrolled program, or ``None``
        when that configuration cannot unroll; the field itself is ``None`` for attacks that
        never accept ``unroll``.
      gradient_free: uses the model's outputs only (never its gradients).
      diagnostics: ``diagnostics(logits_fn, x, y, eps, keys, **recorded) -> (x_adv, info)``: the
        core plus per-(ε, sample) bool arrays ``info`` the sweep stores with each cell for
        health checks (APGD: ``still_improving``, the best loss still rising at the end).
      members: for an ensemble, recorded hyperparameters -> ``[(label, attack name, hparams)]``;
        ``evaluate`` and the sweep run each member as an ordinary attack and keep the worst case
        per metric (:mod:`rrjax.attacks.ensemble`). ``None`` for a single attack.
    """

    name: str
    fn: Callable[..., jax.Array]
    check: Callable[..., dict[str, Any]]
    defaults: Callable[[], dict[str, Any] | None]
    core: Callable[..., jax.Array] | None = None
    threat_norm: Callable[[Mapping[str, Any]], str] = threat_norm_from_hparams
    grid_free: bool = False
    buffers: int = 6
    iterative: bool = False
    single_step: bool = False
    loop_length: Callable[[Mapping[str, Any]], int | None] | None = None
    gradient_free: bool = False
    members: Callable[[Mapping[str, Any]], list[tuple[str, str, dict]]] | None = None
    diagnostics: Callable[..., tuple[jax.Array, dict[str, jax.Array]]] | None = None

    def resolve(self, **hparams: Any) -> dict[str, Any]:
        """Validates a configuration and fills in its defaults: the hyperparameters to record.

        Raises:
          ValueError: ``target`` given (per-sample data, not a hyperparameter), an unknown
            hyperparameter (the valid ones are listed), an invalid value, or a value that
            cannot be recorded as JSON.
        """
        if "target" in hparams:
            raise ValueError("target= is per-sample data and cannot be a hyperparameter of a configuration")
        defaults = self.defaults()
        if defaults is not None:
            unknown = sorted(set(hparams) - set(defaults))
            if unknown:
                raise ValueError(f"attack {self.name!r} has no hyperparameter(s) {unknown}; valid: {sorted(defaults)}")
        resolved = {k: v for k, v in self.check(**{**(defaults or {}), **hparams}).items() if v is not None}
        if resolved.get("unroll") is False:
            # An execution choice with the same result: the default stays out of configurations
            # (and so out of sweep cell ids); unroll=True is recorded, its rounding may differ.
            resolved.pop("unroll")
        try:
            json.dumps(resolved, allow_nan=False)
        except (TypeError, ValueError):
            raise ValueError(f"attack {self.name!r}: hyperparameters {resolved!r} must be JSON values "
                             "(numbers, strings, booleans, lists) so that records can state them") from None
        return resolved

    def run(self, logits_fn: Any, x: jax.Array, y: jax.Array, eps: Any, keys: jax.Array, **recorded: Any) -> jax.Array:
        """The attack on validated inputs (the sweep's hot path): ``x_adv[E,N,...]``."""
        if self.core is not None:
            return self.core(logits_fn, x, y, eps, keys, **recorded)
        return self.fn(logits_fn, x, y, eps, key=keys, **recorded)

    def run_with_info(self, logits_fn: Any, x: jax.Array, y: jax.Array, eps: Any, keys: jax.Array,
                      **recorded: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        """:meth:`run` plus the attack's per-(ε, sample) diagnostics (empty when it has none)."""
        if self.diagnostics is not None:
            return self.diagnostics(logits_fn, x, y, eps, keys, **recorded)
        return self.run(logits_fn, x, y, eps, keys, **recorded), {}

    @property
    def accepts_eps_batch_size(self) -> bool:
        """Whether the ε grid can be vectorised in groups (``eps_batch_size``) to bound memory."""
        defaults = self.defaults()
        return defaults is None or "eps_batch_size" in defaults

    @staticmethod
    def for_function(name: str, fn: Callable[..., jax.Array], **fields: Any) -> "AttackDef":
        """An entry for a user's attack function with safe defaults (see ``attacks.register``)."""
        if _accepts_any_keyword(fn):
            defaults: Callable[[], dict | None] = lambda: None  # noqa: E731
        else:
            defaults = lambda: keyword_defaults(fn)  # noqa: E731
        check = fields.pop("check", None) or (lambda **hp: dict(hp))
        return AttackDef(name=name, fn=fn, check=check, defaults=defaults, **fields)
