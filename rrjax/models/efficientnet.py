"""EfficientNet-B4 (Tan & Le, ICML 2019) as DeepfakeBench builds it.

DeepfakeBench's ``efficientnetb4`` backbone is lukemelas' ``EfficientNet-PyTorch`` 0.7.1
(``EfficientNet.from_pretrained('efficientnet-b4')``) with two changes: the stem conv is
replaced by a plain ``nn.Conv2d(3, 48, 3, stride=2, bias=False)`` (no padding), and the
ImageNet ``_fc`` is replaced by ``last_layer = Linear(1792, 2)`` after global average
pooling (no dropout in its default config). This module reproduces that network:

* MBConv blocks: optional 1x1 expansion (+BN, swish), depthwise k x k (+BN, swish),
  squeeze-excitation (global mean -> 1x1 reduce to ``int(block_in * 0.25)`` -> swish ->
  1x1 expand -> sigmoid gate), 1x1 projection (+BN); identity skip when stride is 1 and
  channels match, with drop-connect (stochastic depth) in training at rate
  ``drop_connect_rate * block_index / 32``.
* B4 scaling (width 1.4, depth 1.8): stages of 2, 4, 4, 6, 6, 8, 2 blocks with
  24, 32, 56, 112, 160, 272, 448 channels; head 1x1 conv to 1792 (+BN, swish).
* BatchNorm: eps 1e-3, PyTorch momentum 0.01.
* **Padding.** lukemelas' ``from_pretrained`` builds ``Conv2dStaticSamePadding`` layers
  whose zero padding is TensorFlow's "same" padding *computed once for the 380-px
  construction size* and then frozen, whatever the real input size. For stride-1 convs that
  is ``k // 2`` on each side; for the four stride-2 depthwise convs it is (top/left,
  bottom/right) = (0, 1), (2, 2), (0, 1), (1, 2) for stages 2, 3, 4 and 6. DeepfakeBench
  feeds 256-px images through those frozen paddings, so this port uses exactly them (a
  "true" dynamic same padding would differ at 256 px and break parity).

Input normalised with ``mean = std = 0.5`` (DeepfakeBench's efficientnetb4 config; the
ImageNet initialisation used ImageNet statistics, but the released detector was fine-tuned
with 0.5/0.5). Any ``image_size >= 32`` works (global pooling).

References:
  M. Tan, Q. V. Le. EfficientNet: Rethinking Model Scaling for Convolutional Neural
  Networks. ICML 2019. https://arxiv.org/abs/1905.11946
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from rrjax.models._convert import TorchLayer
from rrjax.models._layers import batch_norm, config_tuple, global_avg_pool, image_size_arg, normalise, rate_arg
from rrjax.models.base import Detector

__all__ = ["EfficientNetB4", "efficientnet_b4", "torch_layout", "LAYOUTS", "block_specs"]

LAYOUTS = ("deepfakebench",)
MIN_IMAGE_SIZE = 32

# EfficientNet-B0 stages: (expand_ratio, kernel, stride, in, out, repeats); SE ratio 0.25.
_B0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)
_WIDTH, _DEPTH, _CONSTRUCTION_SIZE = 1.4, 1.8, 380
_BN = dict(torch_momentum=0.01, epsilon=1e-3)


def _round_filters(c: int) -> int:
    """Channel scaling of the reference implementation (multiples of 8, >= 90% of target)."""
    target = c * _WIDTH
    new = max(8, int(target + 4) // 8 * 8)
    return int(new + 8 if new < 0.9 * target else new)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding (before, after) for one spatial axis of length ``size``."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def block_specs() -> list[dict]:
    """The 32 MBConv blocks of B4: channels, kernel, stride, SE width, frozen padding."""
    specs = []
    size = math.ceil(_CONSTRUCTION_SIZE / 2)  # after the (original) stride-2 stem
    for expand, k, s, c_in, c_out, reps in _B0_STAGES:
        c_in, c_out = _round_filters(c_in), _round_filters(c_out)
        for r in range(int(math.ceil(_DEPTH * reps))):
            stride = s if r == 0 else 1
            block_in = c_in if r == 0 else c_out
            specs.append(dict(
                c_in=block_in, c_out=c_out, expand=expand, kernel=k, stride=stride,
                se=max(1, int(block_in * 0.25)), pad=_same_pad(size, k, stride),
            ))
            size = math.ceil(size / stride)
    return specs


def _swish(x: jax.Array) -> jax.Array:
    return x * jax.nn.sigmoid(x)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excitation (lukemelas ``MBConvBlock``)."""

    c_in: int
    c_out: int
    expand: int
    kernel: int
    stride: int
    se: int
    pad: tuple[int, int]
    drop_connect_rate: float

    @nn.compact
    def __call__(self, inputs: jax.Array, train: bool) -> jax.Array:
        x = inputs
        mid = self.c_in * self.expand
        if self.expand != 1:
            x = nn.Conv(mid, (1, 1), use_bias=False, name="expand_conv")(x)
            x = _swish(batch_norm(train, name="bn0", **_BN)(x))
        k, s = self.kernel, self.stride
        x = nn.Conv(mid, (k, k), strides=(s, s), padding=(self.pad, self.pad),
                    feature_group_count=mid, use_bias=False, name="depthwise_conv")(x)
        x = _swish(batch_norm(train, name="bn1", **_BN)(x))
        g = jnp.mean(x, axis=(1, 2), keepdims=True)
        g = nn.Conv(mid, (1, 1), name="se_expand")(_swish(nn.Conv(self.se, (1, 1), name="se_reduce")(g)))
        x = jax.nn.sigmoid(g) * x
        x = batch_norm(train, name="bn2", **_BN)(nn.Conv(self.c_out, (1, 1), use_bias=False, name="project_conv")(x))
        if self.stride == 1 and self.c_in == self.c_out:
            if train and self.drop_connect_rate > 0:
                keep = 1.0 - self.drop_connect_rate
                mask = jax.random.bernoulli(self.make_rng("dropout"), keep, (x.shape[0], 1, 1, 1))
                x = x / keep * mask
            x = x + inputs
        return x


class EfficientNetB4(nn.Module):
    """EfficientNet-B4 with a 2-logit head, ``(x: f32[N,H,W,3] in [0,1], train) -> f32[N,2]``."""

    drop_connect_rate: float = 0.2
    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = normalise(x)
        # DeepfakeBench's replacement stem: a plain conv, no padding.
        x = nn.Conv(_round_filters(32), (3, 3), strides=(2, 2), padding="VALID", use_bias=False, name="conv_stem")(x)
        x = _swish(batch_norm(train, name="bn0", **_BN)(x))
        specs = block_specs()
        for idx, spec in enumerate(specs):
            rate = self.drop_connect_rate * idx / len(specs)
            x = MBConv(**spec, drop_connect_rate=rate, name=f"blocks_{idx}")(x, train)
        x = nn.Conv(_round_filters(1280), (1, 1), use_bias=False, name="conv_head")(x)
        x = _swish(batch_norm(train, name="bn1", **_BN)(x))
        x = global_avg_pool(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(2, name="last_layer")(x)


def efficientnet_b4(*, image_size: int = 256, drop_connect_rate: float = 0.2, dropout_rate: float = 0.0) -> Detector:
    """EfficientNet-B4 detector (DeepfakeBench).

    Args:
      image_size: square input side in pixels (>= 32; DeepfakeBench 256).
      drop_connect_rate: maximal stochastic-depth rate (scaled linearly over the blocks).
      dropout_rate: dropout before ``last_layer`` in training (DeepfakeBench: none).
    """
    image_size = image_size_arg(image_size, minimum=MIN_IMAGE_SIZE)
    drop_connect_rate = rate_arg(drop_connect_rate, name="drop_connect_rate")
    dropout_rate = rate_arg(dropout_rate, name="dropout_rate")
    return Detector(
        "efficientnet_b4",
        EfficientNetB4(drop_connect_rate=drop_connect_rate, dropout_rate=dropout_rate),
        (image_size, image_size, 3),
        config_tuple(image_size=image_size, drop_connect_rate=drop_connect_rate, dropout_rate=dropout_rate),
    )


def torch_layout(name: str, layout: str) -> tuple[list[TorchLayer], tuple[str, ...]]:
    """PyTorch names of DeepfakeBench's ``EfficientNetB4`` backbone (``efficientnet._blocks.N...``)."""
    L = TorchLayer.make
    e = "efficientnet."
    layers = [L(e + "_conv_stem", "conv_stem", "conv"), L(e + "_bn0", "bn0", "bn")]
    for idx, spec in enumerate(block_specs()):
        t, f = f"{e}_blocks.{idx}.", f"blocks_{idx}/"
        if spec["expand"] != 1:
            layers += [L(t + "_expand_conv", f + "expand_conv", "conv"), L(t + "_bn0", f + "bn0", "bn")]
        layers += [
            L(t + "_depthwise_conv", f + "depthwise_conv", "conv"), L(t + "_bn1", f + "bn1", "bn"),
            L(t + "_se_reduce", f + "se_reduce", "conv"), L(t + "_se_expand", f + "se_expand", "conv"),
            L(t + "_project_conv", f + "project_conv", "conv"), L(t + "_bn2", f + "bn2", "bn"),
        ]
    layers += [L(e + "_conv_head", "conv_head", "conv"), L(e + "_bn1", "bn1", "bn"),
               L(("last_layer", "last_layer.1"), "last_layer", "linear")]
    return layers, ()
