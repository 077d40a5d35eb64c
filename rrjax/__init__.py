"""rrjax: robust accuracy and robust ratio of deepfake detectors, in JAX/Flax.

The functional API: ``rrjax.evaluate(logits_fn, x, y, attack=..., eps=..., tolerance=...,
key=...)``; attacks in :mod:`rrjax.attacks`, metrics in :mod:`rrjax.metrics`. Submodules are
imported on first use, so ``import rrjax`` is cheap for tools that need only part of it
(plotting records does not load JAX).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "attacks", "metrics", "models", "data", "sweep", "records", "plots", "train", "checkpoints",
    "clean_metrics", "evaluation", "cli", "types",
)
_FROM_EVALUATION = ("evaluate", "Evaluation", "probabilities")
__all__ = [*_SUBMODULES, *_FROM_EVALUATION, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _FROM_EVALUATION:
        return getattr(importlib.import_module("rrjax.evaluation"), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"rrjax.{name}")
    raise AttributeError(f"module 'rrjax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
