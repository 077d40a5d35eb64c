"""The DeepfakeBench builder: its dataset JSON, re-rooted frame paths, splits, labels, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rrjax import data
from rrjax.data import readers
from tests.data.fixtures import write_frames


def _records(src):
    return [src[i] for i in range(len(src))]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _dfb_ff_json(path: Path, frames_root: str, n_frames: int = 6) -> None:
    """A FaceForensics-style DeepfakeBench JSON (with a compression level), frames listed
    out of order and under an absolute root from another machine."""
    def video(label, rel):
        return {"label": label, "frames": [f"{frames_root}/{rel}/{i:04d}.png" for i in reversed(range(n_frames))]}
    ds = {"FF-real": {"train": {"c23": {"000": video("FF-real", "FaceForensics++/original_sequences/youtube/c23/frames/000")}},
                      "val": {"c23": {}},
                      "test": {"c23": {"002": video("FF-real", "FaceForensics++/original_sequences/youtube/c23/frames/002")}}},
          "FF-DF": {"train": {"c23": {"000_001": video("FF-DF", "FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/000_001")}},
                    "val": {"c23": {"002_003": video("FF-DF", "FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/002_003")}},
                    "test": {"c23": {}}}}
    path.write_text(json.dumps({"FF-DF": ds}))


def _dfb_tree(rgb: Path) -> None:
    for rel, value in (("original_sequences/youtube/c23/frames/000", 10), ("original_sequences/youtube/c23/frames/002", 10),
                       ("manipulated_sequences/Deepfakes/c23/frames/000_001", 100),
                       ("manipulated_sequences/Deepfakes/c23/frames/002_003", 100)):
        write_frames(rgb / "FaceForensics++" / rel, 6, value, size=(16, 16))


def test_deepfakebench_json_rerooted_paths_splits_and_labels(tmp_path):
    rgb = tmp_path / "rgb"
    _dfb_tree(rgb)
    _dfb_ff_json(tmp_path / "FF-DF.json", "/home/someone/DeepfakeBench/datasets/rgb")
    kw = dict(data_dir=tmp_path / "dd", manual_dir=rgb, json_path=tmp_path / "FF-DF.json", image_size=16,
              frames_per_video=3)
    train = _records(data.load("deepfakebench", "train", **kw))
    val = _records(data.load("deepfakebench", "validation", **kw))
    test = _records(data.load("deepfakebench", "test", **kw))
    assert [(_text(r["video"]), r["label"], r["frame_index"]) for r in train] == [
        ("FF-real/000", 0, 0), ("FF-real/000", 0, 2), ("FF-real/000", 0, 4),
        ("FF-DF/000_001", 1, 0), ("FF-DF/000_001", 1, 2), ("FF-DF/000_001", 1, 4)]
    # Frames are sorted by name (the JSON lists them reversed), so frame k holds value base + k.
    assert [int(r["image"][0, 0, 0]) for r in train] == [10, 12, 14, 100, 102, 104]
    assert {_text(r["video"]) for r in val} == {"FF-DF/002_003"}
    assert {_text(r["video"]) for r in test} == {"FF-real/002"}
    # PNG frames already at image_size are stored byte for byte.
    original = (rgb / "FaceForensics++/original_sequences/youtube/c23/frames/000/0000.png").read_bytes()
    assert readers.read_frame(rgb / "FaceForensics++/original_sequences/youtube/c23/frames/000/0000.png", 16) == original


def test_deepfakebench_errors_and_missing_frames(tmp_path):
    rgb = tmp_path / "rgb"
    _dfb_tree(rgb)
    _dfb_ff_json(tmp_path / "FF-DF.json", "/elsewhere/rgb")
    with pytest.raises(ValueError, match=r"compression='c40' is not in .*expected one of \['c23'\]"):
        data.load("deepfakebench", "train", data_dir=tmp_path / "dd", manual_dir=rgb,
                  json_path=tmp_path / "FF-DF.json", compression="c40")
    with pytest.raises(data.LayoutError, match=r"DeepfakeBench frames layout not found"):
        data.load("deepfakebench", "train", data_dir=tmp_path / "dd", manual_dir=tmp_path / "dd",
                  json_path=tmp_path / "FF-DF.json")
    with pytest.raises(data.LayoutError, match=r"missing.json"):
        data.load("deepfakebench", "train", data_dir=tmp_path / "dd", manual_dir=rgb, json_path="missing.json")
    # Two listed frames are gone: counted in a warning, the rest is built.
    (rgb / "FaceForensics++/original_sequences/youtube/c23/frames/000/0001.png").unlink()
    (rgb / "FaceForensics++/original_sequences/youtube/c23/frames/000/0003.png").unlink()
    with pytest.warns(data.SkippedFilesWarning, match=r"2 listed frame files that do not exist"):
        src = data.load("deepfakebench", "train", data_dir=tmp_path / "dd2", manual_dir=rgb,
                        json_path=tmp_path / "FF-DF.json", image_size=16, frames_per_video=0)
    assert len(src) == 4 + 6


def test_deepfakebench_celebdf_style_json_without_compression(tmp_path):
    rgb = tmp_path / "rgb"
    for rel, value in (("Celeb-DF-v2/Celeb-real/frames/id0_0000", 10), ("Celeb-DF-v2/Celeb-synthesis/frames/id0_id1_0000", 100)):
        write_frames(rgb / rel, 3, value, size=(16, 16))
    def video(label, rel):
        return {"label": label, "frames": [f"{rel}/{i:04d}.png" for i in range(3)]}  # relative paths
    js = {"Celeb-DF-v2": {
        "CelebDFv2_real": {"train": {}, "val": {}, "test": {"id0_0000": video("CelebDFv2_real", "Celeb-DF-v2/Celeb-real/frames/id0_0000")}},
        "CelebDFv2_fake": {"train": {}, "val": {}, "test": {"id0_id1_0000": video("CelebDFv2_fake", "Celeb-DF-v2/Celeb-synthesis/frames/id0_id1_0000")}}}}
    (rgb / "Celeb-DF-v2.json").write_text(json.dumps(js))
    recs = _records(data.load("deepfakebench", "test", data_dir=tmp_path / "dd", manual_dir=rgb,
                              json_path="Celeb-DF-v2.json", image_size=16))
    assert sorted((_text(r["method"]), r["label"]) for r in recs) == [("CelebDFv2_fake", 1)] * 3 + [("CelebDFv2_real", 0)] * 3


def test_invalid_json_path(tmp_path):
    with pytest.raises(ValueError, match=r"json_path='FF-DF.yaml'"):
        data.get_builder("deepfakebench", data_dir=tmp_path, json_path="FF-DF.yaml")


def test_listed_paths_outside_manual_dir_are_links_out(tmp_path):
    # A JSON path that exists only outside manual_dir is treated like a symlink out of it.
    rgb, other = tmp_path / "rgb", tmp_path / "other"
    write_frames(rgb / "real" / "a", 2, 10, size=(16, 16))
    write_frames(other / "fake" / "b", 2, 100, size=(16, 16))
    js = {"X": {
        "X_real": {"test": {"a": {"label": "DF_real", "frames": [f"real/a/{i:04d}.png" for i in range(2)]}}},
        "X_fake": {"test": {"b": {"label": "DF_fake",
                                  "frames": [str(other / f"fake/b/{i:04d}.png") for i in range(2)]}}}}}
    (tmp_path / "X.json").write_text(json.dumps(js))
    kw = dict(manual_dir=rgb, json_path=tmp_path / "X.json", image_size=16, frames_per_video=0)
    with pytest.warns(data.SkippedFilesWarning, match=r"skipped 2 files whose real path is outside manual_dir"):
        recs = _records(data.load("deepfakebench", "test", data_dir=tmp_path / "dd", **kw))
    assert [(r["label"], int(r["image"][0, 0, 0])) for r in recs] == [(0, 10), (0, 11)]
    recs = _records(data.load("deepfakebench", "test", data_dir=tmp_path / "dd", follow_symlinks=True, **kw))
    assert sorted((r["label"], int(r["image"][0, 0, 0])) for r in recs) == [(0, 10), (0, 11), (1, 100), (1, 101)]
