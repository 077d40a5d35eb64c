"""rrjax.bench.workload: random calibrated weights, the logit offset, the PyTorch twin."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from rrjax.bench import workload as W
from rrjax.bench.config import BenchConfig
from rrjax.models.base import Detector


def test_logit_offset():
    off = W.logit_offset(np.array([[-3.0, 2.5], [1.0, 0.0]]))
    assert off == 32.0  # smallest power of two >= 4 * 3 + 16
    assert off - 3.0 > 0


class _TwoBN(nn.Module):
    """BN on the input, a fixed scaling, BN again: both statistics have closed forms."""

    @nn.compact
    def __call__(self, x, train=False):
        x = nn.BatchNorm(use_running_average=not train, epsilon=1e-5, name="bn_a")(x)
        x = nn.BatchNorm(use_running_average=not train, epsilon=1e-5, name="bn_b")(3.0 * x + 1.0)
        return jnp.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], -1)


def test_calibrated_statistics_are_each_batchnorm_inputs_statistics():
    det = Detector("two_bn", _TwoBN(), (4, 4, 2))
    variables = W.random_variables(det, seed=0)
    np.testing.assert_array_equal(variables["batch_stats"]["bn_a"]["var"], 1.0)
    x = np.random.default_rng(1).normal(2.0, 3.0, size=(8, 4, 4, 2)).astype(np.float32)
    cal = W.calibrate_batch_stats(det, variables, x)["batch_stats"]
    np.testing.assert_allclose(cal["bn_a"]["mean"], x.mean((0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(cal["bn_a"]["var"], x.var((0, 1, 2)), rtol=1e-4)
    # bn_b sees 3 * (train-mode normalised x) + 1: mean 1, variance 9 var / (var + eps).
    v = x.var((0, 1, 2))
    np.testing.assert_allclose(cal["bn_b"]["mean"], [1.0, 1.0], atol=1e-5)
    np.testing.assert_allclose(cal["bn_b"]["var"], 9 * v / (v + 1e-5), rtol=1e-4)


class _Dense(nn.Module):
    @nn.compact
    def __call__(self, x, train=False):
        return nn.Dense(3, name="d")(x)


def test_random_variables_have_he_scaled_kernels():
    det = Detector("dense", _Dense(), (400,))
    k = np.asarray(W.random_variables(det, seed=2)["params"]["d"]["kernel"])
    assert k.shape == (400, 3) and abs(k.std() - np.sqrt(2 / 400)) < 0.01


@pytest.mark.parametrize("model", ["meso4", "meso4_video"])
def test_workload_twin_has_rrjax_weights_and_labels_are_clean_predictions(model):
    cfg = BenchConfig(model=model, image_size=32, num_frames=2, n=3, scale_e_n=3, scale_n=(5,))
    w = W.build_workload(cfg, with_torch=True)  # asserts logit parity itself
    assert w.x.shape == (5,) + tuple(w.detector.input_shape) and w.x.min() >= 0 and w.x.max() <= 1
    np.testing.assert_array_equal(w.y, np.asarray(w.detector.apply(w.variables, w.x)).argmax(-1))
    with torch.no_grad():
        ref = w.torch_model(W.to_torch_layout(w.x)).numpy()
    np.testing.assert_allclose(ref - w.offset, np.asarray(w.detector.apply(w.variables, w.x)), atol=2e-4 * w.offset)
    assert all(not p.requires_grad for p in w.torch_model.parameters())
    np.testing.assert_array_equal(W.from_torch_layout(W.to_torch_layout(w.x)), w.x)
    assert w.flops_per_step > 0


def test_i3d_builds_rrjax_only_without_a_twin():
    cfg = BenchConfig(model="i3d", image_size=32, num_frames=2, n=2, scale_e_n=2, scale_n=(2,))
    w = W.build_workload(cfg, with_torch=False)
    assert w.torch_model is None and w.x.shape == (2, 2, 32, 32, 3)
    logits = np.asarray(jax.jit(w.logits_fn)(w.x))
    assert np.all(logits > 0)  # shifted by the offset


@pytest.mark.slow
def test_efficientnet_twin_at_32px_keeps_logits_of_order_one():
    """Calibrating without the attacked inputs blew EfficientNet's logits up to ~3e4 at 32 px and
    failed the start-up parity check (BUILD_NOTES.md, "Random weights, calibrated")."""
    cfg = BenchConfig(model="efficientnet_b4", image_size=32, n=2, scale_e_n=2, scale_n=(2,))
    w = W.build_workload(cfg, with_torch=True)  # asserts logit parity itself
    clean = np.asarray(w.judge(w.variables, w.x))
    assert np.abs(clean).max() < 100 and w.offset <= 512
