"""The Celeb-DF v2 builder on tiny fixture trees: test list, labels, videos, errors."""

from __future__ import annotations

import pytest

from rrjax import data
from tests.data.fixtures import celeb_tree, write_frames


def _records(src):
    return [src[i] for i in range(len(src))]


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


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


@pytest.mark.parametrize("config, match", [
    ({"source": "mp4"}, r"source='mp4'"),
    ({"image_size": 8}, r"image_size=8 is too small"),
])
def test_invalid_config_values(tmp_path, config, match):
    with pytest.raises(ValueError, match=match):
        data.get_builder("celeb_df_v2", data_dir=tmp_path, **config)
