"""EfficientNet-B4 (DeepfakeBench): parity incl. the frozen "same" padding, counts, shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import models
from rrjax.models import efficientnet
from tests.models import torch_refs as R
from tests.models.helpers import assert_parity, assert_useful_grad, compile_fast, images, input_grad

SIZE = 64  # stem output 31 (odd): frozen-380 and true "same" padding differ from stage 2 on


@pytest.fixture(scope="module")
def imported():
    x = images((4, SIZE, SIZE, 3), seed=22)
    ref = R.randomize_(R.DFBEfficientNetB4Ref(), seed=21, calib=x)
    sd = R.Wrap("backbone", ref).state_dict()
    det = models.get_model("efficientnet_b4", image_size=SIZE)
    return ref, det, models.from_torch("efficientnet_b4", sd, image_size=SIZE), x


def test_parameter_count_matches_the_published_one():
    # lukemelas / timm EfficientNet-B4 with its 1000-way ImageNet head: 19,341,616 parameters.
    assert R.n_params(R.EffNetB4Ref(imagenet_fc=True)) == 19_341_616
    det = models.get_model("efficientnet_b4")
    ours = det.param_count(jax.eval_shape(det.init, jax.random.key(0)))
    assert ours == R.n_params(R.DFBEfficientNetB4Ref()) == 19_341_616 - 1792 * 998 - 998


def test_frozen_padding_of_strided_convs():
    """Worked by hand from TF "same" on the 380-px chain 190 -> 95 -> 48 -> 24 -> 12:
    k3 on 190 pads 1 -> (0,1); k5 on 95 pads 4 -> (2,2); k3 on 48 -> (0,1); k5 on 24 pads 3 -> (1,2)."""
    specs = efficientnet.block_specs()
    assert len(specs) == 32
    strided = [(s["kernel"], s["pad"]) for s in specs if s["stride"] == 2]
    assert strided == [(3, (0, 1)), (5, (2, 2)), (3, (0, 1)), (5, (1, 2))]
    assert {s["pad"] for s in specs if s["stride"] == 1 and s["kernel"] == 5} == {(2, 2)}


def test_parity_deepfakebench_layout(imported):
    ref, det, variables, x = imported
    xj = jnp.asarray(x)
    ours = np.asarray(compile_fast(det.apply, variables, xj)(variables, xj))
    expected = R.run(ref, x)
    assert_parity(ours, expected)
    # The test can tell the paddings apart: true per-input "same" padding changes the logits.
    control = R.DFBEfficientNetB4Ref(padding="dynamic")
    control.load_state_dict(ref.state_dict())
    assert np.abs(R.run(control, x) - expected).max() > 1e-2


def test_input_gradient_is_finite_and_nonzero(imported):
    _, det, variables, _ = imported
    assert_useful_grad(input_grad(det, variables, images((2, SIZE, SIZE, 3), seed=23)))


def test_drop_connect_is_random_in_training_only(imported):
    _, det, variables, _ = imported
    x = jnp.asarray(images((4, SIZE, SIZE, 3), seed=24))
    train = compile_fast(lambda v, x, k: det.apply_train(v, x, key=k), variables, x, jax.random.key(0))
    a, upd = train(variables, x, jax.random.key(0))
    b, _ = train(variables, x, jax.random.key(1))
    assert not np.allclose(a, b)  # 0.2 * idx / 32 drop-connect on the residual blocks
    assert set(upd) == {"batch_stats"}
    moved = jax.tree_util.tree_map(lambda u, v: bool(jnp.any(u != v)), upd["batch_stats"], variables["batch_stats"])
    assert all(jax.tree_util.tree_leaves(moved))


def test_full_size_shape():
    det = models.get_model("efficientnet_b4")
    assert det.input_shape == (256, 256, 3)
    variables = jax.eval_shape(det.init, jax.random.key(0))
    out = jax.eval_shape(det.apply, variables, jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32))
    assert out.shape == (2, 2)


def test_missing_block_is_reported():
    sd = R.DFBEfficientNetB4Ref().state_dict()
    sd = {k: v for k, v in sd.items() if not k.startswith("efficientnet._blocks.31.")}
    with pytest.raises(ValueError, match=r"missing keys \(\d+\): \['efficientnet._blocks.31._expand_conv.weight'"):
        models.from_torch("efficientnet_b4", sd)
