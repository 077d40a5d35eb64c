"""The dataset registry: built-in names, register() with an outside dataset, its errors."""

from __future__ import annotations

import importlib
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from rrjax import data
from rrjax.data import faceforensics, synthetic

TOY = "tests.extensions.toy_dataset"


@pytest.fixture
def registry():
    """Restores DATASETS after the test (registrations are process-wide)."""
    saved = dict(data.DATASETS)
    yield data.DATASETS
    data.DATASETS.clear()
    data.DATASETS.update(saved)


@pytest.fixture
def toy(registry):
    """The example extension module, imported afresh (its import registers 'toy_images')."""
    sys.modules.pop(TOY, None)
    assert "toy_images" not in registry
    yield importlib.import_module(TOY)
    sys.modules.pop(TOY, None)


def test_registry_errors_list_valid_names(tmp_path):
    with pytest.raises(ValueError, match=r"name='ff\+\+' is not valid; expected one of 'synthetic_images'"):
        data.get_builder("ff++")
    with pytest.raises(ValueError, match=r"no config field\(s\) \['resolution'\].*'image_size'"):
        data.get_builder("synthetic_images", data_dir=tmp_path, resolution=64)
    assert set(data.DATASETS) == {"synthetic_images", "synthetic_videos", "faceforensics", "celeb_df_v2",
                                  "deepfakebench"}
    for name, cls in data.DATASETS.items():
        assert cls.name == name  # the registry key is also the tfds name (tfds.data_source(name))


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("RRJAX_DATA_DIR", str(tmp_path / "a"))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "b"))
    assert data.default_data_dir() == tmp_path / "a"
    monkeypatch.delenv("RRJAX_DATA_DIR")
    assert data.default_data_dir() == tmp_path / "b"
    monkeypatch.delenv("TFDS_DATA_DIR")
    assert str(data.default_data_dir()).endswith("tensorflow_datasets")
    assert data.get_builder("synthetic_images", data_dir=tmp_path / "c").data_dir.startswith(str(tmp_path / "c"))


def test_an_outside_dataset_registers_on_import_and_loads_and_batches(toy, tmp_path):
    assert data.DATASETS["toy_images"] is toy.ToyImages
    assert data.get_builder("toy_images", data_dir=tmp_path).builder_config.name == "32px_8"
    src = data.load("toy_images", "test", data_dir=tmp_path, num_images=6, image_size=16)
    assert len(src) == 6
    batches = list(data.batches(src, 4))
    assert [b["x"].shape for b in batches] == [(4, 16, 16, 3), (2, 16, 16, 3)]
    x = np.concatenate([b["x"] for b in batches])
    np.testing.assert_array_equal(np.concatenate([b["y"] for b in batches]), [0, 1, 0, 1, 0, 1])
    # PNG is lossless: what comes out is the generator's pixels / 255, exactly.
    np.testing.assert_array_equal(x, np.stack([toy.toy_pixels(i, 16) for i in range(6)]).astype(np.float32) / 255)
    np.testing.assert_array_equal(x[:, 0, 0, 0] * 255, [60, 181, 62, 183, 64, 185])  # 60 + 120 (i % 2) + i
    xs, ys, _ = data.load_arrays("toy_images", "train", data_dir=tmp_path, num_images=6, image_size=16, n=4,
                                 resize_to=8, shuffle=False)
    assert xs.shape == (4, 8, 8, 3) and ys.tolist() == [0, 1, 0, 1]
    with pytest.raises(ValueError, match=r"num_images=0 is not valid"):
        data.get_builder("toy_images", data_dir=tmp_path, num_images=0)
    with pytest.raises(ValueError, match=r"name='toy' is not valid; expected one of .*'toy_images'"):
        data.get_builder("toy")


def test_register_same_class_again_is_a_no_op_and_overwrite_replaces(toy, registry):
    assert data.register("toy_images", toy.ToyImages) is toy.ToyImages

    class Other(toy.ToyImages, skip_registration=True):
        name = "toy_images"

    with pytest.raises(ValueError, match=r"name='toy_images' is already registered "
                                         r"\(tests.extensions.toy_dataset.ToyImages\).*overwrite=True"):
        data.register("toy_images", Other)
    assert registry["toy_images"] is toy.ToyImages
    data.register("toy_images", Other, overwrite=True)
    assert registry["toy_images"] is Other
    with pytest.raises(ValueError, match=r"name='faceforensics' is already registered"):
        data.register("faceforensics", type("FaceForensics2", (faceforensics.FaceForensics,),
                                            {"name": "faceforensics"}, skip_registration=True))


@pytest.mark.parametrize("name", ["Toy-Images", "toy images", "1toy", "", 3, None, "toy_images/v2"])
def test_register_refuses_bad_names(toy, name):
    with pytest.raises(ValueError, match=r"name=.* is not valid; expected a snake_case name"):
        data.register(name, toy.ToyImages, overwrite=True)


class _NoConfig(data.Builder, skip_registration=True):
    name = "no_config"
    VERSION = tfds.core.Version("1.0.0")


class _ConfigNotDataclass(data.Builder, skip_registration=True):
    name = "bad_config"
    VERSION = tfds.core.Version("1.0.0")
    CONFIG_CLASS = dict


def test_register_refuses_what_is_not_a_builder_class(toy, registry):
    not_rrjax = tfds.core.GeneratorBasedBuilder  # a tfds builder, but not rrjax's base
    for value in (toy.ToyImages(data_dir="/nonexistent"), lambda: None, not_rrjax, "ToyImages", None):
        with pytest.raises(ValueError, match=r"builder_cls=.* is not valid; expected a subclass of rrjax.data.Builder"):
            data.register("toy_images2", value)
    with pytest.raises(ValueError, match=r"_NoConfig.CONFIG_CLASS=None is not valid; expected a "
                                         r"tfds.core.BuilderConfig dataclass with a make"):
        data.register("no_config", _NoConfig)
    with pytest.raises(ValueError, match=r"_ConfigNotDataclass.CONFIG_CLASS=<class 'dict'> is not valid"):
        data.register("bad_config", _ConfigNotDataclass)
    with pytest.raises(ValueError, match=r"name='synthetic' differs from SyntheticImages.name='synthetic_images'"):
        data.register("synthetic", synthetic.SyntheticImages)
    with pytest.raises(ValueError, match=r"overwrite=1 is not valid; expected True or False"):
        data.register("toy_images", toy.ToyImages, overwrite=1)
    assert set(registry) == {"synthetic_images", "synthetic_videos", "faceforensics", "celeb_df_v2",
                             "deepfakebench", "toy_images"}
