"""Deepfake detectors (Flax Linen), their registry and PyTorch weight import."""

from rrjax.models.base import Detector

__all__ = ["Detector"]
