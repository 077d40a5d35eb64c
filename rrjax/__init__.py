"""rrjax: robust accuracy and robust ratio of deepfake detectors, in JAX/Flax.

The functional API: ``rrjax.evaluate(logits_fn, x, y, attack=..., eps=..., tolerance=...,
key=...)``; attacks in :mod:`rrjax.attacks`, metrics in :mod:`rrjax.metrics`.
"""

from rrjax import attacks, metrics
from rrjax.evaluation import Evaluation, evaluate, probabilities

__version__ = "0.1.0"
__all__ = ["attacks", "metrics", "evaluate", "Evaluation", "probabilities", "__version__"]
