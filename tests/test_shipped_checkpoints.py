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

SHIPPED = sorted(p for p in (pathlib.Path(__file__).resolve().parents[1] / "checkpoints").iterdir() if p.is_dir())


def test_the_default_run_has_its_three_detectors():
    assert {p.name for p in SHIPPED} >= {"meso4", "meso_inception4", "meso4_video"}
    assert sum(f.stat().st_size for p in SHIPPED for f in p.rglob("*") if f.is_file()) < 20 * 2**20


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_checkpoint_reproduces_its_test_metrics(path, tmp_path):
    detector, variables, meta = checkpoints.load(path)  # verifies every file and the content hash
    assert meta["command"].startswith("PYTHONPATH=. python experiments/train.py")
    config = {**meta["dataset_config"], "train_size": 0, "validation_size": 0}
    source = data.load(meta["dataset"], "test", data_dir=tmp_path, **config)
    got = train.evaluate(detector, variables, data.batches(source, 50, image_size=detector.input_shape[-3]))
    want = meta["metrics"]["test"]
    assert got["n"] == want["n"]
    assert abs(got["acc"] - want["acc"]) <= 0.01, (got, want)
    assert abs(got["auc"] - want["auc"]) <= 0.005, (got, want)
    assert got["acc"] >= 0.9, json.dumps(got)
