"""Meso4 / MesoInception4: parity with DeepfakeBench-layout PyTorch references, counts, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from rrjax import models
from tests.models import torch_refs as R
from tests.models.helpers import assert_parity, assert_useful_grad, images, input_grad


def meso4_param_count(image_size: int, shared: bool = True) -> int:
    """Hand count from the spec: bias-free convs, BNs (scale+bias: two shared, or one per
    conv), fc1, fc2."""
    convs = 3 * 3 * 3 * 8 + 5 * 5 * 8 * 8 + 5 * 5 * 8 * 16 + 5 * 5 * 16 * 16
    bns = (1 if shared else 2) * (2 * 8 + 2 * 16)
    flat = 16 * (image_size // 32) ** 2
    return convs + bns + (flat * 16 + 16) + (16 * 2 + 2)


def meso_inception4_param_count(image_size: int, shared: bool = True) -> int:
    def inception(cin, a, b, c, d):
        return cin * (a + b + c + d) + 9 * (b * b + c * c + d * d) + 2 * (a + b + c + d)

    convs = 5 * 5 * 12 * 16 + 5 * 5 * 16 * 16
    flat = 16 * (image_size // 32) ** 2
    bns = (1 if shared else 2) * 2 * 16
    return inception(3, 1, 4, 4, 2) + inception(11, 2, 4, 4, 2) + convs + bns + flat * 16 + 16 + 34


def test_meso4_parameter_count_matches_the_spec():
    # Afchar et al. report ~28k parameters for Meso4 at 256 px.
    assert meso4_param_count(256) == 27_898
    assert meso4_param_count(256, shared=False) == 27_946
    for size in (256, 64):
        for shared in (True, False):
            d = models.get_model("meso4", image_size=size, batchnorm="shared" if shared else "separate")
            got = d.param_count(jax.eval_shape(d.init, jax.random.key(0)))
            assert got == meso4_param_count(size, shared)
        assert meso4_param_count(size) == R.n_params(R.Meso4Ref(size))


def test_meso_inception4_parameter_count_matches_the_spec():
    for size in (256, 96):
        d = models.get_model("meso_inception4", image_size=size, batchnorm="shared")
        got = d.param_count(jax.eval_shape(d.init, jax.random.key(0)))
        assert got == meso_inception4_param_count(size) == R.n_params(R.MesoInception4Ref(size))
        d = models.get_model("meso_inception4", image_size=size)
        got = d.param_count(jax.eval_shape(d.init, jax.random.key(0)))
        assert got == meso_inception4_param_count(size, shared=False)


@pytest.mark.parametrize("batchnorm", ["shared", "separate"])
@pytest.mark.parametrize(
    "name, ref_cls, prefix",
    [("meso4", R.Meso4Ref, "backbone"), ("meso_inception4", R.MesoInception4Ref, "module")],
)
def test_parity_with_pytorch_reference(name, ref_cls, prefix, batchnorm):
    """DeepfakeBench's (shared-BN) checkpoints import into both BatchNorm modes; in eval mode
    the separate-BN model with the shared statistics copied is the same function."""
    ref = R.randomize_(ref_cls(256), seed=1)
    sd = R.Wrap(prefix, ref).state_dict()
    assert any(k.endswith("num_batches_tracked") for k in sd)
    variables = models.from_torch(name, sd, batchnorm=batchnorm)
    det = models.get_model(name, batchnorm=batchnorm)
    x = images((4, 256, 256, 3), seed=2)
    ours = np.asarray(jax.jit(det.apply)(variables, jnp.asarray(x)))
    assert_parity(ours, R.run(ref, x))
    if batchnorm == "shared":  # the shared BatchNorm is stored once, as in the checkpoint
        want = {"bn1", "bn2"} if name == "meso4" else {"inception1", "inception2", "bn1"}
    else:
        want = {"bn1", "bn2", "bn3", "bn4"} if name == "meso4" else {"inception1", "inception2", "bn1", "bn2"}
        np.testing.assert_array_equal(variables["batch_stats"]["bn1"]["mean"], variables["batch_stats"]["bn2"]["mean"])
    assert set(variables["batch_stats"]) == want
    assert_useful_grad(input_grad(det, variables, x[:2]))


def test_meso4_training_mode_matches_pytorch_train_mode():
    """Train mode normalises with batch statistics through the *shared* BN, and the running
    mean moves twice per step (once per use) exactly as PyTorch's does."""
    size = 64
    ref = R.randomize_(R.Meso4Ref(size, dropout=0.0), seed=3)
    variables = models.from_torch("meso4", ref.state_dict(), image_size=size, dropout_rate=0.0, batchnorm="shared")
    det = models.get_model("meso4", image_size=size, dropout_rate=0.0, batchnorm="shared")
    x = images((8, size, size, 3), seed=4)
    ref.train()
    with torch.no_grad():
        ref_logits = ref(R.to_torch_input(x)).numpy()
    logits, updates = det.apply_train(variables, jnp.asarray(x), key=jax.random.key(0))
    np.testing.assert_allclose(np.asarray(logits), ref_logits, atol=1e-4)
    for bn in ("bn1", "bn2"):
        np.testing.assert_allclose(
            np.asarray(updates["batch_stats"][bn]["mean"]), getattr(ref, bn).running_mean.numpy(), atol=1e-5
        )


def test_imported_variables_do_not_alias_torch_memory():
    ref = R.randomize_(R.Meso4Ref(64), seed=8)
    variables = models.from_torch("meso4", ref.state_dict(), image_size=64)
    before = np.asarray(variables["batch_stats"]["bn1"]["mean"]).copy()
    with torch.no_grad():
        ref.bn1.running_mean.add_(1.0)
        ref.conv1.weight.mul_(0.0)
    np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["bn1"]["mean"]), before)
    assert np.abs(np.asarray(variables["params"]["conv1"]["kernel"])).max() > 0


def test_dropout_is_active_only_in_training():
    det = models.get_model("meso4", image_size=64)
    ref = R.randomize_(R.Meso4Ref(64), seed=5)
    variables = models.from_torch("meso4", ref.state_dict(), image_size=64)
    x = jnp.asarray(images((4, 64, 64, 3), seed=6))
    a, _ = det.apply_train(variables, x, key=jax.random.key(1))
    b, _ = det.apply_train(variables, x, key=jax.random.key(2))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(det.apply(variables, x), det.apply(variables, x))


def test_wrong_input_size_or_rank_names_expected_shape():
    det = models.get_model("meso4")
    variables = jax.eval_shape(det.init, jax.random.key(0))
    with pytest.raises(ValueError, match=r"\('N', 256, 256, 3\)"):
        det.apply(variables, jnp.zeros((1, 128, 128, 3)))
    with pytest.raises(ValueError, match=r"\('N', 256, 256, 3\).*got \(1, 4, 256, 256, 3\)"):
        det.apply(variables, jnp.zeros((1, 4, 256, 256, 3)))


def test_import_errors_list_missing_unexpected_and_mismatched_keys():
    sd = {k: v.clone() for k, v in R.randomize_(R.Meso4Ref(256), seed=7).state_dict().items()}
    missing = dict(sd)
    del missing["bn2.running_var"], missing["fc1.bias"]
    with pytest.raises(ValueError, match=r"missing keys \(2\): \['bn2.running_var', 'fc1.bias'\]"):
        models.from_torch("meso4", missing)
    extra = dict(sd, **{"bn3.weight": torch.ones(16), "conv5.weight": torch.ones(1)})
    with pytest.raises(ValueError, match=r"unexpected keys \(2\): \['bn3.weight', 'conv5.weight'\]"):
        models.from_torch("meso4", extra)
    bad = dict(sd, **{"fc2.weight": torch.ones(3, 16)})
    with pytest.raises(ValueError, match=r"fc2.weight -> head/fc2: checkpoint shape \(3, 16\), model expects \(2, 16\)"):
        models.from_torch("meso4", bad)
    # A checkpoint trained at 256 px does not fit a 128-px model: fc1 names both shapes.
    with pytest.raises(ValueError, match=r"fc1.weight .*\(16, 1024\).*\(16, 256\)"):
        models.from_torch("meso4", sd, image_size=128)


def test_invalid_config_is_rejected():
    with pytest.raises(ValueError, match="image_size"):
        models.get_model("meso4", image_size=16)
    with pytest.raises(ValueError, match="dropout_rate"):
        models.get_model("meso_inception4", dropout_rate=1.0)
    with pytest.raises(ValueError, match="batchnorm='tied' is not valid"):
        models.get_model("meso4", batchnorm="tied")
