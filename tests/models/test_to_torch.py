"""rrjax.models.to_torch: the Flax -> PyTorch export (the benchmark's twin), round trips and errors."""

import jax
import numpy as np
import pytest
import torch

from rrjax import models
from rrjax.models import torch_refs as R
from tests.models.helpers import random_variables


def test_to_torch_round_trip_and_parity():
    config = dict(image_size=64, batchnorm="shared")
    det = models.get_model("meso4", **config)
    variables = random_variables(det, seed=3)
    sd = models.to_torch("meso4", variables, **config)
    ref = R.Meso4Ref(64)
    ref.load_state_dict(sd, strict=True)  # every key, no extra ones
    x = np.random.default_rng(0).uniform(size=(6, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(R.run(ref, x), np.asarray(det.apply(variables, x)), atol=1e-4)
    back = models.from_torch("meso4", sd, **config)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, variables)
    # ... and PyTorch -> Flax -> PyTorch gives the original tensors.
    ref2 = R.randomize_(R.Meso4Ref(64), seed=5)
    sd2 = models.to_torch("meso4", models.from_torch("meso4", ref2.state_dict(), **config), **config)
    for k, v in ref2.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            torch.testing.assert_close(sd2[k], v, rtol=0, atol=0)


def test_to_torch_separate_batchnorm_only_when_representable():
    sd = R.randomize_(R.Meso4Ref(64), seed=1).state_dict()
    variables = models.from_torch("meso4", sd, image_size=64)  # separate: each shared BN copied twice
    out = models.to_torch("meso4", variables, image_size=64)
    assert sorted(out) == sorted(sd)
    variables["params"]["bn4"]["bias"] = variables["params"]["bn4"]["bias"] + 0.5
    with pytest.raises(ValueError, match="bn2.bias.*different values|different values"):
        models.to_torch("meso4", variables, image_size=64)


def test_to_torch_video_xception_and_errors():
    config = dict(image_size=64, batchnorm="shared", num_frames=2)
    det = models.get_model("meso4_video", **config)
    variables = random_variables(det)
    sd = models.to_torch("meso4_video", variables, **config)
    R.Meso4Ref(64).load_state_dict(sd, strict=True)  # the frame model's weights
    xdet = models.get_model("xception", image_size=64)
    xv = random_variables(xdet)
    R.XceptionRef().load_state_dict(models.to_torch("xception", xv, image_size=64), strict=True)
    with pytest.raises(ValueError, match="importable models"):
        models.to_torch("i3d", {})
    with pytest.raises(ValueError, match="do not match"):
        models.to_torch("meso4", variables, image_size=64, batchnorm="shared")  # video variables
