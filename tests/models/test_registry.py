"""Registry, configs, default shapes, and the file-level PyTorch import (convert_file)."""

import jax
import numpy as np
import pytest
import torch

from rrjax import models
from rrjax.models._convert import strip_wrappers
from tests.models import torch_refs as R

EXPECTED = {
    "meso4": (256, 256, 3),
    "meso_inception4": (256, 256, 3),
    "xception": (256, 256, 3),
    "efficientnet_b4": (256, 256, 3),
    "i3d": (16, 112, 112, 3),
    "i3d_full": (64, 224, 224, 3),
    "meso4_video": (8, 256, 256, 3),
    "meso_inception4_video": (8, 256, 256, 3),
    "xception_video": (8, 256, 256, 3),
    "efficientnet_b4_video": (8, 256, 256, 3),
}


def test_registry_names_and_default_input_shapes():
    assert set(models.MODELS) == set(EXPECTED)
    for name, shape in EXPECTED.items():
        assert models.default_input_shape(name) == shape
        det = models.get_model(name)
        assert det.name == name and det.is_video == (len(shape) == 4)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"name='resnet50' is not valid; expected one of 'meso4', .*'i3d'"):
        models.get_model("resnet50")


def test_unknown_keyword_lists_accepted_ones():
    with pytest.raises(ValueError, match=r"meso4 does not take \['width'\]; accepted keywords: \['image_size', 'dropout_rate', 'batchnorm'\]"):
        models.get_model("meso4", width=2)
    with pytest.raises(ValueError, match=r"accepted keywords: \['num_frames', 'aggregation'.*'image_size'"):
        models.get_model("xception_video", drop_connect_rate=0.1)
    with pytest.raises(ValueError, match="aggregation='median' is not valid"):
        models.get_model("meso4_video", aggregation="median")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_rebuilds_the_same_detector(name):
    overrides = {"num_frames": 4} if "video" in name or "i3d" in name else {}
    overrides.update(image_size=96)
    det = models.get_model(name, **overrides)
    config = dict(det.config)
    assert config["image_size"] == 96
    again = models.get_model(name, **config)
    assert again == det and hash(again) == hash(det)
    # Plain JSON types, so checkpoints can store the config in a sidecar.
    assert all(isinstance(v, (int, float, str, bool)) for v in config.values())


def test_torch_layouts():
    assert models.torch_layouts("xception") == ("deepfakebench", "faceforensics")
    assert models.torch_layouts("efficientnet_b4_video") == ("deepfakebench",)
    assert models.torch_layouts("i3d") == ()


def test_strip_wrappers_only_removes_prefixes_shared_by_every_key():
    sd = {"module.backbone.conv1.weight": 1, "module.backbone.fc.bias": 2}
    assert strip_wrappers(sd) == {"conv1.weight": 1, "fc.bias": 2}
    mixed = {"model.conv1.weight": 1, "fc.bias": 2}
    assert strip_wrappers(mixed) == mixed


def test_convert_file_reads_nested_checkpoints(tmp_path):
    ref = R.randomize_(R.Meso4Ref(64), seed=51)
    sd = R.Wrap("module", R.Wrap("backbone", ref)).state_dict()
    path = tmp_path / "meso4.pth"
    torch.save({"epoch": 3, "state_dict": sd}, path)
    det, variables = models.convert_file("meso4", path, image_size=64)
    assert det == models.get_model("meso4", image_size=64)
    direct = models.from_torch("meso4", ref.state_dict(), image_size=64)
    same = jax.tree_util.tree_map(lambda a, b: np.array_equal(a, b), variables, direct)
    assert all(jax.tree_util.tree_leaves(same))
    x = np.random.default_rng(0).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    np.testing.assert_allclose(np.asarray(det.apply(variables, x)), R.run(ref, x), atol=1e-4)


def test_convert_file_refuses_pickled_modules_and_missing_files(tmp_path):
    path = tmp_path / "whole_model.pth"
    ref = R.randomize_(R.Meso4Ref(64), seed=52)
    torch.save(ref, path)  # a pickled nn.Module, as FaceForensics++ ships its models
    with pytest.raises(ValueError) as err:
        models.convert_file("meso4", path, image_size=64)
    message = str(err.value)
    out = tmp_path / "whole_model_state_dict.pth"
    assert "\n" not in message and message.startswith(f"torch.load(weights_only=True) refused '{path}' (UnpicklingError: "
                                                       "Unsupported global: GLOBAL "), message
    remedy = (f"m = torch.load('{path}', weights_only=False); torch.save(m.state_dict(), '{out}'); "
              f"then convert '{out}'")
    assert message.endswith(remedy) and "Please use" not in message, message
    # Following the advice (this test made the file, so it trusts it) gives a file that converts.
    m = torch.load(path, weights_only=False)
    torch.save(m.state_dict(), out)
    _, variables = models.convert_file("meso4", out, image_size=64)
    x = np.random.default_rng(1).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    det = models.get_model("meso4", image_size=64)
    np.testing.assert_allclose(np.asarray(det.apply(variables, x)), R.run(ref, x), atol=1e-4)
    (tmp_path / "garbage.pth").write_bytes(b"garbage" * 10)
    with pytest.raises(ValueError, match=r"refused .*garbage.pth' \(UnpicklingError: Unsupported operand \d+\)$"):
        models.convert_file("meso4", tmp_path / "garbage.pth")
    with pytest.raises(ValueError, match="is not a file"):
        models.convert_file("meso4", tmp_path / "nope.pth")
    torch.save({"epoch": 1, "lr": 0.1}, tmp_path / "no_weights.pth")
    with pytest.raises(ValueError, match="holds no state dict"):
        models.convert_file("meso4", tmp_path / "no_weights.pth")
