"""The FaceForensics++ builder on tiny fixture trees: layouts, splits, labels, grouping, errors."""

from __future__ import annotations

import pytest

from rrjax import data
from rrjax.data import faceforensics
from tests.data.fixtures import FF_PAIRS, ff_tree


def _records(src):
    return [src[i] for i in range(len(src))]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


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


def test_faceforensics_configs_with_different_methods_do_not_collide(tmp_path):
    names = {data.get_builder("faceforensics", data_dir=tmp_path, methods=[m]).builder_config.name
             for m in faceforensics.FF_METHODS}
    assert len(names) == len(faceforensics.FF_METHODS)


@pytest.mark.parametrize("config, match", [
    ({"compression": "c30"}, r"compression='c30'.*'c23', 'c40', 'raw'"),
    ({"methods": ["DeepFakes"]}, r"methods='DeepFakes'.*'Deepfakes'"),
    ({"frames_per_video": 2, "clip_length": 4}, r"frames_per_video=2 < clip_length=4"),
])
def test_invalid_config_values(tmp_path, config, match):
    with pytest.raises(ValueError, match=match):
        data.get_builder("faceforensics", data_dir=tmp_path, **config)
