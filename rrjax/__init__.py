"""rrjax: robust accuracy and robust ratio of deepfake detectors, in JAX/Flax."""

__version__ = "0.1.0"
