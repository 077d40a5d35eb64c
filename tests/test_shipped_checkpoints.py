"""The shipped checkpoints load intact and reach their recorded clean metrics.

Each sidecar records the dataset config the detector was trained and tested with. Synthetic
sample i depends only on (seed, split, i), so building just the test split of that config
regenerates exactly the test images, and the clean metrics must match the recorded ones (up to
a different JPEG/Pillow build changing a few pixels).
"""

from __future__ import annotations

import json
import pathlib

import pytest

from rrjax import checkpoints, data, train

# content_sha256 of each shipped detector as trained (read from the format-version-1 sidecars
# before they were converted with `python -m rrjax.checkpoints upgrade`): sweep records and cell
# ids carry these, so a conversion or re-save must never change them.
CONTENT_SHA256 = {
    "meso4": "fb9c3ca328c6049e15f6d458e17ae825eae35bf5e4c6133adb4d3f788cee42aa",
    "meso_inception4": "2552582f59f03e65ff6cd6beb204b4b56b0f5d385974f6689402f78c41946c43",
    "meso4_video": "93a9ec5057d95acc55fbfe133c377a914ada4b2e331f3b9dc4fbad1061112b66",
}
SHIPPED = sorted(p for p in (pathlib.Path(__file__).resolve().parents[1] / "checkpoints").iterdir() if p.is_dir())


def test_the_default_run_has_its_three_detectors():
    assert {p.name for p in SHIPPED} >= set(CONTENT_SHA256)
    assert sum(f.stat().st_size for p in SHIPPED for f in p.rglob("*") if f.is_file()) < 20 * 2**20


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoint_reproduces_its_test_metrics(path, tmp_path):
    detector, variables, meta = checkpoints.load(path)  # verifies the sidecar and the content hash
    assert meta["content_sha256"] == checkpoints.content_hash(variables) == CONTENT_SHA256[path.name]
    assert meta["command"].startswith("PYTHONPATH=. python experiments/train.py")
    config = {**meta["dataset_config"], "train_size": 0, "validation_size": 0}
    source = data.load(meta["dataset"], "test", data_dir=tmp_path, **config)
    got = train.evaluate(detector, variables, data.batches(source, 50, image_size=detector.input_shape[-3]))
    want = meta["metrics"]["test"]
    assert got["n"] == want["n"]
    assert abs(got["acc"] - want["acc"]) <= 0.01, (got, want)
    assert abs(got["auc"] - want["auc"]) <= 0.005, (got, want)
    assert got["acc"] >= 0.9, json.dumps(got)
