"""Clip detectors: frame-probability aggregation (mean, DFDC "confident") and I3D."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from rrjax import models
from rrjax.models.video import aggregation_weights
from tests.models import torch_refs as R
from tests.models.helpers import assert_useful_grad, compile_fast, images, random_variables


def confident_reference(pred, t=0.8, min_fakes=11):
    """Seferbekov's DFDC-winning rule, from its published description (numpy, one video)."""
    pred = np.asarray(pred)
    sz = len(pred)
    fakes = np.count_nonzero(pred > t)
    if fakes > sz // 2.5 and fakes > min_fakes:
        return np.mean(pred[pred > t])
    if np.count_nonzero(pred < 0.2) > 0.9 * sz:
        return np.mean(pred[pred < 0.2])
    return np.mean(pred)


def _weighted(p, **kw):
    w = np.asarray(aggregation_weights(jnp.asarray(p), **kw))
    np.testing.assert_allclose(w.sum(1), 1.0, rtol=1e-6)
    return (w * p).sum(1)


@pytest.mark.parametrize("t_frames, min_fakes", [(32, 11), (8, 2), (5, 0)])
def test_confident_weights_match_the_published_rule(t_frames, min_fakes):
    rng = np.random.default_rng(t_frames)
    clips = [rng.uniform(size=t_frames) for _ in range(40)]
    # Crafted clips for each branch: mostly confident fakes, mostly confident reals, mixed.
    clips.append(np.where(np.arange(t_frames) < int(0.8 * t_frames), 0.95, 0.3))
    clips.append(np.full(t_frames, 0.05))
    clips.append(np.where(np.arange(t_frames) == 0, 0.9, 0.1))
    p = np.stack(clips).astype(np.float32)
    got = _weighted(p, aggregation="confident", confident_min_frames=min_fakes)
    want = [confident_reference(c, 0.8, min_fakes) for c in p]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(_weighted(p, aggregation="mean"), p.mean(1), rtol=1e-6)


@pytest.fixture(scope="module")
def meso_clip():
    """A Meso4 frame model from a DeepfakeBench state dict, per-frame PyTorch probabilities."""
    size, n, t = 64, 3, 6
    ref = R.randomize_(R.Meso4Ref(size), seed=31)
    x = images((n, t, size, size, 3), seed=32)
    with torch.no_grad():
        logits = ref(R.to_torch_input(x.reshape(n * t, size, size, 3)))
    p_frames = torch.softmax(logits, -1).numpy().reshape(n, t, 2)
    return ref.state_dict(), x, p_frames


def test_mean_video_wrapper_matches_pytorch_frames(meso_clip):
    sd, x, p_frames = meso_clip
    cfg = dict(image_size=64, num_frames=6)
    det = models.get_model("meso4_video", **cfg)
    variables = models.from_torch("meso4_video", sd, **cfg)
    x = jnp.asarray(x)
    logits = np.asarray(compile_fast(det.apply, variables, x)(variables, x))
    assert logits.shape == (3, 2)
    q = p_frames.mean(1)
    np.testing.assert_allclose(np.exp(logits), q, atol=1e-5)  # logits are log-probabilities
    np.testing.assert_allclose(np.asarray(jax.nn.softmax(logits)), q, atol=1e-5)
    # Every frame of every clip receives gradient: attacks perturb the whole clip.
    g = compile_fast(jax.grad(lambda x, v: jnp.sum(det.apply(v, x)[:, 1])), x, variables)(x, variables)
    assert_useful_grad(np.asarray(g))
    assert np.all(np.abs(np.asarray(g)).reshape(3, 6, -1).max(-1) > 0)


def test_confident_video_wrapper_matches_rule_and_routes_gradient(meso_clip):
    sd, x, p_frames = meso_clip
    thr = float(np.quantile(p_frames[..., 1], 0.35))
    cfg = dict(image_size=64, num_frames=6, aggregation="confident", confident_threshold=thr, confident_min_frames=0)
    det = models.get_model("meso4_video", **cfg)
    variables = models.from_torch("meso4_video", sd, **cfg)
    x = jnp.asarray(x)
    logits = np.asarray(compile_fast(det.apply, variables, x)(variables, x))
    want = [confident_reference(clip, thr, 0) for clip in p_frames[..., 1]]
    np.testing.assert_allclose(np.exp(logits[:, 1]), want, atol=1e-5)
    np.testing.assert_allclose(np.exp(logits).sum(1), 1.0, atol=1e-5)
    # Frames left out by the rule get exactly zero gradient, selected ones get some.
    g = np.asarray(compile_fast(jax.grad(lambda x, v: jnp.sum(det.apply(v, x)[:, 1])), x, variables)(x, variables))
    per_frame = np.abs(g).reshape(3, 6, -1).max(-1)
    excluded = 0
    for clip, gf in zip(p_frames[..., 1], per_frame):
        fake_branch = np.count_nonzero(clip > thr) > 6 // 2.5
        selected = clip > thr if fake_branch else np.ones(6, bool)
        assert np.all(gf[selected] > 0) and np.all(gf[~selected] == 0)
        excluded += int((~selected).sum())
    assert excluded > 0  # the selection really left frames out


def test_video_wrapper_rejects_images_and_wrong_lengths():
    det = models.get_model("xception_video", image_size=64, num_frames=4)
    assert det.input_shape == (4, 64, 64, 3) and det.is_video
    v = jax.eval_shape(det.init, jax.random.key(0))
    with pytest.raises(ValueError, match=r"\('N', 4, 64, 64, 3\).*\[N,T,H,W,C\] clips"):
        det.apply(v, jnp.zeros((2, 64, 64, 3)))
    with pytest.raises(ValueError, match=r"\('N', 4, 64, 64, 3\)"):
        det.apply(v, jnp.zeros((2, 5, 64, 64, 3)))
    out = jax.eval_shape(det.apply, v, jax.ShapeDtypeStruct((2, 4, 64, 64, 3), jnp.float32))
    assert out.shape == (2, 2)


def test_video_wrapper_has_the_frame_models_parameters():
    for frame in ("meso4", "meso_inception4", "xception", "efficientnet_b4"):
        f = models.get_model(frame, image_size=64)
        v = models.get_model(f"{frame}_video", image_size=64, num_frames=3)
        count = lambda d: d.param_count(jax.eval_shape(d.init, jax.random.key(0)))  # noqa: E731
        assert count(v) == count(f)


# ------------------------------------------------------------------------------------ I3D
I3D_STEM = [(3, 64, 7), (64, 64, 1), (64, 192, 3)]  # (in, out, kernel) of Conv3d_1a, 2b, 2c
I3D_MIXED = [  # Carreira & Zisserman (2017), Inception-v1 widths
    (64, 96, 128, 16, 32, 32), (128, 128, 192, 32, 96, 64),
    (192, 96, 208, 16, 48, 64), (160, 112, 224, 24, 64, 64), (128, 128, 256, 24, 64, 64),
    (112, 144, 288, 32, 64, 64), (256, 160, 320, 32, 128, 128),
    (256, 160, 320, 32, 128, 128), (384, 192, 384, 48, 128, 128),
]


def i3d_param_count(width: float) -> int:
    s = lambda c: max(1, int(round(c * width)))  # noqa: E731
    unit = lambda cin, cout, k: k ** 3 * cin * cout + 2 * cout  # conv (no bias) + BN scale/bias  # noqa: E731
    total = sum(unit(s(a) if a != 3 else 3, s(b), k) for a, b, k in I3D_STEM)
    cin = s(192)
    for w in I3D_MIXED:
        w = [s(c) for c in w]
        total += unit(cin, w[0], 1) + unit(cin, w[1], 1) + unit(w[1], w[2], 3)
        total += unit(cin, w[3], 1) + unit(w[3], w[4], 3) + unit(cin, w[5], 1)
        cin = w[0] + w[2] + w[4] + w[5]
    return total + cin * 2 + 2


def test_i3d_parameter_counts():
    assert i3d_param_count(1.0) == 12_289_314  # Kinetics I3D (12.3M) with a 2-way head
    for name, width in (("i3d_full", 1.0), ("i3d", 0.25)):
        det = models.get_model(name)
        assert det.param_count(jax.eval_shape(det.init, jax.random.key(0))) == i3d_param_count(width)


def test_i3d_full_size_shape():
    det = models.get_model("i3d_full")
    assert det.input_shape == (64, 224, 224, 3)
    v = jax.eval_shape(det.init, jax.random.key(0))
    assert jax.eval_shape(det.apply, v, jax.ShapeDtypeStruct((2, 64, 224, 224, 3), jnp.float32)).shape == (2, 2)


def test_i3d_compact_forward_gradient_and_training():
    det = models.get_model("i3d", num_frames=8, image_size=32)
    variables = random_variables(det, seed=41)
    x = jnp.asarray(images((2, 8, 32, 32, 3), seed=42))

    def value_and_grad(v, x):
        return jax.value_and_grad(lambda x: jnp.sum(det.apply(v, x) @ jnp.array([-1.0, 1.0])))(x)

    value, g = compile_fast(value_and_grad, variables, x)(variables, x)
    assert np.isfinite(float(value))
    assert_useful_grad(np.asarray(g))
    key = jax.random.key(0)
    train = compile_fast(lambda v, x, k: det.apply_train(v, x, key=k), variables, x, key)
    logits, updates = train(variables, x, key)
    assert logits.shape == (2, 2) and np.all(np.isfinite(logits))
    moved = jax.tree_util.tree_map(lambda u, w: bool(jnp.any(u != w)), updates["batch_stats"], variables["batch_stats"])
    assert all(jax.tree_util.tree_leaves(moved))


def test_i3d_has_no_pytorch_layout():
    with pytest.raises(ValueError, match="importable models: .*'xception'"):
        models.from_torch("i3d", {})
