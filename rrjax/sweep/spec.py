"""What a sweep is asked to do: attack configurations, detectors, grids and settings, and the
parsing of their command-line spellings (``--attacks='fgsm,pgd(steps=10)'``, ``--eps=0:0.2:9``,
``--models=label=path``). Everything is validated here, before data is built or anything
compiles, so a sweep never fails later on its configuration.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from rrjax import _validation as V
from rrjax import cli, metrics
from rrjax.attacks.registry import ATTACKS, get_def
from rrjax.models.base import Detector

__all__ = ["AttackSpec", "ModelEntry", "SweepSettings", "parse_grid", "parse_attacks", "parse_models",
           "load_model", "import_extra_modules"]


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """An attack name, its fully resolved hyperparameters, and optionally its own ε grid.

    ``eps`` overrides the sweep's grid for this attack (e.g. L2 budgets for ``cw_l2``, which are
    not comparable in size with L∞ ones); ``None`` uses the sweep's grid. An ensemble (an
    attack whose registry entry has ``members``) carries its members as ``(label, spec)``
    pairs: ordinary attack specs on the ensemble's grid, run (and recorded) like standalone ones.
    """

    name: str
    params: tuple[tuple[str, Any], ...] = ()
    eps: tuple[float, ...] | None = None
    members: tuple[tuple[str, "AttackSpec"], ...] = ()

    @classmethod
    def make(cls, name: str, *, eps: Any = None, unroll_max_steps: float = 0, **params: Any) -> "AttackSpec":
        """Validates and resolves a configuration (the attack's registry entry).

        ``unroll_max_steps``: an attack that can unroll this configuration's loop
        (``AttackDef.loop_length``) within this many iterations gets ``unroll=True`` unless
        ``params`` set ``unroll`` (faster on XLA:CPU; see ``rrjax.attacks.pgd``). Ensemble
        members get the same treatment as standalone attacks, so their cells are shared.
        """
        definition = get_def(name)
        resolved = definition.resolve(**params)
        steps = None if definition.loop_length is None else definition.loop_length(resolved)
        if "unroll" not in params and steps is not None and steps <= unroll_max_steps:
            resolved = definition.resolve(**params, unroll=True)
        grid = None if eps is None else tuple(float(e) for e in parse_grid(eps, name=f"{name} eps"))
        members = ()
        if definition.members is not None:
            members = tuple((label, cls.make(m, eps=grid, unroll_max_steps=unroll_max_steps, **hp))
                            for label, m, hp in definition.members(resolved))
        return cls(name, tuple(sorted(resolved.items())), grid, members)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.params)

    @property
    def definition(self):
        """The attack's registry entry (:class:`rrjax.attacks.AttackDef`)."""
        return get_def(self.name)

    @property
    def threat_norm(self) -> str:
        return self.definition.threat_norm(self.kwargs)

    def with_params(self, **params: Any) -> "AttackSpec":
        """The same attack with some recorded hyperparameters replaced (no re-validation)."""
        return AttackSpec(self.name, tuple(sorted({**self.kwargs, **params}.items())), self.eps, self.members)

    def with_members(self, members: tuple[tuple[str, "AttackSpec"], ...]) -> "AttackSpec":
        return AttackSpec(self.name, self.params, self.eps, members)


@dataclasses.dataclass(frozen=True)
class ModelEntry:
    """A detector to sweep: a label for the records, the detector, its variables, provenance."""

    label: str
    detector: Detector
    variables: Any
    checkpoint: str = ""
    checkpoint_sha256: str = ""


@dataclasses.dataclass(frozen=True)
class SweepSettings:
    """Grids and options shared by every cell of a sweep."""

    eps: tuple[float, ...]
    tolerance: tuple[float, ...]
    shift_norm: str = metrics.DEFAULT_SHIFT_NORM
    strict: bool = False
    ci_method: str = "wilson"
    seed: int = 0
    batch_size: int = 64
    memory_budget_mb: float | None = None

    def __post_init__(self):
        for name in ("eps", "tolerance"):
            _distinct(V.as_grid(getattr(self, name), name=name, lower=0.0)[0], name)
        V.check_choice(self.shift_norm, metrics.SHIFT_NORMS, name="shift_norm")
        V.check_choice(self.ci_method, metrics.CI_METHODS, name="ci_method")
        V.check_int(self.seed, name="seed", minimum=0)
        V.check_int(self.batch_size, name="batch_size", minimum=1)
        if self.memory_budget_mb is not None:
            V.check_number(self.memory_budget_mb, name="memory_budget_mb", lower=0.0, upper=MAX_BUDGET_MB, strict=True)


# A per-device budget above a petabyte is a typo, and float arithmetic on it overflows.
MAX_BUDGET_MB = 1e9


def _distinct(grid: np.ndarray, name: str) -> np.ndarray:
    """Refuses repeated values (as float32, how grids are computed and recorded)."""
    values, counts = np.unique(np.asarray(grid, np.float32), return_counts=True)
    if np.any(counts > 1):
        raise ValueError(f"{name} has repeated values {[float(f'{v:.7g}') for v in values[counts > 1]]} "
                         "(compared as float32); expected "
                         "distinct values, each listed once")
    return grid


_GRID_RANGE = re.compile(r"^\s*([^:]+):([^:]+):([^:]+)\s*$")


def parse_grid(spec: str | Sequence[float], *, name: str) -> np.ndarray:
    """Parses ``"0,0.01,0.05"`` or ``"start:stop:num"`` (inclusive linspace) into a float32 grid.

    Raises ``ValueError`` naming ``name`` for malformed specs, non-finite, negative or repeated
    values (a repeated ε or tolerance would be computed twice or recorded twice).
    """
    if not isinstance(spec, str):
        return _distinct(V.as_grid(list(spec), name=name, lower=0.0)[0], name)
    m = _GRID_RANGE.match(spec)
    try:
        if m:
            start, stop, num = float(m.group(1)), float(m.group(2)), m.group(3).strip()
            if not num.isdigit() or int(num) < 1:
                raise ValueError
            values = np.linspace(start, stop, int(num))
        else:
            values = [float(v) for v in spec.split(",") if v.strip()]
    except ValueError:
        raise ValueError(
            f"{name}={spec!r} is malformed; expected comma-separated numbers like '0,0.05,0.1' or "
            "'start:stop:num' like '0:0.2:9'"
        ) from None
    return _distinct(V.as_grid(values, name=name, lower=0.0)[0], name)


_ATTACK_ITEM = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\(([^()]*)\))?\s*(?:,|$)")


def _parse_items(spec: str) -> list[tuple[str, dict[str, Any]]]:
    """``"fgsm,pgd(steps=10,norm=l2)"`` -> ``[("fgsm", {}), ("pgd", {"steps": 10, "norm": "l2"})]``."""
    out, pos = [], 0
    while pos < len(spec):
        m = _ATTACK_ITEM.match(spec, pos)
        if not m or m.end() == pos:
            raise ValueError(f"attacks={spec!r} is malformed near {spec[pos:]!r}; expected name or name(k=v,...) items")
        name, body = m.group(1), m.group(2)
        params: dict[str, Any] = {}
        for item in filter(str.strip, (body or "").split(",")):
            if "=" not in item:
                raise ValueError(f"attack {name!r}: {item.strip()!r} is not k=v")
            k, v = item.split("=", 1)
            # An attack's own ε grid: start:stop:num, or values separated by ";" (commas separate
            # hyperparameters here).
            params[k.strip()] = v.strip().replace(";", ",") if k.strip() == "eps" else cli.parse_value(v)
        out.append((name, params))
        pos = m.end()
    return out


def parse_attacks(spec: str, *, unroll_max_steps: float = 0) -> list[AttackSpec]:
    """Parses ``"fgsm,pgd(steps=10,norm=l2),cw_l2(steps=200,eps=0:2:9)"`` into attack specs.

    Values are parsed like flag values (``rrjax.cli.parse_value``); ``eps=start:stop:num`` or
    ``eps=0;0.5;1`` gives the attack its own ε grid. Every hyperparameter is validated here.

    ``unroll_max_steps``: see :meth:`AttackSpec.make` (0: never unroll).

    Raises ``ValueError`` for unknown attacks (listing valid ones), unknown hyperparameters,
    invalid values and malformed text.
    """
    spec = spec.strip()
    if not spec:
        raise ValueError(f"attacks is empty; expected e.g. 'fgsm,pgd(steps=10)'; valid attacks: {sorted(ATTACKS)}")
    out = [AttackSpec.make(name, unroll_max_steps=unroll_max_steps, **params) for name, params in _parse_items(spec)]
    names = [(a.name, a.params, a.eps) for a in out]
    if len(set(names)) != len(names):
        raise ValueError(f"attacks={spec!r} lists the same attack configuration twice")
    return out


def parse_models(items: Sequence[str]) -> list[tuple[str | None, str]]:
    """``["checkpoints/meso4", "b=runs/x/detector"]`` -> ``[(None, "checkpoints/meso4"), ("b", "runs/...")]``."""
    out = []
    for item in items:
        label, sep, path = item.partition("=")
        out.append((label.strip(), path.strip()) if sep else (None, item.strip()))
    if not out:
        raise ValueError("--models is empty; expected checkpoint directories, e.g. checkpoints/meso4")
    return out


def load_model(path: str | os.PathLike, *, label: str | None = None) -> ModelEntry:
    """A :class:`ModelEntry` from an rrjax checkpoint directory (label: the model name by default)."""
    from rrjax import checkpoints

    p = pathlib.Path(path)
    if not p.exists():
        raise ValueError(f"checkpoint {str(path)!r} does not exist; expected an rrjax checkpoint directory "
                         "(experiments/train.py or experiments/convert_weights.py write them)")
    detector, variables, meta = checkpoints.load(p)
    return ModelEntry(label or detector.name, detector, variables, str(path), meta.get("content_sha256", ""))


def import_extra_modules(names: Sequence[str]) -> list[Any]:
    """Imports user modules that register attacks, detectors or datasets (``--extra_modules``).

    A module registers its pieces when imported (``rrjax.attacks.register(...)`` at its top
    level): that is the user's choice for their own code; rrjax itself never registers at import.

    Raises:
      ValueError: a module that cannot be imported (the import error is named).
    """
    out = []
    for name in names:
        name = name.strip()
        if not name:
            continue
        try:
            out.append(importlib.import_module(name))
        except Exception as e:  # any failure in the user's module: one clear line, not a traceback
            raise ValueError(f"--extra_modules: cannot import {name!r} ({type(e).__name__}: {e}); pass an importable "
                             "module path such as my_pkg.my_attacks (on PYTHONPATH)") from None
    return out
