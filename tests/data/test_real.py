"""Real-dataset builders on tiny fixture trees: layouts, splits, labels, grouping, errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from rrjax import data
from rrjax.data import real, render
from tests.data.fixtures import FF_PAIRS, celeb_tree, ff_tree, write_frames


def _records(src):
    return [src[i] for i in range(len(src))]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


# ----------------------------------------------------------------------------- sampling rules


@pytest.mark.parametrize("total, n, want", [
    (10, 3, [0, 3, 6]),        # step = 10 // 3 = 3
    (100, 32, list(range(0, 96, 3))),  # DeepfakeBench: step 3, first 32 of range(0, 100, 3)
    (5, 32, [0, 1, 2, 3, 4]),  # fewer frames than asked: all of them
    (7, 0, list(range(7))),    # 0 = every frame
])
def test_sample_indices_follow_deepfakebench(total, n, want):
    assert real.sample_indices(total, n) == want


def test_clip_starts_are_even_and_fit():
    assert real.clip_starts(10, 4, 8) == [0, 6]          # 2 clips, first and last possible start
    assert real.clip_starts(10, 4, 4) == [0]
    assert real.clip_starts(3, 4, 8) == []               # too short for one clip
    assert real.clip_starts(12, 4, 0) == [0, 4, 8]       # 0 = all disjoint clips


# ----------------------------------------------------------------------------- FaceForensics++


def test_faceforensics_frames_splits_labels_and_grouping(tmp_path):
    root = ff_tree(tmp_path / "ff", frames=5)
    kw = dict(data_dir=tmp_path / "dd", manual_dir=root, methods=["Deepfakes", "Face2Face"],
              image_size=16, frames_per_video=2)
    seen = {}
    for split, pairs in (("train", FF_PAIRS["train"]), ("validation", FF_PAIRS["val"]), ("test", FF_PAIRS["test"])):
        recs = _records(data.load("faceforensics", split, **kw))
        a, b = pairs[0]
        # 2 real videos + 2 fakes per method, 2 frames each (5 frames, step 2 -> frames 0, 2).
        assert len(recs) == (2 + 2 * 2) * 2
        videos = {_text(r["video"]) for r in recs}
        assert videos == {f"original_sequences/youtube/c23/{a}", f"original_sequences/youtube/c23/{b}"} | {
            f"manipulated_sequences/{m}/c23/{x}" for m in ("Deepfakes", "Face2Face") for x in (f"{a}_{b}", f"{b}_{a}")}
        for r in recs:
            fake = _text(r["video"]).startswith("manipulated")
            assert r["label"] == int(fake)
            assert _text(r["method"]) == (_text(r["video"]).split("/")[1] if fake else "youtube")
            assert r["frame_index"] in (0, 2)
            assert r["image"].shape == (16, 16, 3)
            # The fixture's pixel value is base + frame number; resizing keeps flat frames flat.
            assert int(r["image"][0, 0, 0]) == (100 if fake else 10) + r["frame_index"]
        for r in recs:
            seen.setdefault(_text(r["video"]), set()).add(r["video_id"])
    # One id per video, distinct across videos, and frames of a video share it.
    assert all(len(ids) == 1 for ids in seen.values())
    assert len({next(iter(ids)) for ids in seen.values()}) == len(seen)


def test_faceforensics_official_images_folder_and_top_level_lists(tmp_path):
    root = ff_tree(tmp_path / "ff", kind="images", methods=("NeuralTextures",), split_dir=".", frames=3)
    recs = _records(data.load("faceforensics", "test", data_dir=tmp_path / "dd", manual_dir=root,
                              methods="NeuralTextures", image_size=16, frames_per_video=0))
    assert len(recs) == (2 + 2) * 3
    assert sorted(r["label"] for r in recs) == [0] * 6 + [1] * 6


def test_faceforensics_from_videos(tmp_path):
    root = ff_tree(tmp_path / "ff", kind="videos", methods=("FaceSwap",), frames=6)
    recs = _records(data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root,
                              methods=["FaceSwap"], source="videos", image_size=16, frames_per_video=3))
    assert len(recs) == 4 * 3
    for r in recs:
        assert r["frame_index"] in (0, 2, 4)  # 6 frames, step 2
        base = 100 if r["label"] else 10
        # MPEG-4 is lossy: the decoded flat frame is within a few levels of what was written.
        assert abs(int(r["image"].astype(int).mean()) - (base + 10 * r["frame_index"])) <= 4


def test_faceforensics_clips(tmp_path):
    root = ff_tree(tmp_path / "ff", methods=("Deepfakes",), frames=10)
    src = data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root, methods=["Deepfakes"],
                    image_size=16, frames_per_video=8, clip_length=4)
    recs = _records(src)
    assert len(recs) == 4 * 2  # 2 clips per video, starts 0 and 6
    for r in recs:
        assert r["frame_index"] in (0, 6)
        values = [int(f[0, 0, 0]) for f in r["clip"]]
        base = 100 if r["label"] else 10
        assert values == [base + r["frame_index"] + k for k in range(4)]  # consecutive frames
    batch = next(data.batches(src, 3))
    assert batch["x"].shape == (3, 4, 16, 16, 3)


def test_faceforensics_missing_layout_lists_what_is_expected(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.LayoutError) as err:
        data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=tmp_path / "empty")
    text = str(err.value)
    for expected in ("original_sequences/youtube/c23/frames", "original_sequences/youtube/c23/videos",
                     "manipulated_sequences/Deepfakes/c23", "manipulated_sequences/NeuralTextures/c23",
                     "splits/train.json", "splits/test.json"):
        assert expected in text


def test_faceforensics_wrong_compression_names_it_and_shows_what_exists(tmp_path):
    root = ff_tree(tmp_path / "ff", methods=("Deepfakes",), frames=2)
    with pytest.raises(data.LayoutError) as err:
        data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root, methods=["Deepfakes"],
                  compression="c40")
    text = str(err.value)
    assert "original_sequences/youtube/c40/frames" in text
    assert "original_sequences/youtube/c23/" in text  # listed under "Found these folders"
    assert "splits/train.json" not in text.split("Found")[0]  # lists exist, so not reported


def test_unreadable_frames_are_skipped_and_counted(tmp_path):
    root = ff_tree(tmp_path / "ff", methods=("Deepfakes",), frames=4)
    frames = root / "manipulated_sequences/Deepfakes/c23/frames"
    (frames / "000_001" / "0000.png").write_bytes(b"not a png")
    (frames / "001_000" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.warns(data.SkippedFilesWarning, match=r"skipped 2 unreadable frame files"):
        src = data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root,
                        methods=["Deepfakes"], image_size=16, frames_per_video=0)
    assert len(src) == 4 * 4 - 2


def test_missing_video_decoder_gives_a_clear_error(tmp_path, monkeypatch):
    root = ff_tree(tmp_path / "ff", kind="videos", methods=("Deepfakes",), frames=2)
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(data.VideoDecoderUnavailableError, match=r"pip install av.*source='frames'"):
        data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root, methods=["Deepfakes"],
                  source="videos", image_size=16)


def test_unreadable_videos_are_skipped_and_counted(tmp_path):
    root = ff_tree(tmp_path / "ff", kind="videos", methods=("Deepfakes",), frames=3)
    (root / "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4").write_bytes(b"\x00" * 64)
    with pytest.warns(data.SkippedFilesWarning, match=r"skipped 1 unreadable videos"):
        src = data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root,
                        methods=["Deepfakes"], image_size=16, frames_per_video=0)
    assert len(src) == 3 * 3


# ----------------------------------------------------------------------------- Celeb-DF v2


def test_celebdf_frames_test_list_and_labels(tmp_path):
    celeb_tree(tmp_path / "Celeb-DF-v2", frames=4)
    # manual_dir may also be the folder that holds Celeb-DF-v2/.
    kw = dict(data_dir=tmp_path / "dd", manual_dir=tmp_path, image_size=16, frames_per_video=2)
    test = _records(data.load("celeb_df_v2", "test", **kw))
    train = _records(data.load("celeb_df_v2", "train", **kw))
    assert {_text(r["video"]) for r in test} == {"Celeb-real/id0_0001", "Celeb-synthesis/id0_id1_0001",
                                                 "YouTube-real/00001"}
    assert {_text(r["video"]) for r in train} == {"Celeb-real/id0_0000", "Celeb-synthesis/id0_id1_0000",
                                                  "YouTube-real/00000"}
    for r in test + train:
        assert r["label"] == int(_text(r["video"]).startswith("Celeb-synthesis"))
    assert len(test) == len(train) == 3 * 2


def test_celebdf_from_videos(tmp_path):
    root = celeb_tree(tmp_path / "cdf", kind="videos", frames=3)
    recs = _records(data.load("celeb_df_v2", "test", data_dir=tmp_path / "dd", manual_dir=root,
                              image_size=16, frames_per_video=0))
    assert len(recs) == 3 * 3
    assert sorted(_text(r["method"]) for r in recs[::3]) == ["Celeb-real", "Celeb-synthesis", "YouTube-real"]


def test_celebdf_inconsistent_or_malformed_list(tmp_path):
    root = celeb_tree(tmp_path / "a", listing=["0 Celeb-real/id0_0001.mp4"])  # says fake, folder says real
    with pytest.raises(data.LayoutError, match=r"labels Celeb-real/id0_0001 as fake"):
        data.load("celeb_df_v2", "test", data_dir=tmp_path / "dd", manual_dir=root)
    root = celeb_tree(tmp_path / "b", listing=["Celeb-real/id0_0001.mp4"])
    with pytest.raises(data.LayoutError, match=r"List_of_testing_videos.txt:1"):
        data.load("celeb_df_v2", "test", data_dir=tmp_path / "dd", manual_dir=root)


def test_celebdf_missing_layout(tmp_path):
    write_frames(tmp_path / "cdf" / "Celeb-real" / "frames" / "id0_0000", 2, 0)
    with pytest.raises(data.LayoutError) as err:
        data.load("celeb_df_v2", "test", data_dir=tmp_path / "dd", manual_dir=tmp_path / "cdf")
    text = str(err.value)
    assert "Celeb-synthesis/frames/<video>/*.png  or  Celeb-synthesis/*.mp4" in text
    assert "List_of_testing_videos.txt" in text
    assert "Celeb-real/frames/<video>" not in text  # present, so not reported


# ----------------------------------------------------------------------------- DeepfakeBench


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
    assert real.read_frame(rgb / "FaceForensics++/original_sequences/youtube/c23/frames/000/0000.png", 16) == original


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


# ----------------------------------------------------------------------------- config validation


@pytest.mark.parametrize("name, config, match", [
    ("faceforensics", {"compression": "c30"}, r"compression='c30'.*'c23', 'c40', 'raw'"),
    ("faceforensics", {"methods": ["DeepFakes"]}, r"methods='DeepFakes'.*'Deepfakes'"),
    ("faceforensics", {"frames_per_video": 2, "clip_length": 4}, r"frames_per_video=2 < clip_length=4"),
    ("celeb_df_v2", {"source": "mp4"}, r"source='mp4'"),
    ("deepfakebench", {"json_path": "FF-DF.yaml"}, r"json_path='FF-DF.yaml'"),
    ("celeb_df_v2", {"image_size": 8}, r"image_size=8 is too small"),
])
def test_invalid_config_values(tmp_path, name, config, match):
    with pytest.raises(ValueError, match=match):
        data.get_builder(name, data_dir=tmp_path, **config)


def test_faceforensics_configs_with_different_methods_do_not_collide(tmp_path):
    names = {data.get_builder("faceforensics", data_dir=tmp_path, methods=[m]).builder_config.name
             for m in real.FF_METHODS}
    assert len(names) == len(real.FF_METHODS)


def test_manual_dataset_without_manual_dir(tmp_path):
    with pytest.raises(ValueError, match=r"manual_dir=None is not a folder.*train.json"):
        data.load("faceforensics", "train", data_dir=tmp_path)


def test_video_ids_are_stable_hashes(tmp_path):
    # Same video name and method -> same id in every config and compression level.
    a = real.VideoEntry("original_sequences/youtube/c23/000", 0, "youtube", "train")
    b = real.VideoEntry("original_sequences/youtube/c40/000", 0, "youtube", "test")
    c = real.VideoEntry("manipulated_sequences/Deepfakes/c23/000", 1, "Deepfakes", "train")
    assert a.video_id == b.video_id != c.video_id
    assert 0 <= a.video_id < 2**63
    assert np.int64(a.video_id) == a.video_id


def test_frames_of_any_size_are_fit_to_image_size(tmp_path):
    # A 30x60 frame: shorter side to 16 (-> 16x32), centre crop 16x16; flat stays flat.
    write_frames(tmp_path / "f", 1, 50, size=(30, 60))
    stored = real.read_frame(tmp_path / "f" / "0000.png", 16)
    pixels = render.decode_image(stored)
    assert pixels.shape == (16, 16, 3) and np.all(pixels == 50)
