"""MesoNet: Meso4 and MesoInception4 (Afchar et al., WIFS 2018), DeepfakeBench flavour.

The modules reproduce DeepfakeBench's PyTorch definitions (``training/networks/mesonet.py``,
itself from HongguLiu/MesoNet-Pytorch) so that its released checkpoints import exactly:

* convolutions have no bias; ReLU comes *before* BatchNorm (as in the paper's Keras code);
* BatchNorm placement, ``batchnorm=``:

  - ``"separate"`` (default): one BatchNorm per plain convolution, as in the paper's Keras
    code (Meso4 ``bn1..bn4``; MesoInception4 ``bn1, bn2``).
  - ``"shared"``: DeepfakeBench's layout, where Meso4 applies ``bn1`` after conv1 and conv2
    and ``bn2`` after conv3 and conv4, and MesoInception4 applies ``bn1`` after both of its
    plain convs. The Flax module calls one BatchNorm instance twice (training updates it twice
    per step, as PyTorch does). Its eval-mode running statistics mix two layers' activations,
    which after short training can collapse the eval-mode detector to one class (seen on the
    synthetic data: 0.50 eval vs 0.86 train-mode accuracy); hence the default.

  DeepfakeBench checkpoints import into either: for ``"separate"`` each shared module's
  parameters and statistics are copied to both of its uses, which is exactly the same
  function in eval mode;
* MesoInception4's inception branches have no activation (the paper's Keras code has ReLU);
* the head is two logits (the paper has one sigmoid unit);
* features are flattened in PyTorch's channel-major order, so ``fc1`` imports without a
  permutation. ``fc1``'s input size is ``16 * (image_size // 32) ** 2`` (1024 at 256 px).

Input: ``f32[N, image_size, image_size, 3]`` in [0, 1], normalised inside with
``mean = std = 0.5`` (DeepfakeBench's configuration).

References:
  D. Afchar, V. Nozick, J. Yamagishi, I. Echizen. MesoNet: a Compact Facial Video Forgery
  Detection Network. WIFS 2018. https://arxiv.org/abs/1809.00888
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from rrjax.models._convert import TorchLayer
from rrjax._validation import check_choice
from rrjax.models._layers import batch_norm, config_tuple, image_size_arg, max_pool_2d, normalise, rate_arg
from rrjax.models.base import Detector

__all__ = ["Meso4", "MesoInception4", "meso4", "meso_inception4", "torch_layout", "LAYOUTS", "BATCHNORM_MODES"]

LAYOUTS = ("deepfakebench",)
MIN_IMAGE_SIZE = 32  # four poolings shrink by 2 * 2 * 2 * 4


def _conv(features: int, kernel: int, name: str, dilation: int = 1) -> nn.Conv:
    pad = dilation * (kernel - 1) // 2
    return nn.Conv(
        features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
        kernel_dilation=(dilation, dilation), use_bias=False, name=name,
    )


def _pool(x: jax.Array, k: int) -> jax.Array:
    return max_pool_2d(x, k)


class _MesoHead(nn.Module):
    """Dropout -> fc1 (16) -> LeakyReLU(0.1) -> dropout -> fc2 (2 logits)."""

    dropout_rate: float

    @nn.compact
    def __call__(self, feats: jax.Array, train: bool) -> jax.Array:
        # Channel-major flatten, as x.view(N, -1) on an NCHW tensor.
        x = jnp.transpose(feats, (0, 3, 1, 2)).reshape(feats.shape[0], -1)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        x = nn.leaky_relu(nn.Dense(16, name="fc1")(x), 0.1)
        x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
        return nn.Dense(2, name="fc2")(x)


def _norms(train: bool, shared: bool, uses: tuple[int, ...]) -> list:
    """BatchNorms for consecutive convs; ``uses`` groups convs that share one when ``shared``."""
    if not shared:
        return [batch_norm(train, name=f"bn{i + 1}") for i in range(sum(uses))]
    out = []
    for i, k in enumerate(uses):
        bn = batch_norm(train, name=f"bn{i + 1}")
        out += [bn] * k
    return out


class Meso4(nn.Module):
    """Meso4, ``(x: f32[N,H,W,3] in [0,1], train) -> logits f32[N,2]``."""

    dropout_rate: float = 0.5
    shared_batchnorm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = normalise(x)
        bn = _norms(train, self.shared_batchnorm, (2, 2))
        x = _pool(bn[0](nn.relu(_conv(8, 3, "conv1")(x))), 2)
        x = _pool(bn[1](nn.relu(_conv(8, 5, "conv2")(x))), 2)
        x = _pool(bn[2](nn.relu(_conv(16, 5, "conv3")(x))), 2)
        x = _pool(bn[3](nn.relu(_conv(16, 5, "conv4")(x))), 4)
        return _MesoHead(self.dropout_rate, name="head")(x, train)


class _InceptionLayer(nn.Module):
    """Four parallel branches (1x1; 1x1-3x3; 1x1-3x3 dilation 2; 1x1-3x3 dilation 3),
    concatenated, batch-normalised and max-pooled by 2. No activation (DeepfakeBench)."""

    widths: tuple[int, int, int, int]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        a, b, c, d = self.widths
        x1 = _conv(a, 1, "conv1")(x)
        x2 = _conv(b, 3, "conv2_2")(_conv(b, 1, "conv2_1")(x))
        x3 = _conv(c, 3, "conv3_2", dilation=2)(_conv(c, 1, "conv3_1")(x))
        x4 = _conv(d, 3, "conv4_2", dilation=3)(_conv(d, 1, "conv4_1")(x))
        y = jnp.concatenate([x1, x2, x3, x4], axis=-1)
        return _pool(batch_norm(train, name="bn")(y), 2)


class MesoInception4(nn.Module):
    """MesoInception4, ``(x: f32[N,H,W,3] in [0,1], train) -> logits f32[N,2]``."""

    dropout_rate: float = 0.5
    shared_batchnorm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        x = normalise(x)
        x = _InceptionLayer((1, 4, 4, 2), name="inception1")(x, train)
        x = _InceptionLayer((2, 4, 4, 2), name="inception2")(x, train)
        bn = _norms(train, self.shared_batchnorm, (2,))
        x = _pool(bn[0](nn.relu(_conv(16, 5, "conv1")(x))), 2)
        x = _pool(bn[1](nn.relu(_conv(16, 5, "conv2")(x))), 4)
        return _MesoHead(self.dropout_rate, name="head")(x, train)


BATCHNORM_MODES = ("separate", "shared")


def _batchnorm_arg(batchnorm: str) -> bool:
    return check_choice(batchnorm, BATCHNORM_MODES, name="batchnorm") == "shared"


def meso4(*, image_size: int = 256, dropout_rate: float = 0.5, batchnorm: str = "separate") -> Detector:
    """Meso4 detector, about 28k parameters at 256 px.

    Args:
      image_size: square input side in pixels (>= 32; 256 in the paper and DeepfakeBench).
      dropout_rate: dropout before and after ``fc1`` in training.
      batchnorm: ``"separate"`` (one BatchNorm per conv, the paper) or ``"shared"``
        (DeepfakeBench's two shared BatchNorms); see the module docstring.
    """
    image_size = image_size_arg(image_size, minimum=MIN_IMAGE_SIZE)
    dropout_rate = rate_arg(dropout_rate, name="dropout_rate")
    shared = _batchnorm_arg(batchnorm)
    return Detector(
        "meso4", Meso4(dropout_rate=dropout_rate, shared_batchnorm=shared), (image_size, image_size, 3),
        config_tuple(image_size=image_size, dropout_rate=dropout_rate, batchnorm=batchnorm),
    )


def meso_inception4(*, image_size: int = 256, dropout_rate: float = 0.5, batchnorm: str = "separate") -> Detector:
    """MesoInception4 detector.

    Args:
      image_size: square input side in pixels (>= 32; 256 in the paper and DeepfakeBench).
      dropout_rate: dropout before and after ``fc1`` in training.
      batchnorm: ``"separate"`` (default) or ``"shared"`` (DeepfakeBench), for the two plain
        convolutions; see the module docstring.
    """
    image_size = image_size_arg(image_size, minimum=MIN_IMAGE_SIZE)
    dropout_rate = rate_arg(dropout_rate, name="dropout_rate")
    shared = _batchnorm_arg(batchnorm)
    return Detector(
        "meso_inception4", MesoInception4(dropout_rate=dropout_rate, shared_batchnorm=shared),
        (image_size, image_size, 3),
        config_tuple(image_size=image_size, dropout_rate=dropout_rate, batchnorm=batchnorm),
    )


def torch_layout(name: str, layout: str, *, shared: bool = True) -> tuple[list[TorchLayer], tuple[str, ...]]:
    """PyTorch module names of DeepfakeBench's ``Meso4`` / ``MesoInception4`` backbones.

    With ``shared=False`` (a separate-BatchNorm model) each shared PyTorch BatchNorm feeds
    the Flax BatchNorms of both convolutions that use it.
    """
    L = TorchLayer.make
    head = [L("fc1", "head/fc1", "linear"), L("fc2", "head/fc2", "linear")]

    def norms(groups: int) -> list[TorchLayer]:
        if shared:
            return [L(f"bn{i + 1}", f"bn{i + 1}", "bn") for i in range(groups)]
        return [L(f"bn{i // 2 + 1}", f"bn{i + 1}", "bn") for i in range(2 * groups)]

    if name == "meso4":
        layers = [L(f"conv{i}", f"conv{i}", "conv") for i in range(1, 5)]
        return layers + norms(2) + head, ()
    layers = []
    for i in (1, 2):
        for branch in ("conv1", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv4_1", "conv4_2"):
            # DeepfakeBench spells the module "Incption".
            layers.append(L(f"Incption{i}_{branch}", f"inception{i}/{branch}", "conv"))
        layers.append(L(f"Incption{i}_bn", f"inception{i}/bn", "bn"))
    layers += [L("conv1", "conv1", "conv"), L("conv2", "conv2", "conv")] + norms(1)
    return layers + head, ()
