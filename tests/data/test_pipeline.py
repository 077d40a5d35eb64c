"""The batching pipeline: contract of the batch dicts, determinism, resizing, errors."""

from __future__ import annotations

import threading

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import data


def _source(n=10, size=8, video=False, with_ids=True):
    rng = np.random.default_rng(0)
    recs = []
    for i in range(n):
        pixels = rng.integers(0, 256, (3, size, size, 3) if video else (size, size, 3), dtype=np.uint8)
        r = {"clip": list(pixels)} if video else {"image": pixels}
        r["label"] = i % 2
        if with_ids:
            r["video_id"] = 1000 + i // 3
        recs.append(r)
    return recs


def test_batch_contract_and_exact_scaling():
    src = _source(10)
    out = list(data.batches(src, 4))
    assert [len(b["y"]) for b in out] == [4, 4, 2]
    b = out[0]
    assert b["x"].dtype == np.float32 and b["x"].shape == (4, 8, 8, 3)
    assert b["y"].dtype == np.int32 and b["index"].dtype == np.int64 and b["video_id"].dtype == np.int64
    np.testing.assert_array_equal(b["x"], np.stack([r["image"] for r in src[:4]]).astype(np.float32) / 255)
    np.testing.assert_array_equal(b["y"], [0, 1, 0, 1])
    np.testing.assert_array_equal(b["index"], [0, 1, 2, 3])
    np.testing.assert_array_equal(b["video_id"], [1000, 1000, 1000, 1001])
    assert 0.0 <= out[0]["x"].min() and out[0]["x"].max() <= 1.0


def test_video_id_defaults_to_index_and_clips_stack():
    b = next(data.batches(_source(5, with_ids=False), 5))
    np.testing.assert_array_equal(b["video_id"], b["index"])
    c = next(data.batches(_source(4, video=True), 2))
    assert c["x"].shape == (2, 3, 8, 8, 3)


def test_shuffle_is_a_deterministic_permutation_per_epoch():
    src = _source(23)
    def order(**kw):
        return np.concatenate([b["index"] for b in data.batches(src, 5, shuffle=True, **kw)])
    a, again, other_epoch, other_seed = order(seed=3), order(seed=3), order(seed=3, epoch=1), order(seed=4)
    np.testing.assert_array_equal(a, again)
    assert sorted(a.tolist()) == list(range(23))  # every sample once per epoch
    assert not np.array_equal(a, other_epoch) and not np.array_equal(a, other_seed)
    # The order is numpy's permutation for (seed, epoch): reproducible anywhere.
    np.testing.assert_array_equal(a, np.random.default_rng([3, 0]).permutation(23))
    # Labels and pixels travel with their index.
    b = next(data.batches(src, 5, shuffle=True, seed=3))
    np.testing.assert_array_equal(b["y"], [src[i]["label"] for i in b["index"]])


def test_drop_remainder_and_indices_subset():
    src = _source(10)
    assert [len(b["y"]) for b in data.batches(src, 4, drop_remainder=True)] == [4, 4]
    b = list(data.batches(src, 10, indices=[7, 2, 5]))
    np.testing.assert_array_equal(b[0]["index"], [7, 2, 5])
    with pytest.raises(ValueError, match=r"indices span \[2, 10\]; expected positions in \[0, 10\)"):
        next(data.batches(src, 2, indices=[2, 10]))


def test_resize_matches_antialiased_linear_reference():
    # Pillow's bilinear filter widens its triangle kernel when shrinking, which is what
    # jax.image.resize(method="linear", antialias=True) does: compare the two.
    rng = np.random.default_rng(1)
    img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
    ours = data.resize(img, 16, "bilinear").astype(np.float32)
    ref = jax.image.resize(jnp.asarray(img, jnp.float32), (16, 16, 3), method="linear", antialias=True)
    assert np.abs(ours - np.asarray(ref)).mean() < 1.0       # within rounding to 8 bits
    flat = np.full((40, 40, 3), 77, np.uint8)
    for method in data.RESIZE_METHODS:
        np.testing.assert_array_equal(data.resize(flat, 20, method), np.full((20, 20, 3), 77))


def test_resize_non_square_center_crops_and_batches_apply_it():
    img = np.zeros((20, 40, 3), np.uint8)
    img[:, 10:30] = 200  # the central square
    np.testing.assert_array_equal(data.resize(img, 10, "nearest"), np.full((10, 10, 3), 200))
    b = next(data.batches(_source(3, size=32), 3, image_size=8, resize_method="area"))
    assert b["x"].shape == (3, 8, 8, 3)
    c = next(data.batches(_source(2, size=32, video=True), 2, image_size=8))
    assert c["x"].shape == (2, 3, 8, 8, 3)


def test_mixed_shapes_need_image_size():
    src = _source(2, size=8) + _source(2, size=12)
    with pytest.raises(ValueError, match=r"different shapes.*image_size="):
        next(data.batches(src, 4))
    assert next(data.batches(src, 4, image_size=8))["x"].shape == (4, 8, 8, 3)


@pytest.mark.parametrize("kwargs, match", [
    ({"batch_size": 0}, r"batch_size=0 is too small"),
    ({"batch_size": 2, "resize_method": "cubic"}, r"resize_method='cubic'.*'bilinear'"),
    ({"batch_size": 2, "seed": -1}, r"seed=-1"),
    ({"batch_size": 2.0}, r"batch_size must be an integer"),
])
def test_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.batches(_source(2), **kwargs)


def test_prefetch_propagates_errors_and_stops_when_abandoned():
    class Broken:
        def __len__(self):
            return 6

        def __getitem__(self, i):
            if i == 4:
                raise OSError("disk gone")
            return {"image": np.zeros((2, 2, 3), np.uint8), "label": 0}

    it = data.batches(Broken(), 2, prefetch=2)
    assert len(next(it)["y"]) == 2
    with pytest.raises(OSError, match="disk gone"):
        list(it)
    before = threading.active_count()
    it = data.batches(_source(50), 1, prefetch=2)
    next(it)
    it.close()  # an abandoned iterator must not leave its thread running
    for t in threading.enumerate():
        if t.name == "rrjax-prefetch":
            t.join(timeout=5)
    assert threading.active_count() <= before


def test_load_arrays_and_unknown_split(tmp_path):
    kw = dict(data_dir=tmp_path, image_size=32, train_size=0, validation_size=0, test_size=6)
    x, y, vid = data.load_arrays("synthetic_images", "test", n=4, shuffle=False, **kw)
    assert x.shape == (4, 32, 32, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(y, [0, 1, 0, 1])   # synthetic prefixes alternate
    np.testing.assert_array_equal(vid, [0, 1, 2, 3])  # no videos: id = index
    x2, y2, _ = data.load_arrays("synthetic_images", "test", n=100, resize_to=16, seed=1, **kw)
    assert x2.shape == (6, 16, 16, 3) and sorted(y2.tolist()) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match=r"split='train' is not valid.*expected one of \['test'\]"):
        data.load("synthetic_images", "train", **kw)
    with pytest.raises(ValueError, match=r"not prepared .* and prepare=False"):
        data.load("synthetic_images", "test", data_dir=tmp_path / "other", test_size=6, prepare=False)


def test_manual_dataset_without_manual_dir(tmp_path):
    with pytest.raises(ValueError, match=r"manual_dir=None is not a folder.*train.json"):
        data.load("faceforensics", "train", data_dir=tmp_path)
