"""Xception: both PyTorch layouts (DeepfakeBench, FaceForensics++), counts, shapes, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import models
from tests.models import torch_refs as R
from tests.models.helpers import assert_parity, assert_useful_grad, compile_fast, images, input_grad

SIZE = 64  # fully convolutional + global pooling: parity at a small size exercises every layer


@pytest.fixture(scope="module")
def apply_64():
    det = models.get_model("xception", image_size=SIZE)
    abstract = jax.eval_shape(det.init, jax.random.key(0))
    return det, compile_fast(det.apply, abstract, jax.ShapeDtypeStruct((4, SIZE, SIZE, 3), jnp.float32))


def test_parameter_count_matches_the_published_one():
    # Chollet (2017) / Keras: 22,855,952 trainable parameters with the 1000-way ImageNet head.
    assert R.n_params(R.XceptionRef(num_classes=1000)) == 22_855_952
    det = models.get_model("xception")
    ours = det.param_count(jax.eval_shape(det.init, jax.random.key(0)))
    assert ours == R.n_params(R.XceptionRef(num_classes=2)) == 22_855_952 - 2048 * 998 - 998


def test_parity_deepfakebench_layout(apply_64):
    det, apply = apply_64
    x = images((4, SIZE, SIZE, 3), seed=12)
    ref = R.randomize_(R.XceptionRef(adjust_channel=True), seed=11, calib=images((8, SIZE, SIZE, 3), 10), jitter=0.2)
    sd = R.Wrap("backbone", ref).state_dict()
    assert any(k.startswith("backbone.adjust_channel.") for k in sd)
    variables = models.from_torch("xception", sd, image_size=SIZE)  # layout defaults to deepfakebench
    assert_parity(np.asarray(apply(variables, jnp.asarray(x))), R.run(ref, x))
    assert_useful_grad(input_grad(det, variables, x[:2]))


def test_parity_faceforensics_layout_with_cadene_quirks(apply_64):
    """TransferModel keys (``model.``), a dropout head (``last_linear.1``) and pointwise
    weights stored 2-D as in Cadene's ImageNet file, all behind DataParallel's ``module.``."""
    _, apply = apply_64
    ref = R.randomize_(R.XceptionRef(head_dropout=True), seed=13, calib=images((8, SIZE, SIZE, 3), 10), jitter=0.2)
    sd = R.Wrap("module", R.Wrap("model", ref)).state_dict()
    sd = {k: (v[:, :, 0, 0] if "pointwise" in k else v) for k, v in sd.items()}
    assert "module.model.last_linear.1.weight" in sd and sd["module.model.block4.rep.1.pointwise.weight"].ndim == 2
    variables = models.from_torch("xception", sd, layout="faceforensics", image_size=SIZE)
    x = images((4, SIZE, SIZE, 3), seed=14)
    assert_parity(np.asarray(apply(variables, jnp.asarray(x))), R.run(ref, x))


def test_adjust_channel_is_only_ignored_in_the_deepfakebench_layout():
    sd = R.randomize_(R.XceptionRef(adjust_channel=True), seed=15).state_dict()
    with pytest.raises(ValueError, match=r"unexpected keys \(6\): \['adjust_channel.0.bias'"):
        models.from_torch("xception", sd, layout="faceforensics")


@pytest.mark.parametrize("size, spatial", [(299, 10), (256, 8)])
def test_full_size_shapes(size, spatial):
    det = models.get_model("xception", image_size=size)
    variables = jax.eval_shape(det.init, jax.random.key(0))
    x = jax.ShapeDtypeStruct((3, size, size, 3), jnp.float32)
    assert jax.eval_shape(det.apply, variables, x).shape == (3, 2)
    # Entry flow: 3x3/2 valid, 3x3 valid, then four stride-2 blocks (Cadene's layout).
    s = (size - 3) // 2 + 1 - 2
    for _ in range(4):
        s = (s - 1) // 2 + 1
    assert s == spatial


def test_shape_mismatch_names_layer_and_shapes():
    sd = R.randomize_(R.XceptionRef(num_classes=1000), seed=16).state_dict()
    with pytest.raises(ValueError, match=r"last_linear.weight -> last_linear: checkpoint shape \(1000, 2048\), "
                                         r"model expects \(2, 2048\)"):
        models.from_torch("xception", sd)


def test_unknown_layout_lists_valid_ones():
    with pytest.raises(ValueError, match="'deepfakebench', 'faceforensics'"):
        models.from_torch("xception", {}, layout="timm")
