"""Detector checkpoints: round trip, atomic writes, and rejection of bad directories."""

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

from rrjax import checkpoints
from rrjax.checkpoints import _store
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
    assert checkpoints.read_metadata(saved) == meta == checkpoints.verify(saved)
    assert meta["format_version"] == 2 and meta["sidecar_sha256"]
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
    written = []

    def crash(self, directory):  # every file is written; orbax has not committed yet
        written.extend(p.name for p in pathlib.Path(directory).rglob("*"))
        raise KeyboardInterrupt("simulated kill before orbax commits")

    monkeypatch.setattr(ocp.CompositeCheckpointHandler, "finalize", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(tmp_path / "ckpt", det, variables)
    assert {"arrays.orbax-checkpoint-tmp", "sidecar.orbax-checkpoint-tmp", "metadata.json", "_METADATA"} <= set(written)
    assert list(tmp_path.iterdir()) == []


def test_overwrite_keeps_the_old_checkpoint_until_the_new_one_is_swapped_in(saved, trained, monkeypatch):
    det, variables, _ = trained
    before = checkpoints.verify(saved)["content_sha256"]
    doubled = jax.tree_util.tree_map(lambda a: a * 2, variables)

    def crash(a, b):
        assert checkpoints.verify(a)["content_sha256"] == checkpoints.content_hash(doubled)  # new one committed
        assert checkpoints.verify(b)["content_sha256"] == before  # old one still in place
        raise KeyboardInterrupt("simulated kill before the swap")

    monkeypatch.setattr(_store, "exchange", crash)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(saved, det, doubled, overwrite=True)
    assert checkpoints.verify(saved)["content_sha256"] == before
    assert sorted(p.name for p in saved.parent.iterdir()) == ["ckpt"]


def test_overwrite_without_renameat2_falls_back_to_renames(saved, trained, monkeypatch):
    det, variables, _ = trained
    monkeypatch.setattr(_store, "_libc_renameat2", lambda: None)
    doubled = jax.tree_util.tree_map(lambda a: a * 2, variables)
    checkpoints.save(saved, det, doubled, overwrite=True)
    assert checkpoints.verify(saved)["content_sha256"] == checkpoints.content_hash(doubled)
    assert sorted(p.name for p in saved.parent.iterdir()) == ["ckpt"]


def _array_files(path):
    """The arrays item's files, largest (the one holding the numbers) last."""
    files = [p for p in (path / checkpoints.ARRAYS).rglob("*") if p.is_file() and p.stat().st_size > 0]
    return sorted(files, key=lambda p: (p.stat().st_size, p.as_posix()))


def test_partial_copy_is_rejected(saved, trained):
    sidecar = saved / checkpoints.SIDECAR_ITEM / checkpoints.SIDECAR
    text = sidecar.read_text()
    sidecar.unlink()
    with pytest.raises(ValueError, match="is incomplete: the sidecar sidecar/metadata.json is missing"):
        checkpoints.load(saved, detector=trained[0])
    with pytest.raises(ValueError, match="is incomplete"):
        checkpoints.read_metadata(saved)
    sidecar.write_text(text)
    _array_files(saved)[-1].unlink()
    with pytest.raises(ValueError, match=r"is corrupt: orbax could not read arrays/ \(.+\); a file under it is missing"):
        checkpoints.load(saved, detector=trained[0])
    import shutil

    shutil.rmtree(saved / checkpoints.ARRAYS)
    with pytest.raises(ValueError, match="is incomplete: arrays/ is missing"):
        checkpoints.verify(saved)


def test_truncated_array_file_is_rejected(saved, trained):
    victim = _array_files(saved)[-1]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"is corrupt: orbax could not read arrays/ \(.+\); a file under it is missing, truncated or modified; re-create it"):
        checkpoints.load(saved, detector=trained[0])


def test_garbage_of_the_same_size_is_rejected(saved, trained):
    victim = _array_files(saved)[-1]
    victim.write_bytes(os.urandom(victim.stat().st_size))
    with pytest.raises(ValueError, match=r"is corrupt: (orbax could not read|the restored arrays' content hash).*re-create it"):
        checkpoints.load(saved, detector=trained[0])


def test_edited_sidecar_and_garbage_sidecar_are_rejected(saved, trained):
    sidecar = saved / checkpoints.SIDECAR_ITEM / checkpoints.SIDECAR
    meta = json.loads(sidecar.read_text())
    meta["metrics"]["acc"] = 0.99
    sidecar.write_text(json.dumps(meta, indent=2))
    with pytest.raises(ValueError, match="sidecar sidecar/metadata.json was edited after the checkpoint was written"):
        checkpoints.read_metadata(saved)
    sidecar.write_bytes(b"\x00\xffnot json")
    with pytest.raises(ValueError, match="the sidecar sidecar/metadata.json is not valid JSON"):
        checkpoints.load(saved, detector=trained[0])


def test_swapped_arrays_fail_the_content_hash(tmp_path, trained):
    # Every file is a valid orbax file, but the arrays are another checkpoint's: only the hash of
    # the restored numbers can tell.
    det, variables, _ = trained
    a = checkpoints.save(tmp_path / "a", det, variables)
    b = checkpoints.save(tmp_path / "b", det, jax.tree_util.tree_map(lambda v: v + 1, variables))
    import shutil

    shutil.rmtree(a / checkpoints.ARRAYS)
    shutil.copytree(b / checkpoints.ARRAYS, a / checkpoints.ARRAYS)
    with pytest.raises(ValueError, match="content hash differs from the sidecar's"):
        checkpoints.load(a, detector=det)
    with pytest.raises(ValueError, match=r"content hash differs from the sidecar's \(the arrays were modified"):
        checkpoints.verify(a)  # no detector needed


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


def _write_v1(path, det, variables, **extra):
    """A checkpoint as rrjax wrote it before format version 2 (metadata.json, arrays/ and a
    COMPLETE manifest of every file's size and SHA-256), written here independently of rrjax."""
    tree = jax.tree_util.tree_map(np.asarray, variables)
    path.mkdir(parents=True)
    ckptr = ocp.StandardCheckpointer()
    ckptr.save(path / "arrays", tree)
    ckptr.wait_until_finished()
    ckptr.close()
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    arrays = sorted(({"path": "/".join(k.key for k in kp), "shape": list(a.shape), "dtype": a.dtype.name}
                     for kp, a in flat), key=lambda d: d["path"])
    digest = checkpoints.content_hash(tree)
    meta = {"format": checkpoints.FORMAT, "format_version": 1, "model": det.name, "config": dict(det.config),
            "input_shape": list(det.input_shape), "param_count": 1, "arrays": arrays, "content_sha256": digest,
            "versions": {"rrjax": "0.0.1"}, "created_utc": "2025-01-01T00:00:00+00:00", **extra}
    (path / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    files = {f.relative_to(path).as_posix(): {"size": f.stat().st_size, "sha256": hashlib.sha256(f.read_bytes()).hexdigest()}
             for f in sorted(path.rglob("*")) if f.is_file()}
    marker = {"format": checkpoints.FORMAT, "format_version": 1, "content_sha256": digest, "files": files}
    (path / "COMPLETE").write_text(json.dumps(marker))
    return path, meta


def _upgrade(*paths):
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(__file__).resolve().parents[1]), "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, "-m", "rrjax.checkpoints", "upgrade", *map(str, paths)], env=env,
                          capture_output=True, text=True, timeout=300)


def test_version_1_checkpoints_name_the_upgrade_command_which_keeps_metadata_and_weights(tmp_path, trained):
    det, variables, x = trained
    old, v1_meta = _write_v1(tmp_path / "old ckpt", det, variables, dataset="toy", metrics={"acc": 0.5})
    for call in (checkpoints.load, checkpoints.verify, checkpoints.read_metadata):
        with pytest.raises(ValueError) as err:
            call(old)
        assert "\n" not in str(err.value) and str(err.value).endswith(
            f"format version 1, which this rrjax no longer reads; convert it once, keeping its metadata and "
            f"weights: python -m rrjax.checkpoints upgrade '{old}'"), str(err.value)
    proc = _upgrade(old)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"content_sha256 {v1_meta['content_sha256']}" in proc.stdout
    _, restored, meta = checkpoints.load(old, detector=det)
    np.testing.assert_array_equal(np.asarray(det.apply(restored, x)), np.asarray(det.apply(variables, x)))
    assert meta["content_sha256"] == v1_meta["content_sha256"] == checkpoints.content_hash(variables)
    assert {k: v for k, v in meta.items() if k not in ("format_version", "upgraded", "sidecar_sha256")} == {
        k: v for k, v in v1_meta.items() if k != "format_version"}
    assert meta["format_version"] == 2 and meta["upgraded"]["from_format_version"] == 1
    assert sorted(p.name for p in old.parent.iterdir()) == ["old ckpt"]
    proc = _upgrade(old)  # already upgraded: one line, exit status 2
    assert proc.returncode == 2 and proc.stderr.strip().endswith("is not a version-1 rrjax checkpoint (it has no COMPLETE marker)")


def test_upgrade_refuses_a_modified_version_1_checkpoint(tmp_path, trained):
    det, variables, _ = trained
    old, meta = _write_v1(tmp_path / "old", det, variables)
    (old / "metadata.json").write_text(json.dumps({**meta, "dataset": "forged"}))
    proc = _upgrade(old)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "is corrupt: metadata.json does not match its COMPLETE marker" in last, proc.stderr
    old, meta = _write_v1(tmp_path / "old2", det, variables)
    other = jax.tree_util.tree_map(lambda a: a + 1, variables)
    import shutil

    shutil.rmtree(old / "arrays")
    _write_v1(tmp_path / "other", det, other)
    shutil.copytree(tmp_path / "other" / "arrays", old / "arrays")
    with pytest.raises(ValueError, match="content hash differs from the sidecar's"):
        checkpoints.upgrade(old)
    assert (old / "COMPLETE").is_file()  # left as it was
