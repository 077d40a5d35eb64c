"""The benchmark's workload: one detector with random weights, its inputs and labels, and its
PyTorch twin carrying the same weights (``rrjax.models.to_torch`` into the reference network of
:mod:`rrjax.models.torch_refs`), with logit parity checked before anything is timed.

PyTorch is optional: it is imported only when a twin is built (``with_torch=True``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.tree_util import Partial

from rrjax import models
from rrjax.bench.config import BenchConfig

__all__ = [
    "Workload", "model_config", "random_variables", "calibrate_batch_stats", "logit_offset", "build_workload",
    "shifted_apply", "step_flops", "to_torch_layout", "from_torch_layout",
]

CALIBRATION_SAMPLES = 16


@dataclasses.dataclass
class Workload:
    """Everything the contenders share.

    Attributes:
      model: registry name; ``config`` its keyword arguments.
      detector, variables: the rrjax detector and its weights.
      logits_fn: ``x -> logits + offset`` (a ``Partial``, weights as leaves).
      torch_model: the PyTorch twin (pixels NCHW / NTCHW in [0, 1] -> logits + offset), or None.
      x: f32[S, *input_shape] in [0, 1] (``S = config.samples``; the main comparison uses the
        first N); y: int32[S], the clean predictions.
      offset: the common logit shift (:func:`logit_offset`).
      flops_per_step: XLA's FLOPs of one forward + input-gradient pass for one sample.
      judge: ``jax.jit(detector.apply)``, compiled once per input shape (the RA judge).
    """

    model: str
    config: dict[str, Any]
    detector: Any
    variables: Any
    logits_fn: Any
    torch_model: Any
    x: np.ndarray
    y: np.ndarray
    offset: float
    flops_per_step: float
    judge: Any


def model_config(config: BenchConfig) -> dict[str, Any]:
    """The detector's keyword arguments: DeepfakeBench's shared-BatchNorm MesoNets (the layout the
    PyTorch reference networks have), no drop-connect (the calibration pass is deterministic)."""
    frame = config.model.removesuffix("_video")
    kw: dict[str, Any] = dict(image_size=config.image_size)
    if frame in ("meso4", "meso_inception4"):
        kw["batchnorm"] = "shared"
    if frame == "efficientnet_b4":
        kw["drop_connect_rate"] = 0.0
    if config.model.endswith("_video"):
        kw.update(num_frames=config.num_frames, aggregation="mean")
    if config.model == "i3d":
        kw["num_frames"] = config.num_frames
    return kw


def random_variables(detector: Any, seed: int) -> dict:
    """Random weights without ``init``'s per-parameter RNG programs: He-normal kernels, zero
    biases, unit BatchNorm scales; BatchNorm statistics 0 / 1 until :func:`calibrate_batch_stats`."""
    rng = np.random.default_rng(seed)
    abstract = jax.eval_shape(detector.init, jax.random.key(0))

    def fill(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']"):
            v = rng.normal(size=leaf.shape) * np.sqrt(2.0 / int(np.prod(leaf.shape[:-1])))
        elif name.endswith("['scale']") or name.endswith("['var']"):
            v = np.ones(leaf.shape)
        else:  # biases and running means
            v = np.zeros(leaf.shape)
        return jnp.asarray(v, leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, abstract)


def _bn_input_stats(module: nn.Module, variables: Any, x: jax.Array, key: jax.Array) -> dict[str, Any]:
    stats: dict[str, Any] = {}

    def record(next_fun, args, kwargs, context):
        if isinstance(context.module, nn.BatchNorm) and context.method_name == "__call__":
            h = args[0]
            axes = tuple(range(h.ndim - 1))
            # A module called twice (a shared BatchNorm) keeps its first input's statistics.
            stats.setdefault("/".join(context.module.path), {"mean": jnp.mean(h, axes), "var": jnp.var(h, axes)})
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        module.apply(variables, x, train=True, rngs={"dropout": key}, mutable=["batch_stats"])
    return stats


def calibrate_batch_stats(detector: Any, variables: dict, x: np.ndarray, seed: int = 0) -> dict:
    """``variables`` with every BatchNorm's running statistics set to those of its input in a
    training-mode forward pass on ``x`` (upstream layers batch-normalised, as PyTorch's
    ``torch_refs.randomize_(calib=...)`` does). Deep random networks with unit statistics
    have logits that vanish (EfficientNet-B4: ~1e-8) or ignore the input; calibrated ones have
    logits of order one that depend on it."""
    if "batch_stats" not in variables:
        return variables
    stats = jax.jit(functools.partial(_bn_input_stats, detector.module))(variables, x, jax.random.key(seed))
    flat = traverse_util.flatten_dict(jax.tree_util.tree_map(lambda a: a, variables["batch_stats"]), sep="/")
    for path, s in stats.items():
        for k in ("mean", "var"):
            flat[f"{path}/{k}"] = s[k]
    return {**variables, "batch_stats": traverse_util.unflatten_dict(flat, sep="/")}


def logit_offset(logits: Any) -> float:
    """A power of two that keeps every logit positive (softmax, CE, margin and argmax are
    invariant to a common shift; torchattacks' CW masks classes with ``(1-onehot)*logits``,
    which is only correct for non-negative logits)."""
    span = 4.0 * float(np.max(np.abs(logits))) + 16.0
    return float(2.0 ** math.ceil(math.log2(span)))


def shifted_apply(detector: Any, offset: float, variables: Any, x: jax.Array) -> jax.Array:
    """``detector.apply(variables, x) + offset``."""
    return detector.apply(variables, x) + offset


def step_flops(logits_fn: Any, x1: jax.Array, y1: jax.Array) -> float:
    """XLA's FLOPs (cost analysis of the lowered program) of one attack step: the CE loss's
    forward pass and input gradient for the samples ``x1``."""

    def ce_grad(fn, xa, ya):
        return jax.grad(lambda z: -jnp.sum(jnp.take_along_axis(jax.nn.log_softmax(fn(z)), ya[:, None], axis=1)))(xa)

    cost = jax.jit(ce_grad).lower(logits_fn, x1, y1).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost["flops"])


def build_workload(config: BenchConfig, *, with_torch: bool) -> Workload:
    """The detector of ``config`` with random, calibrated weights, N random inputs labelled with
    their clean predictions (clean RA = 100 %), and (``with_torch``) its PyTorch twin.

    Raises:
      AssertionError: the twin's logits differ from rrjax's (rtol 1e-4, atol 1e-3·offset).
    """
    kw = model_config(config)
    detector = models.get_model(config.model, **kw)
    rng = np.random.default_rng(config.seed)
    shape = tuple(detector.input_shape)
    x = rng.uniform(size=(config.samples,) + shape).astype(np.float32)
    # The attacked inputs are part of the calibration batch: a channel that barely varies over a
    # batch without them (EfficientNet's 1x1-to-2x2 maps at 32-64 px) would blow their
    # activations up in eval mode (logits ~3e4 at 32 px) and make float32 parity meaningless.
    calib = np.concatenate([x, rng.uniform(size=(CALIBRATION_SAMPLES,) + shape).astype(np.float32)])
    variables = calibrate_batch_stats(detector, random_variables(detector, config.seed), calib, config.seed)
    judge = jax.jit(detector.apply)
    clean = np.asarray(judge(variables, x))
    offset = logit_offset(clean)
    logits_fn = Partial(functools.partial(shifted_apply, detector, offset), variables)
    y = clean.argmax(-1).astype(np.int32)
    torch_model = None
    if with_torch:
        torch_model = _torch_twin(config.model, kw, variables, offset)
        k = min(len(x), 4)
        ref = _torch_logits(torch_model, x[:k])
        np.testing.assert_allclose(ref, clean[:k] + offset, rtol=1e-4, atol=1e-3 * offset,
                                   err_msg=f"{config.model}: PyTorch twin and rrjax logits differ")
    flops = step_flops(logits_fn, jnp.asarray(x[:1]), jnp.asarray(y[:1]))
    return Workload(config.model, kw, detector, variables, logits_fn, torch_model, x, y, offset, flops, judge)


def _torch_reference(frame: str, image_size: int):
    from rrjax.models import torch_refs as R  # needs PyTorch

    refs = {
        "meso4": lambda: R.Meso4Ref(image_size),
        "meso_inception4": lambda: R.MesoInception4Ref(image_size),
        "xception": lambda: R.XceptionRef(),
        "efficientnet_b4": lambda: R.DFBEfficientNetB4Ref(),
    }
    if frame not in refs:
        raise ValueError(f"{frame!r} has no PyTorch reference network; the benchmark runs it rrjax-only")
    return refs[frame]()


def _torch_twin(model: str, kw: dict[str, Any], variables: Any, offset: float):
    """The reference network with rrjax's weights exported by ``to_torch``, taking pixels in
    [0, 1] like the rrjax detector (video: mean of frame probabilities) and shifted by ``offset``.

    PyTorch gets every core (``torch.set_num_threads``), as XLA's CPU client takes them all.
    """
    import torch

    from rrjax.models import torch_refs as R

    torch.set_num_threads(os.cpu_count() or 1)
    frame = _torch_reference(model.removesuffix("_video"), kw["image_size"])
    frame.load_state_dict(models.to_torch(model, variables, **kw), strict=True)
    net = R.PixelInput(frame)
    if model.endswith("_video"):
        net = R.MeanProbVideo(net)
    twin = _shifted_module(net, offset).eval()
    for p in twin.parameters():
        p.requires_grad_(False)  # attacks differentiate the input only (as jax.grad w.r.t. x)
    return twin


def _shifted_module(inner: Any, offset: float) -> Any:
    """``inner(x) + offset`` as a ``torch.nn.Module`` (defined here: torch is imported lazily)."""
    import torch

    class Shift(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner

        def forward(self, t):
            return self.inner(t) + offset

    return Shift()


def _torch_logits(torch_model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch_model(to_torch_layout(x)).numpy()


def to_torch_layout(x: np.ndarray):
    """NHWC (NTHWC) numpy -> NCHW (NTCHW) torch tensor."""
    import torch

    perm = (0, 3, 1, 2) if x.ndim == 4 else (0, 1, 4, 2, 3)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(perm)))


def from_torch_layout(t: Any) -> np.ndarray:
    """NCHW (NTCHW) torch tensor -> NHWC (NTHWC) numpy."""
    perm = (0, 2, 3, 1) if t.ndim == 4 else (0, 1, 3, 4, 2)
    return t.detach().numpy().transpose(perm)
