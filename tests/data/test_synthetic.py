"""The synthetic renderer and its TFDS builders."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from rrjax import data
from rrjax.data import faces, render, synthetic


def _rng(i=0):
    return np.random.default_rng([7, i])


# ----------------------------------------------------------------------------- renderer


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_bilinear_upsampling_matches_jax_image_resize(factor):
    n = 9
    a = render._upsample_matrix(n * factor, n, factor, "bilinear", _rng())
    v = np.random.default_rng(factor).random(n).astype(np.float32)
    ref = jax.image.resize(jnp.asarray(v), (n * factor,), method="linear")
    np.testing.assert_allclose(a @ v, np.asarray(ref), atol=1e-5)


def test_nearest_upsampling_repeats_pixels():
    a = render._upsample_matrix(12, 4, 3, "nearest", _rng())
    v = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(a @ v, np.repeat(v, 3))


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_transposed_conv_upsampling_leaves_a_period_factor_checkerboard(factor):
    n = 16
    a = render._upsample_matrix(n * factor, n, factor, "checkerboard", _rng(factor))
    idx, w = render._taps(a)
    flat = np.ones((n, n, 1), np.float32)
    out = render._resample(render._resample(flat, idx, w, 0), idx, w, 1)[..., 0]
    inner = out[2 * factor:-2 * factor, 2 * factor:-2 * factor]  # away from the borders
    # A constant input comes out modulated with period `factor` along both axes...
    np.testing.assert_allclose(inner[factor:], inner[:-factor], rtol=1e-5)
    np.testing.assert_allclose(inner[:, factor:], inner[:, :-factor], rtol=1e-5)
    assert inner.std() > 1e-3
    # ...with a small amplitude around an average gain of one (a residual, not a grid).
    assert abs(inner.mean() - 1) < 0.05 and inner.max() - inner.min() < 0.5
    # The gathered taps reproduce the dense operator.
    v = np.random.default_rng(0).random((n, 1)).astype(np.float32)
    np.testing.assert_allclose(render._resample(v, idx, w, 0)[:, 0], a @ v[:, 0], rtol=1e-5, atol=1e-6)


def test_background_noise_has_a_power_law_spectrum():
    # Natural images have amplitude ~ 1/f**beta; fit the radially averaged log spectrum.
    beta, size = 1.1, 128
    field = faces._pink_noise(np.random.default_rng(0), size, 1, beta)[..., 0]
    power = np.abs(np.fft.fft2(field)) ** 2
    f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    bins = np.geomspace(2 / size, 0.4, 12)
    which = np.digitize(f, bins)
    logf = [np.log(f[which == k].mean()) for k in range(1, len(bins))]
    logp = [np.log(power[which == k].mean()) for k in range(1, len(bins))]
    slope = np.polyfit(logf, logp, 1)[0]
    assert slope == pytest.approx(-2 * beta, abs=0.15)


def test_render_is_deterministic_and_valid():
    for fake in (False, True):
        a, method = render.render_image(_rng(1), 64, fake)
        b, _ = render.render_image(_rng(1), 64, fake)
        c, _ = render.render_image(_rng(2), 64, fake)
        assert a == b and a != c
        pixels = render.decode_image(a)
        assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
        if fake:
            kind, upsampler = method.split("-")
            assert kind in render.FAKE_KINDS and upsampler in render.UPSAMPLERS
        else:
            assert method == "real"


def test_fake_changes_only_the_inner_face():
    rng = _rng(3)
    ident, pose, light = faces.sample_identity(rng), faces.sample_pose(rng), faces.sample_light(rng)
    scene = faces.sample_scene(rng, 96)
    forgery = render.sample_forgery(rng, ident)
    real_rgb, u, v = faces.render_person(96, ident, pose, light, scene)
    head, _ = faces._head_alpha(u, v, ident, 2.0 / (96 * pose.scale))
    fake_rgb = render._swap_face(real_rgb, u, v, head, pose, light, ident, forgery, 96, rng)
    changed = np.abs(fake_rgb - real_rgb).max(-1) > 1e-4
    assert changed.mean() > 0.02                    # the face was replaced...
    assert not changed[head < 1e-3].any()           # ...and nothing outside the head moved
    # The changed area centres on the face (inner-face mask sits between brows and chin).
    ys, xs = np.nonzero(changed)
    cy, cx = ys.mean() / 96 * 2 - 1, xs.mean() / 96 * 2 - 1
    assert abs(cx - pose.cx) < pose.scale * 0.6 and abs(cy - pose.cy) < pose.scale * 0.8


def _face_flicker(frames: list[bytes]) -> float:
    """Mean |second difference| over time of the mean brightness in the central box."""
    x = np.stack([render.decode_image(f) for f in frames]).astype(np.float32)
    s = x.shape[1]
    box = x[:, s // 3:2 * s // 3, s // 3:2 * s // 3].mean((1, 2, 3))
    return float(np.abs(box[2:] - 2 * box[1:-1] + box[:-2]).mean())


def test_clips_move_smoothly_and_fakes_flicker():
    real_flicker, fake_flicker = [], []
    for i in range(6):
        for fake, out in ((False, real_flicker), (True, fake_flicker)):
            frames, method = render.render_clip(_rng(100 + i), 48, 12, fake)
            assert len(frames) == 12 and (method == "real") != fake
            out.append(_face_flicker(frames))
    # Smooth head motion has a small second difference; per-frame mask and colour
    # re-draws (frame-wise face swapping) add temporal noise on top of it.
    assert np.mean(fake_flicker) > 1.5 * np.mean(real_flicker)


# ----------------------------------------------------------------------------- builders


def _build(tmp_path, sub, **config):
    builder = data.get_builder("synthetic_images", data_dir=tmp_path / sub, **config)
    builder.download_and_prepare()
    return builder


def test_image_builder_is_deterministic_balanced_and_prefix_stable(tmp_path):
    cfg = dict(image_size=32, train_size=6, validation_size=0, test_size=4, seed=3)
    a, b = _build(tmp_path, "a", **cfg), _build(tmp_path, "b", **cfg)
    assert sorted(a.info.splits) == ["test", "train"]  # a size-0 split is not built
    for split in ("train", "test"):
        sa, sb = a.as_data_source(split), b.as_data_source(split)
        for i in range(len(sa)):
            np.testing.assert_array_equal(sa[i]["image"], sb[i]["image"])
            assert sa[i]["label"] == i % 2 and sa[i]["video_id"] == i
    labels = [r["label"] for r in a.as_data_source("train")]
    assert labels.count(0) == labels.count(1) == 3
    # A bigger split starts with the same samples; another seed gives other samples.
    big = _build(tmp_path, "c", **{**cfg, "train_size": 8}).as_data_source("train")
    np.testing.assert_array_equal(big[5]["image"], a.as_data_source("train")[5]["image"])
    other = _build(tmp_path, "d", **{**cfg, "seed": 4}).as_data_source("train")
    assert not np.array_equal(other[0]["image"], a.as_data_source("train")[0]["image"])
    # The splits are different samples.
    assert not np.array_equal(a.as_data_source("test")[0]["image"], a.as_data_source("train")[0]["image"])
    # Readable without the builder class, by name, through tfds's random-access API.
    ds = tfds.data_source("synthetic_images/" + a.builder_config.name, data_dir=tmp_path / "a")
    np.testing.assert_array_equal(ds["test"][1]["image"], a.as_data_source("test")[1]["image"])


def test_video_builder_clips(tmp_path):
    builder = data.get_builder("synthetic_videos", data_dir=tmp_path, image_size=32, num_frames=5,
                               train_size=0, validation_size=0, test_size=4)
    builder.download_and_prepare()
    src = builder.as_data_source("test")
    batch = next(data.batches(src, 4))
    assert batch["x"].shape == (4, 5, 32, 32, 3)
    np.testing.assert_array_equal(batch["y"], [0, 1, 0, 1])
    np.testing.assert_array_equal(batch["video_id"], [0, 1, 2, 3])


def test_config_validation_and_named_configs(tmp_path):
    with pytest.raises(ValueError, match=r"all split sizes are 0"):
        data.get_builder("synthetic_images", data_dir=tmp_path, train_size=0, validation_size=0, test_size=0)
    with pytest.raises(ValueError, match=r"image_size=16 is too small; expected an integer >= 32"):
        data.get_builder("synthetic_images", data_dir=tmp_path, image_size=16)
    with pytest.raises(ValueError, match=r"num_frames=0 is too small"):
        data.get_builder("synthetic_videos", data_dir=tmp_path, num_frames=0)
    # Keyword arguments equal to a predefined config select that config.
    default = data.get_builder("synthetic_images", data_dir=tmp_path)
    assert default.builder_config is synthetic.SyntheticImages.BUILDER_CONFIGS[0]
    assert default.builder_config.name == "256px_2000_500_500_seed0"
