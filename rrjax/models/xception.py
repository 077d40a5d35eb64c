"""Xception (Chollet, CVPR 2017) as used by FaceForensics++ and DeepfakeBench.

Architecture of Cadene's ``pretrainedmodels`` Xception, which both FaceForensics++
(``classification/network/xception.py`` + ``TransferModel``) and DeepfakeBench
(``training/networks/xception.py``) copy: entry flow (two plain 3x3 convs, blocks 1-3),
middle flow (blocks 4-11, three separable convs each), exit flow (block 12, separable
convs 3 and 4), ReLU, global average pooling and a 2-logit ``last_linear``. Separable
convs are depthwise 3x3 then pointwise 1x1, without bias. Strided blocks end in a 3x3
max-pool (stride 2, padding 1) and have a 1x1 strided conv + BatchNorm on the skip path.

Fully convolutional up to the global pooling, so any ``image_size >= 32`` works (256 in
DeepfakeBench, 299 in FaceForensics++). Input normalised with ``mean = std = 0.5``, as
both projects do.

PyTorch layouts (``from_torch(..., layout=...)``):

* ``"deepfakebench"``: DeepfakeBench's ``Xception`` backbone (keys usually prefixed
  ``backbone.``). Its ``adjust_channel`` module (conv 2048->512 + BatchNorm) exists in every
  checkpoint but is used only in its ``adjust_channel`` mode, never for the plain detector;
  those keys are dropped explicitly.
* ``"faceforensics"``: FaceForensics++'s ``TransferModel`` (keys prefixed ``model.``).

Both accept the head as ``last_linear`` or ``last_linear.1`` (trained with dropout, an
``nn.Sequential(Dropout, Linear)``) and pointwise weights stored 4-D ``[O, I, 1, 1]`` or,
as in Cadene's ImageNet file that these projects start from, 2-D ``[O, I]``.

References:
  F. Chollet. Xception: Deep Learning with Depthwise Separable Convolutions. CVPR 2017.
  A. Rössler et al. FaceForensics++: Learning to Detect Manipulated Facial Images. ICCV 2019.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from rrjax.models._convert import TorchLayer
from rrjax.models._layers import batch_norm, config_tuple, global_avg_pool, image_size_arg, normalise, rate_arg
from rrjax.models.base import Detector

__all__ = ["Xception", "xception", "torch_layout", "LAYOUTS", "BLOCKS"]

LAYOUTS = ("deepfakebench", "faceforensics")
MIN_IMAGE_SIZE = 32

# (in, out, reps, stride, start_with_relu, grow_first) for blocks 1..12.
BLOCKS = (
    (64, 128, 2, 2, False, True),
    (128, 256, 2, 2, True, True),
    (256, 728, 2, 2, True, True),
    *((728, 728, 3, 1, True, True),) * 8,
    (728, 1024, 2, 2, True, False),
)


class SeparableConv(nn.Module):
    """Depthwise ``k x k`` (padding ``k // 2``) then pointwise 1x1, no bias."""

    features: int
    kernel: int = 3

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        c, p = x.shape[-1], self.kernel // 2
        x = nn.Conv(c, (self.kernel, self.kernel), padding=((p, p), (p, p)),
                    feature_group_count=c, use_bias=False, name="conv1")(x)
        return nn.Conv(self.features, (1, 1), use_bias=False, name="pointwise")(x)


def block_widths(in_f: int, out_f: int, reps: int, grow_first: bool) -> list[tuple[int, int]]:
    """``(in, out)`` channels of each separable conv of a block, in order."""
    if grow_first:
        return [(in_f, out_f)] + [(out_f, out_f)] * (reps - 1)
    return [(in_f, in_f)] * (reps - 1) + [(in_f, out_f)]


class XceptionBlock(nn.Module):
    """Residual block of ``reps`` x (ReLU, separable conv, BatchNorm) (+ max-pool if strided)."""

    in_f: int
    out_f: int
    reps: int
    stride: int
    start_with_relu: bool
    grow_first: bool

    @nn.compact
    def __call__(self, inp: jax.Array, train: bool) -> jax.Array:
        x = inp
        for j, (_, out) in enumerate(block_widths(self.in_f, self.out_f, self.reps, self.grow_first)):
            if j > 0 or self.start_with_relu:
                x = nn.relu(x)
            x = SeparableConv(out, name=f"sep{j}")(x)
            x = batch_norm(train, name=f"bn{j}")(x)
        if self.stride != 1:
            s = self.stride
            x = nn.max_pool(x, (3, 3), strides=(s, s), padding=((1, 1), (1, 1)))
        if self.in_f != self.out_f or self.stride != 1:
            skip = nn.Conv(self.out_f, (1, 1), strides=(self.stride, self.stride), use_bias=False, name="skip")(inp)
            skip = batch_norm(train, name="skipbn")(skip)
        else:
            skip = inp
        return x + skip


class Xception(nn.Module):
    """Xception with a 2-logit head, ``(x: f32[N,H,W,3] in [0,1], train) -> f32[N,2]``."""

    dropout_rate: float = 0.0

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = normalise(x)
        x = nn.Conv(32, (3, 3), strides=(2, 2), padding="VALID", use_bias=False, name="conv1")(x)
        x = nn.relu(batch_norm(train, name="bn1")(x))
        x = nn.Conv(64, (3, 3), padding="VALID", use_bias=False, name="conv2")(x)
        x = nn.relu(batch_norm(train, name="bn2")(x))
        for i, spec in enumerate(BLOCKS, start=1):
            x = XceptionBlock(*spec, name=f"block{i}")(x, train)
        x = nn.relu(batch_norm(train, name="bn3")(SeparableConv(1536, name="conv3")(x)))
        x = batch_norm(train, name="bn4")(SeparableConv(2048, name="conv4")(x))
        x = global_avg_pool(nn.relu(x))
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(2, name="last_linear")(x)


def xception(*, image_size: int = 256, dropout_rate: float = 0.0) -> Detector:
    """Xception detector (FaceForensics++ / DeepfakeBench).

    Args:
      image_size: square input side in pixels (>= 32; DeepfakeBench 256, FaceForensics++ 299).
      dropout_rate: dropout before ``last_linear`` in training (DeepfakeBench: none;
        FaceForensics++'s ``TransferModel`` optionally 0.5).
    """
    image_size = image_size_arg(image_size, minimum=MIN_IMAGE_SIZE)
    dropout_rate = rate_arg(dropout_rate, name="dropout_rate")
    return Detector(
        "xception", Xception(dropout_rate=dropout_rate), (image_size, image_size, 3),
        config_tuple(image_size=image_size, dropout_rate=dropout_rate),
    )


def torch_layout(name: str, layout: str) -> tuple[list[TorchLayer], tuple[str, ...]]:
    """PyTorch module names of the Cadene-style Xception (both layouts share them)."""
    L = TorchLayer.make
    layers = [L("conv1", "conv1", "conv"), L("bn1", "bn1", "bn"),
              L("conv2", "conv2", "conv"), L("bn2", "bn2", "bn")]
    for i, (in_f, out_f, reps, stride, start_relu, grow_first) in enumerate(BLOCKS, start=1):
        # nn.Sequential indices: [ReLU, SepConv, BN] per rep, the first ReLU dropped when
        # the block does not start with one.
        offset = 1 if start_relu else 0
        for j in range(reps):
            idx = 3 * j + offset
            layers.append(L(f"block{i}.rep.{idx}.conv1", f"block{i}/sep{j}/conv1", "conv"))
            layers.append(L(f"block{i}.rep.{idx}.pointwise", f"block{i}/sep{j}/pointwise", "conv"))
            layers.append(L(f"block{i}.rep.{idx + 1}", f"block{i}/bn{j}", "bn"))
        if in_f != out_f or stride != 1:
            layers += [L(f"block{i}.skip", f"block{i}/skip", "conv"), L(f"block{i}.skipbn", f"block{i}/skipbn", "bn")]
    for k in (3, 4):
        layers += [L(f"conv{k}.conv1", f"conv{k}/conv1", "conv"),
                   L(f"conv{k}.pointwise", f"conv{k}/pointwise", "conv"),
                   L(f"bn{k}", f"bn{k}", "bn")]
    layers.append(L(("last_linear", "last_linear.1", "fc"), "last_linear", "linear"))
    ignore = ("adjust_channel.",) if layout == "deepfakebench" else ()
    return layers, ignore
