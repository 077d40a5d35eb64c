"""I3D: inflated Inception-v1 3D ConvNet (Carreira & Zisserman, CVPR 2017) as a clip detector.

The layer sequence of the Kinetics I3D (deepmind/kinetics-i3d, piergiaj/pytorch-i3d):
Conv3d 7x7x7 /2 -> MaxPool 1x3x3 /(1,2,2) -> Conv3d 1x1x1 -> Conv3d 3x3x3 ->
MaxPool 1x3x3 /(1,2,2) -> Mixed_3b, 3c -> MaxPool 3x3x3 /2 -> Mixed_4b..4f ->
MaxPool 2x2x2 /2 -> Mixed_5b, 5c, where every conv is Conv3d (no bias) + BatchNorm
(eps 1e-3) + ReLU with TensorFlow "same" padding, and a Mixed block concatenates four
branches: 1x1x1 | 1x1x1 -> 3x3x3 | 1x1x1 -> 3x3x3 | 3x3x3 max-pool -> 1x1x1.

Deviations, for a detector that has to run on small clips: the head is global average
pooling over (T, H, W), dropout and a 2-logit dense layer (the original averages 2x7x7
windows, which needs 224-px input, then averages per-time logits), and all widths scale by
``width`` (``max(1, round(c * width))``): ``width=1`` is the full network (the
``"i3d_full"`` registry entry, 64 x 224 x 224 clips), the default ``width=0.25`` is a
compact variant that trains on a CPU. Input ``f32[N, T, H, W, 3]`` in [0, 1], normalised
to [-1, 1] (``mean = std = 0.5``), as I3D was trained.

References:
  J. Carreira, A. Zisserman. Quo Vadis, Action Recognition? A New Model and the Kinetics
  Dataset. CVPR 2017. https://arxiv.org/abs/1705.07750
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rrjax._validation import check_int, check_number
from rrjax.models._layers import batch_norm, config_tuple, global_avg_pool, image_size_arg, normalise, rate_arg
from rrjax.models.base import Detector

__all__ = ["I3D", "i3d", "i3d_full", "MIXED"]

# Mixed block widths: (b0 1x1, b1 1x1, b1 3x3, b2 1x1, b2 3x3, b3 pool-proj 1x1).
MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}
MIN_IMAGE_SIZE = 32
_BN = dict(torch_momentum=0.01, epsilon=1e-3)


def scaled(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class Unit3D(nn.Module):
    """Conv3d (no bias, "same" padding) + BatchNorm + ReLU."""

    features: int
    kernel: tuple[int, int, int] = (1, 1, 1)
    stride: tuple[int, int, int] = (1, 1, 1)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        x = nn.Conv(self.features, self.kernel, strides=self.stride, padding="SAME", use_bias=False, name="conv3d")(x)
        return nn.relu(batch_norm(train, name="bn", **_BN)(x))


class Mixed(nn.Module):
    """Inception block with inflated 3x3x3 convolutions."""

    widths: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        w = self.widths
        b0 = Unit3D(w[0], name="b0")(x, train)
        b1 = Unit3D(w[2], (3, 3, 3), name="b1b")(Unit3D(w[1], name="b1a")(x, train), train)
        b2 = Unit3D(w[4], (3, 3, 3), name="b2b")(Unit3D(w[3], name="b2a")(x, train), train)
        b3 = Unit3D(w[5], name="b3b")(nn.max_pool(x, (3, 3, 3), strides=(1, 1, 1), padding="SAME"), train)
        return jnp.concatenate([b0, b1, b2, b3], axis=-1)


class I3D(nn.Module):
    """I3D clip detector, ``(x: f32[N,T,H,W,3] in [0,1], train) -> logits f32[N,2]``."""

    width: float = 0.25
    dropout_rate: float = 0.5

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        s = lambda c: scaled(c, self.width)  # noqa: E731
        pool = lambda y, k, st: nn.max_pool(y, k, strides=st, padding="SAME")  # noqa: E731
        x = normalise(x)
        x = Unit3D(s(64), (7, 7, 7), (2, 2, 2), name="Conv3d_1a_7x7")(x, train)
        x = pool(x, (1, 3, 3), (1, 2, 2))
        x = Unit3D(s(64), name="Conv3d_2b_1x1")(x, train)
        x = Unit3D(s(192), (3, 3, 3), name="Conv3d_2c_3x3")(x, train)
        x = pool(x, (1, 3, 3), (1, 2, 2))
        for name, widths in MIXED.items():
            if name == "Mixed_4b":
                x = pool(x, (3, 3, 3), (2, 2, 2))
            elif name == "Mixed_5b":
                x = pool(x, (2, 2, 2), (2, 2, 2))
            x = Mixed(tuple(s(c) for c in widths), name=name)(x, train)
        x = global_avg_pool(x)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(2, name="logits")(x)


def _build(name: str, num_frames: int, image_size: int, width: float, dropout_rate: float) -> Detector:
    num_frames = check_int(num_frames, name="num_frames", minimum=1)
    image_size = image_size_arg(image_size, minimum=MIN_IMAGE_SIZE)
    width = check_number(width, name="width", lower=0.0, upper=4.0, strict=True)
    dropout_rate = rate_arg(dropout_rate, name="dropout_rate")
    return Detector(
        name, I3D(width=width, dropout_rate=dropout_rate), (num_frames, image_size, image_size, 3),
        config_tuple(num_frames=num_frames, image_size=image_size, width=width, dropout_rate=dropout_rate),
    )


def i3d(*, num_frames: int = 16, image_size: int = 112, width: float = 0.25, dropout_rate: float = 0.5) -> Detector:
    """I3D clip detector; compact by default (width 0.25, 16 x 112 x 112 clips).

    Args:
      num_frames: frames per clip ``T`` (>= 1).
      image_size: square frame side in pixels (>= 32).
      width: channel multiplier of every layer, in (0, 4] (1.0 = the published I3D).
      dropout_rate: dropout before the logits layer in training.
    """
    return _build("i3d", num_frames, image_size, width, dropout_rate)


def i3d_full(
    *, num_frames: int = 64, image_size: int = 224, width: float = 1.0, dropout_rate: float = 0.5
) -> Detector:
    """Full-size I3D (published widths, 64 x 224 x 224 clips). Arguments as :func:`i3d`."""
    return _build("i3d_full", num_frames, image_size, width, dropout_rate)
