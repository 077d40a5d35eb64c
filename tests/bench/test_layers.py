"""rrjax.bench.layers: the per-layer breakdown times the model's own layers, all of them, and
PyTorch computes the same function for each."""

import jax
import numpy as np
import pytest
import torch

from rrjax import models
from rrjax.bench import layers as L
from rrjax.bench.workload import calibrate_batch_stats, random_variables


def _detector(name, size=32, **kw):
    det = models.get_model(name, image_size=size, **kw)
    return det, random_variables(det, seed=0)


def test_record_calls_sees_every_module_use_of_meso4():
    det, v = _detector("meso4", batchnorm="shared")
    calls = L.record_calls(det, v)
    names = ["/".join(c.path) for c in calls]
    # DeepfakeBench's Meso4: bn1 after conv1 and conv2, bn2 after conv3 and conv4 (called twice each).
    assert names == ["conv1", "bn1", "conv2", "bn1", "conv3", "bn2", "conv4", "bn2", "head/fc1", "head/fc2"]
    assert calls[0].in_shape == (32, 32, 3) and calls[0].out_shape == (32, 32, 8) and calls[0].rows == 1


def test_xception_cases_count_the_published_36_convolutions():
    det, v = _detector("xception")
    cases = L.layer_cases("xception", det, v, with_torch=False)
    count = {k: sum(c.count for c in cases if c.kind == k) for k in L.KINDS}
    # Chollet (2017): 36 convolution layers = 2 plain (the stem) + 34 separable (depthwise + pointwise);
    # plus 4 strided 1x1 skip convolutions (pointwise here).
    assert count["stem conv"] + count["conv"] == 2 and count["depthwise"] == 34 and count["pointwise"] == 34 + 4
    assert count["pooling"] == 4 + 1  # the 3x3/2 pools ending blocks 1-3 and 12, the global average
    assert count["dense"] == 1 and count["SE"] == 0


def test_efficientnet_cases_have_one_se_unit_per_block_and_video_rows():
    det, v = _detector("efficientnet_b4_video", num_frames=3)
    cases = L.layer_cases("efficientnet_b4_video", det, v, with_torch=False)
    assert sum(c.count for c in cases if c.kind == "SE") == 32  # B4's 32 MBConv blocks
    assert sum(c.count for c in cases if c.kind == "depthwise") == 32
    assert {c.rows for c in cases} == {3}  # every frame layer sees T rows per clip


def _check_parity(model, kinds_once=False, **kw):
    det, v = _detector(model, **kw)
    x0 = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype(np.float32)
    v = calibrate_batch_stats(det, v, x0)
    cases = L.layer_cases(model, det, v, with_torch=True)
    seen = set()
    rng = np.random.default_rng(1)
    for case in cases:
        if kinds_once and case.kind in seen:
            continue
        seen.add(case.kind)
        x = rng.normal(size=(2,) + case.shape).astype(np.float32)
        want = np.asarray(jax.jit(case.apply)(case.params, x))
        xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy() if x.ndim == 4 else x)
        got = case.torch_fn(xt).detach().numpy()
        got = got.transpose(0, 2, 3, 1) if got.ndim == 4 else got
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{case.kind} {case.name}")
    return seen


@pytest.mark.parametrize("model, kw", [("meso4", dict(batchnorm="shared")), ("xception", {})])
def test_pytorch_computes_each_layer_the_same(model, kw):
    seen = _check_parity(model, **kw)
    assert {"stem conv", "BN", "activation", "pooling", "dense"} <= seen


def test_pytorch_computes_each_efficientnet_layer_type_the_same():
    # Includes the stride-2 depthwise convs with DeepfakeBench's frozen asymmetric padding.
    seen = _check_parity("efficientnet_b4", kinds_once=True)
    assert {"stem conv", "depthwise", "pointwise", "SE", "BN", "activation", "pooling", "dense"} <= seen
    det, v = _detector("efficientnet_b4")
    calls = L.record_calls(det, v)
    asym = [c for c in calls if hasattr(c.module, "feature_group_count") and c.module.feature_group_count > 1
            and len({tuple(p) for p in c.module.padding}) == 1 and tuple(c.module.padding[0])[0] != tuple(c.module.padding[0])[1]]
    case = next(c for c in L.layer_cases("efficientnet_b4", det, v, with_torch=True) if c.name == "/".join(asym[0].path))
    x = np.random.default_rng(2).normal(size=(2,) + case.shape).astype(np.float32)
    got = case.torch_fn(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(got, np.asarray(case.apply(case.params, x)), rtol=1e-4, atol=1e-4)


def test_summarise_by_kind_sums_instances():
    rows = [
        dict(kind="depthwise", count=2, flops=1e6, xla_ms={"XLA": 1.0}, torch_ms=0.5),
        dict(kind="depthwise", count=1, flops=2e6, xla_ms={"XLA": 3.0}, torch_ms=1.0),
        dict(kind="BN", count=4, flops=1e5, xla_ms={"XLA": 0.1}, torch_ms=None),
    ]
    by = {r["kind"]: r for r in L.summarise_by_kind(rows, ["XLA"], peak=100.0)}
    dw = by["depthwise"]
    assert dw["instances"] == 3 and dw["flops"] == 4e6 and dw["xla_ms"]["XLA"] == 5.0 and dw["torch_ms"] == 2.0
    assert dw["xla_gflops"]["XLA"] == pytest.approx(4e6 / 5e-3 / 1e9)  # 0.8 GFLOP/s
    assert dw["xla_pct_peak"]["XLA"] == pytest.approx(0.8) and dw["torch_gflops"] == pytest.approx(2.0)
    assert by["BN"]["torch_ms"] is None and by["all layers"]["instances"] == 7
    assert by["all layers"]["xla_ms"]["XLA"] == pytest.approx(5.4)


def test_i3d_layers_are_timed_xla_only():
    det = models.get_model("i3d", image_size=32, num_frames=4)
    v = random_variables(det, seed=0)
    cases = L.layer_cases("i3d", det, v, with_torch=False)
    kinds = {c.kind for c in cases}
    assert {"stem conv", "pointwise", "BN", "dense"} <= kinds and all(c.torch_fn is None for c in cases)
    assert sum(c.count for c in cases if c.kind == "BN") == sum(c.count for c in cases if c.kind != "BN"
                                                                 and c.kind != "dense")  # Unit3D: conv + BN
