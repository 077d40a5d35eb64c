"""rrjax.bench.config: the run record, its validation, the smoke-run sizes and the ε grid."""

import dataclasses

import numpy as np
import pytest

from rrjax.bench import config as K


def test_eps_grid():
    np.testing.assert_allclose(K.eps_grid(0.4, 4), [0.1, 0.2, 0.3, 0.4])
    assert K.eps_grid(1.0, 1) == [1.0]


def test_quick_config_keeps_explicit_fields():
    base = K.BenchConfig(model="xception", image_size=32, n=64)
    q = K.quick_config(base, explicit=["image_size"])
    assert q.quick and q.image_size == 32 and q.n == K.QUICK["n"] and q.model == "xception"
    assert q.scale_e == K.QUICK["scale_e"] and q.repeats == K.QUICK["repeats"]
    assert not base.quick  # frozen: a new record


def test_every_zoo_detector_is_benchmarked_and_i3d_runs_rrjax_only():
    for frame in ("meso4", "meso_inception4", "xception", "efficientnet_b4"):
        assert frame in K.BENCH_MODELS and f"{frame}_video" in K.BENCH_MODELS
        c = K.BenchConfig(model=frame)
        assert c.has_torch_twin and c.contenders == K.CONTENDERS and c.reference == "torchattacks"
    i3d = K.BenchConfig(model="i3d")
    assert not i3d.has_torch_twin and "torchattacks" not in i3d.contenders and i3d.reference == "rrjax-per-eps"


def test_samples_cover_the_scaling_tables():
    assert K.BenchConfig(n=8, scale_e_n=16, scale_n=(4, 32)).samples == 32
    assert K.BenchConfig(n=8, scale_e_n=2, scale_n=()).samples == 8


@pytest.mark.parametrize("field, value, match", [
    ("model", "resnet", "model"),
    ("n", 0, "n=0"),
    ("attacks", ("fgsm", "apgd"), "attacks="),
    ("attacks", (), "attacks="),
    ("eps_max", 0.0, "eps_max"),
    ("eps_max", 2.0, "eps_max"),
    ("scale_n", (4, 0), "scale_n"),
    ("eps_batch_size", 0, "eps_batch_size"),
])
def test_bad_values_name_the_field(field, value, match):
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(K.BenchConfig(), **{field: value})


def test_steps_per_attack():
    c = K.BenchConfig(pgd_steps=7, cw_steps=3)
    assert (c.steps("fgsm"), c.steps("pgd"), c.steps("cw")) == (1, 7, 3)
