"""Shared test fixtures: a linear binary classifier with closed-form attacks and small CNNs."""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial


# ----------------------------------------------------------------------------- linear model

def linear_apply(params, x):
    """Binary logits ``[0, w·x + b]`` (class 1 = fake when ``w·x + b > 0``)."""
    s = x.reshape(x.shape[0], -1) @ params["w"] + params["b"]
    return jnp.stack([jnp.zeros_like(s), s], axis=-1)


@dataclasses.dataclass
class Linear:
    """A linear binary classifier and the exact answers attacks on it must reproduce."""

    w: np.ndarray  # f64[D]
    b: float

    @property
    def logits_fn(self):
        return Partial(linear_apply, {"w": jnp.asarray(self.w, jnp.float32), "b": jnp.float32(self.b)})

    def score(self, x):
        return np.asarray(x, np.float64).reshape(len(x), -1) @ self.w + self.b

    def labels(self, x):
        """Labels the model gets right on clean inputs (argmax ties -> class 0)."""
        return (self.score(x) > 0).astype(np.int32)

    def extreme_scores(self, x, eps):
        """Exact min and max of ``w·x' + b`` over ``‖x'−x‖_∞ ≤ eps`` ∩ [0,1] (separable)."""
        x = np.asarray(x, np.float64).reshape(len(x), -1)
        lo = np.clip(x - eps * np.sign(self.w), 0, 1) @ self.w + self.b
        hi = np.clip(x + eps * np.sign(self.w), 0, 1) @ self.w + self.b
        return lo, hi

    def linf_adversarial(self, x, y, eps):
        """Whether the best L∞ attack within the box flips the argmax prediction."""
        lo, hi = self.extreme_scores(x, eps)
        return np.where(y == 1, lo <= 0, hi > 0)

    def l2_distance(self, x):
        """Minimal L2 distance to the decision boundary, ignoring the box."""
        return np.abs(self.score(x)) / np.linalg.norm(self.w)


@pytest.fixture
def linear():
    rng = np.random.default_rng(0)
    return Linear(w=rng.normal(size=24), b=0.05)


# ----------------------------------------------------------------------------- small CNNs

class TinyCNN(nn.Module):
    """Conv -> ReLU -> mean pool -> Dense(2); handles images and (by folding T) videos."""

    @nn.compact
    def __call__(self, x):
        video = x.ndim == 5
        if video:
            n, t = x.shape[:2]
            x = x.reshape((n * t,) + x.shape[2:])
        x = (x - 0.5) / 0.5
        x = nn.relu(nn.Conv(6, (3, 3))(x))
        x = nn.relu(nn.Conv(6, (3, 3), strides=2)(x))
        x = x.mean(axis=(1, 2))
        if video:
            x = x.reshape(n, t, -1).mean(axis=1)
        return nn.Dense(2)(x)


def tiny_apply(variables, x):
    return TinyCNN().apply(variables, x)


@pytest.fixture(scope="session")
def tiny_cnn():
    """``make(shape) -> logits_fn`` for a randomly initialised TinyCNN."""

    def make(per_sample_shape, seed=0):
        x = jnp.zeros((1,) + tuple(per_sample_shape))
        variables = TinyCNN().init(jax.random.key(seed), x)
        return Partial(tiny_apply, variables)

    return make


# ----------------------------------------------------------------------------- tiny detector

class TinyDetectorModule(nn.Module):
    """A small BatchNorm CNN following the detector calling convention (x in [0,1], train flag)."""

    width: int = 6

    @nn.compact
    def __call__(self, x, train: bool = False):
        video = x.ndim == 5
        if video:
            n, t = x.shape[:2]
            x = x.reshape((n * t,) + x.shape[2:])
        x = (x - 0.5) / 0.5
        x = nn.Conv(self.width, (3, 3), use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train)(x))
        x = nn.relu(nn.Conv(self.width, (3, 3), strides=2)(x))
        x = x.mean(axis=(1, 2))
        if video:
            x = x.reshape(n, t, -1).mean(axis=1)
        return nn.Dense(2)(x)


def tiny_detector(shape=(8, 8, 3), seed=0, name="tiny"):
    """A ``Detector`` with random weights whose BatchNorm statistics are not the identity."""
    from rrjax.models.base import Detector

    det = Detector(name=name, module=TinyDetectorModule(), input_shape=tuple(shape))
    variables = det.init(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    stats = variables["batch_stats"]
    variables["batch_stats"] = jax.tree_util.tree_map(
        lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype), stats
    )
    return det, variables


def load_script(stem: str):
    """``experiments/<stem>.py`` as a module, loaded once per session (absl flags are global;
    the scripts define theirs at import or only under ``__main__``)."""
    name = f"rrjax_experiments_{stem}"
    if name not in sys.modules:
        path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / f"{stem}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses resolve annotations through sys.modules
        spec.loader.exec_module(module)
    return sys.modules[name]
