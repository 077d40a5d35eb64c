"""Detector checkpoints: round trip, atomic writes, and rejection of bad directories."""

import json
import os
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rrjax import checkpoints
from rrjax.models.base import Detector


class TinyNet(nn.Module):
    """Conv + BatchNorm + dropout + dense: every collection a real detector has."""

    width: int = 4

    @nn.compact
    def __call__(self, x, train: bool):
        x = (x - 0.5) / 0.5
        x = nn.Conv(self.width, (3, 3))(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = nn.relu(x).mean(axis=(1, 2))
        x = nn.Dropout(0.25, deterministic=not train)(x)
        return nn.Dense(2)(x)


def tiny(width=4, image_size=8, name="tiny"):
    return Detector(
        name=name,
        module=TinyNet(width=width),
        input_shape=(image_size, image_size, 3),
        config=(("width", width), ("image_size", image_size)),
    )


@pytest.fixture(scope="module")
def trained():
    """A detector with non-trivial params and BatchNorm statistics (one training-mode pass)."""
    det = tiny()
    variables = jax.jit(det.init)(jax.random.PRNGKey(0))  # jit: eager init compiles op by op
    x = jax.random.uniform(jax.random.PRNGKey(1), (6, 8, 8, 3))
    _, updates = jax.jit(det.apply_train)(variables, x, key=jax.random.PRNGKey(2))
    variables = {**variables, **updates}
    return det, variables, x


@pytest.fixture
def saved(tmp_path, trained):
    det, variables, _ = trained
    path = checkpoints.save(
        tmp_path / "ckpt", det, variables, metadata={"dataset": "toy", "metrics": {"acc": 0.75}}
    )
    return path


def test_round_trip_gives_bit_identical_logits_and_metadata(saved, trained):
    det, variables, x = trained
    det2, restored, meta = checkpoints.load(saved, detector=det)
    assert det2 is det
    np.testing.assert_array_equal(np.asarray(det.apply(restored, x)), np.asarray(det.apply(variables, x)))
    for (pa, a), (pb, b) in zip(
        jax.tree_util.tree_leaves_with_path(variables), jax.tree_util.tree_leaves_with_path(restored)
    ):
        assert pa == pb and a.dtype == b.dtype and np.array_equal(a, b)
    assert meta["model"] == "tiny" and meta["config"] == {"width": 4, "image_size": 8}
    assert meta["dataset"] == "toy" and meta["metrics"] == {"acc": 0.75}
    assert meta["content_sha256"] == checkpoints.content_hash(variables)
    assert meta["param_count"] == det.param_count(variables)
    assert {"jax", "flax", "optax", "orbax-checkpoint", "numpy", "python", "rrjax"} <= meta["versions"].keys()
    assert checkpoints.read_metadata(saved) == meta
    # Nothing but the checkpoint is left next to it (no temp directories).
    assert sorted(p.name for p in saved.parent.iterdir()) == ["ckpt"]


def test_load_without_detector_rebuilds_it_from_the_registry(saved, trained, monkeypatch):
    import rrjax.models

    calls = []

    def get_model(name, **config):
        calls.append((name, config))
        return tiny(name=name, **config)

    monkeypatch.setattr(rrjax.models, "get_model", get_model, raising=False)
    det, restored, _ = checkpoints.load(saved)
    assert calls == [("tiny", {"width": 4, "image_size": 8})]
    x = trained[2]
    np.testing.assert_array_equal(np.asarray(det.apply(restored, x)), np.asarray(trained[0].apply(trained[1], x)))


def test_existing_path_needs_overwrite_and_overwrite_replaces(saved, trained):
    det, variables, x = trained
    with pytest.raises(ValueError, match="already exists; pass overwrite=True"):
        checkpoints.save(saved, det, variables)
    doubled = jax.tree_util.tree_map(lambda a: a * 2, variables)
    checkpoints.save(saved, det, doubled, overwrite=True)
    _, restored, meta = checkpoints.load(saved, detector=det)
    assert meta["content_sha256"] == checkpoints.content_hash(doubled)
    assert "dataset" not in meta
    assert sorted(p.name for p in saved.parent.iterdir()) == ["ckpt"]


def test_overwrite_never_replaces_a_directory_that_is_not_a_checkpoint(tmp_path, trained):
    det, variables, _ = trained
    precious = tmp_path / "data"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not an rrjax checkpoint; refusing"):
        checkpoints.save(precious, det, variables, overwrite=True)
    assert (precious / "notes.txt").read_text() == "keep me"


def test_interrupted_save_leaves_nothing_that_looks_like_a_checkpoint(tmp_path, trained, monkeypatch):
    det, variables, _ = trained
    real = checkpoints._write_json

    def crash_on_marker(path, obj):
        if path.name == checkpoints.MARKER:
            raise KeyboardInterrupt("simulated kill before the marker")
        real(path, obj)

    monkeypatch.setattr(checkpoints, "_write_json", crash_on_marker)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(tmp_path / "ckpt", det, variables)
    assert list(tmp_path.iterdir()) == []


def test_partial_directory_is_rejected(saved, trained):
    (saved / checkpoints.MARKER).unlink()
    with pytest.raises(ValueError, match="is incomplete: it has no COMPLETE marker"):
        checkpoints.load(saved, detector=trained[0])
    with pytest.raises(ValueError, match="is incomplete"):
        checkpoints.read_metadata(saved)


def _array_files(path):
    return sorted(p for p in (path / checkpoints.ARRAYS).rglob("*") if p.is_file() and p.stat().st_size > 0)


def test_truncated_array_file_is_rejected(saved, trained):
    victim = _array_files(saved)[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    rel = victim.relative_to(saved).as_posix()
    with pytest.raises(ValueError, match=rf"is corrupt: {rel} is truncated \({len(data) // 2} bytes, expected {len(data)}\)"):
        checkpoints.load(saved, detector=trained[0])


def test_garbage_of_the_same_size_is_rejected(saved, trained):
    victim = _array_files(saved)[0]
    victim.write_bytes(os.urandom(victim.stat().st_size))
    with pytest.raises(ValueError, match=r"was modified \(SHA-256 mismatch\).*re-create it"):
        checkpoints.load(saved, detector=trained[0])


def test_edited_sidecar_and_garbage_marker_are_rejected(saved, trained):
    meta = json.loads((saved / checkpoints.SIDECAR).read_text())
    meta["metrics"]["acc"] = 0.99
    (saved / checkpoints.SIDECAR).write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="metadata.json is (resized|truncated|modified)"):
        checkpoints.read_metadata(saved)
    (saved / checkpoints.MARKER).write_bytes(b"\x00\xffnot json")
    with pytest.raises(ValueError, match="marker COMPLETE is not valid JSON"):
        checkpoints.load(saved, detector=trained[0])


def test_swapped_arrays_with_a_forged_file_manifest_fail_the_content_hash(tmp_path, trained):
    # Files are internally consistent (the forger rewrote the marker's file list), but the arrays
    # are another model's: only the hash of the restored numbers can tell.
    det, variables, _ = trained
    a = checkpoints.save(tmp_path / "a", det, variables)
    b = checkpoints.save(tmp_path / "b", det, jax.tree_util.tree_map(lambda v: v + 1, variables))
    import shutil

    shutil.rmtree(a / checkpoints.ARRAYS)
    shutil.copytree(b / checkpoints.ARRAYS, a / checkpoints.ARRAYS)
    marker = json.loads((a / checkpoints.MARKER).read_text())
    marker["files"] = checkpoints._manifest(a)
    (a / checkpoints.MARKER).write_text(json.dumps(marker))
    with pytest.raises(ValueError, match="content hash differs from the sidecar's"):
        checkpoints.load(a, detector=det)


def test_wrong_model_config_or_shapes_are_rejected(saved):
    with pytest.raises(ValueError, match="holds model 'tiny'.*but detector is 'other'"):
        checkpoints.load(saved, detector=tiny(name="other"))
    with pytest.raises(ValueError, match=r"differs in \['width'\]"):
        checkpoints.load(saved, detector=tiny(width=6))

    class Wider(TinyNet):
        width: int = 5  # same name and config as saved, different parameter shapes

    impostor = Detector("tiny", Wider(), (8, 8, 3), (("width", 4), ("image_size", 8)))
    with pytest.raises(ValueError, match=r"does not fit detector 'tiny'.*Conv_0/kernel: expected float32\[3, 3, 3, 5\], found float32\[3, 3, 3, 4\]"):
        checkpoints.load(saved, detector=impostor)


def test_save_rejects_variables_that_do_not_match_the_detector(tmp_path, trained):
    det, variables, _ = trained
    half = {**variables, "params": jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), variables["params"])}
    with pytest.raises(ValueError, match=r"expected float32\[2\], found bfloat16\[2\]"):
        checkpoints.save(tmp_path / "c", det, half)
    no_stats = {"params": variables["params"]}
    with pytest.raises(ValueError, match="missing batch_stats/BatchNorm_0/mean"):
        checkpoints.save(tmp_path / "c", det, no_stats)
    with pytest.raises(ValueError, match="reserved key"):
        checkpoints.save(tmp_path / "c", det, variables, metadata={"model": "x"})
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        checkpoints.save(tmp_path / "c", det, variables, metadata={"metrics": {"auc": float("nan")}})
    assert not pathlib.Path(tmp_path / "c").exists()


def test_content_hash_tracks_bytes_dtype_and_path():
    base = {"params": {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}}
    h = checkpoints.content_hash(base)
    assert h == checkpoints.content_hash({"params": {"w": jnp.arange(6.0, dtype=jnp.float32).reshape(2, 3)}})
    flipped = base["params"]["w"].copy()
    flipped.view(np.uint32)[0, 0] ^= 1  # one bit
    assert checkpoints.content_hash({"params": {"w": flipped}}) != h
    assert checkpoints.content_hash({"params": {"w": base["params"]["w"].reshape(3, 2)}}) != h
    assert checkpoints.content_hash({"params": {"w": base["params"]["w"].astype(np.int32)}}) != h
    assert checkpoints.content_hash({"params": {"v": base["params"]["w"]}}) != h
