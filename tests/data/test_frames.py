"""What the real-dataset builders share: sampling rules, video ids, skipped-file accounting, refused files."""

from __future__ import annotations

import json
import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rrjax import data
from rrjax.data import frames, readers
from tests.data.fixtures import ff_tree, no_hang, write_frames, write_png_bomb, write_video

REPO = Path(__file__).resolve().parents[2]
FF_DF = dict(methods=["Deepfakes"], image_size=16, frames_per_video=0)  # 4 train videos, every frame


def _records(src):
    return [src[i] for i in range(len(src))]


# ----------------------------------------------------------------------------- sampling rules


@pytest.mark.parametrize("total, n, want", [
    (10, 3, [0, 3, 6]),        # step = 10 // 3 = 3
    (100, 32, list(range(0, 96, 3))),  # DeepfakeBench: step 3, first 32 of range(0, 100, 3)
    (5, 32, [0, 1, 2, 3, 4]),  # fewer frames than asked: all of them
    (7, 0, list(range(7))),    # 0 = every frame
])
def test_sample_indices_follow_deepfakebench(total, n, want):
    assert frames.sample_indices(total, n) == want


def test_clip_starts_are_even_and_fit():
    assert frames.clip_starts(10, 4, 8) == [0, 6]          # 2 clips, first and last possible start
    assert frames.clip_starts(10, 4, 4) == [0]
    assert frames.clip_starts(3, 4, 8) == []               # too short for one clip
    assert frames.clip_starts(12, 4, 0) == [0, 4, 8]       # 0 = all disjoint clips


# ----------------------------------------------------------------------------- skipped files


def test_unreadable_frames_are_skipped_and_counted(tmp_path):
    root = ff_tree(tmp_path / "ff", methods=("Deepfakes",), frames=4)
    folder = root / "manipulated_sequences/Deepfakes/c23/frames"
    (folder / "000_001" / "0000.png").write_bytes(b"not a png")
    (folder / "001_000" / "0002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
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


def test_video_ids_are_stable_hashes(tmp_path):
    # Same video name and method -> same id in every config and compression level.
    a = frames.VideoEntry("original_sequences/youtube/c23/000", 0, "youtube", "train")
    b = frames.VideoEntry("original_sequences/youtube/c40/000", 0, "youtube", "test")
    c = frames.VideoEntry("manipulated_sequences/Deepfakes/c23/000", 1, "Deepfakes", "train")
    assert a.video_id == b.video_id != c.video_id
    assert 0 <= a.video_id < 2**63
    assert np.int64(a.video_id) == a.video_id


# ----------------------------------------------------------------------------- refused files

# Builds the FaceForensics++ train split twice (default config, then follow_symlinks=True)
# and prints the record counts and SkippedFilesWarning texts as JSON.
_BUILD_BOTH = """
import json, sys, warnings
from rrjax import data
root, out = sys.argv[1], sys.argv[2]
result = {}
for follow in ({}, {"follow_symlinks": True}):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        src = data.load("faceforensics", "train", data_dir=f"{out}/{bool(follow)}", manual_dir=root,
                        methods=["Deepfakes"], image_size=16, frames_per_video=0, **follow)
    result[str(bool(follow))] = [len(src), [str(w.message) for w in caught if w.category is data.SkippedFilesWarning]]
print(json.dumps(result))
"""


def _limit_memory():  # a reader that drains /dev/zero must fail fast, not take the machine's memory
    resource.setrlimit(resource.RLIMIT_AS, (4 * 2**30, 4 * 2**30))


def test_fifo_devices_and_dev_zero_link_are_refused_without_blocking(tmp_path):
    # Before: read_bytes() on the FIFO waits forever for a writer, and on /dev/zero reads without
    # end. The build runs in a subprocess with a timeout and a memory cap, so neither can hang the suite.
    root = ff_tree(tmp_path / "ff", methods=("Deepfakes",), frames=4)
    fake = root / "manipulated_sequences/Deepfakes/c23/frames"
    (fake / "000_001" / "0000.png").unlink()
    os.mkfifo(fake / "000_001" / "0000.png")
    (fake / "001_000" / "0001.png").unlink()
    (fake / "001_000" / "0001.png").symlink_to("/dev/zero")
    devices = 1
    try:  # a character device inside the tree (needs CAP_MKNOD; skipped when not allowed)
        real = root / "original_sequences/youtube/c23/frames/000/0002.png"
        real.unlink()
        os.mknod(real, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # what /dev/zero is
        devices = 2
    except PermissionError:
        write_frames(real.parent, 4, 10)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    try:
        proc = subprocess.run([sys.executable, "-c", _BUILD_BOTH, str(root), str(tmp_path / "dd")], env=env,
                              capture_output=True, text=True, timeout=300, preexec_fn=_limit_memory)
    except subprocess.TimeoutExpired:
        pytest.fail("building a split with a FIFO / device among the frames did not finish in 300 s")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    n, (text,) = result["False"]
    assert n == 4 * 4 - devices - 1
    assert f"{devices} entries that are not regular files" in text
    assert "1 files whose real path is outside manual_dir (pass follow_symlinks=True" in text
    assert "0001.png" in text.split("outside manual_dir")[1]  # the example named is the /dev/zero link
    # Followed, the link leads to a device: refused as such, still not read.
    n, (text,) = result["True"]
    assert n == 4 * 4 - devices - 1
    assert f"{devices + 1} entries that are not regular files" in text and "outside" not in text


def _outside_tree(tmp_path):
    """A tree whose frame 0 of video 000_001 and whole video 001_000 are symlinks to files outside it."""
    root = ff_tree(tmp_path / "ff", methods=("Deepfakes",), frames=4)
    elsewhere = tmp_path / "elsewhere"
    write_frames(elsewhere / "frame", 1, 200, size=(16, 16))
    write_frames(elsewhere / "video", 4, 150, size=(16, 16))
    fake = root / "manipulated_sequences/Deepfakes/c23/frames"
    (fake / "000_001" / "0000.png").unlink()
    (fake / "000_001" / "0000.png").symlink_to(elsewhere / "frame" / "0000.png")
    for p in (fake / "001_000").iterdir():
        p.unlink()
    (fake / "001_000").rmdir()
    (fake / "001_000").symlink_to(elsewhere / "video", target_is_directory=True)
    # A link that stays inside manual_dir is an ordinary file.
    (fake / "000_001" / "0001.png").unlink()
    (fake / "000_001" / "0001.png").symlink_to(root / "original_sequences/youtube/c23/frames/000/0001.png")
    return root


def test_symlinks_out_of_manual_dir_are_skipped_unless_followed(tmp_path):
    root = _outside_tree(tmp_path)
    with pytest.warns(data.SkippedFilesWarning, match=r"skipped 5 files whose real path is outside manual_dir "
                                                      r"\(pass follow_symlinks=True to read them\)"):
        recs = _records(data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root, **FF_DF))
    assert len(recs) == 4 * 4 - 5
    inside = [r for r in recs if r["video"] == b"manipulated_sequences/Deepfakes/c23/000_001" or
              r["video"] == "manipulated_sequences/Deepfakes/c23/000_001"]
    assert [(r["frame_index"], int(r["image"][0, 0, 0])) for r in inside] == [(1, 11), (2, 102), (3, 103)]
    recs = _records(data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root,
                              follow_symlinks=True, **FF_DF))
    assert len(recs) == 4 * 4
    values = {(r["video"].decode() if isinstance(r["video"], bytes) else r["video"], r["frame_index"]):
              int(r["image"][0, 0, 0]) for r in recs}
    assert values["manipulated_sequences/Deepfakes/c23/000_001", 0] == 200
    assert [values["manipulated_sequences/Deepfakes/c23/001_000", i] for i in range(4)] == [150, 151, 152, 153]


def test_manual_dir_given_through_a_symlink_is_inside_itself(tmp_path):
    root = ff_tree(tmp_path / "ff", methods=("Deepfakes",), frames=2)
    (tmp_path / "link").symlink_to(root, target_is_directory=True)
    src = data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=tmp_path / "link", **FF_DF)
    assert len(src) == 4 * 2


def test_decompression_bomb_frames_are_skipped_and_counted(tmp_path):
    # 9000 x 9000 is below Pillow's own limit (89,478,485 pixels: no warning, no error), so before
    # this check the 10 KB file was decoded into 243 MB of RGB.
    root = ff_tree(tmp_path / "ff", methods=("Deepfakes",), frames=4)
    bomb = root / "manipulated_sequences/Deepfakes/c23/frames/000_001/0002.png"
    write_png_bomb(bomb, 9000, 9000)
    assert bomb.stat().st_size < 20_000
    with pytest.warns(data.SkippedFilesWarning, match=r"skipped 1 images or videos with more than "
                                                      r"max_pixels=16777216 pixels per frame \(e.g. .*0002.png\)"):
        src = data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root, **FF_DF)
    assert len(src) == 4 * 4 - 1


def test_pixel_and_byte_limits_are_config_fields(tmp_path):
    root = ff_tree(tmp_path / "ff", methods=("Deepfakes",), frames=4)  # frames are 20 x 24 = 480 pixels
    write_frames(root / "original_sequences/youtube/c23/frames/000", 1, 10, size=(30, 40))  # frame 0: 1200
    padded = root / "original_sequences/youtube/c23/frames/001/0003.png"
    padded.write_bytes(padded.read_bytes() + b"\0" * 4000)  # bytes after IEND: still a valid PNG
    with pytest.warns(data.SkippedFilesWarning) as caught:
        src = data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root,
                        max_pixels=1000, max_file_bytes=4000, **FF_DF)
    (text,) = [str(w.message) for w in caught if w.category is data.SkippedFilesWarning]
    assert "1 files larger than max_file_bytes=4000 (e.g. " in text and "0003.png" in text
    assert "1 images or videos with more than max_pixels=1000 pixels per frame" in text
    assert len(src) == 4 * 4 - 2
    src = data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root,
                    max_pixels=1200, max_file_bytes=padded.stat().st_size, **FF_DF)  # limits are inclusive
    assert len(src) == 4 * 4


def test_video_limits_skip_large_and_long_streams(tmp_path):
    root = ff_tree(tmp_path / "ff", kind="videos", methods=("Deepfakes",), frames=6)
    videos = root / "manipulated_sequences/Deepfakes/c23/videos"
    # A 190 KB file whose stream is 4160 x 4160 = 17,305,600 pixels per frame, above the default.
    write_video(videos / "000_001.mp4", 1, 0, size=4160)
    assert (videos / "000_001.mp4").stat().st_size < 1_000_000
    write_video(videos / "001_000.mp4", 7, 100)
    with pytest.warns(data.SkippedFilesWarning, match=r"skipped 1 images or videos with more than "
                                                      r"max_pixels=16777216 pixels per frame \(e.g. .*000_001.mp4"):
        src = data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root, **FF_DF)
    assert len(src) == 6 + 6 + 7
    with pytest.warns(data.SkippedFilesWarning, match=r"skipped 1 images or videos .*; 1 videos with more than "
                                                      r"max_video_frames=6 frames \(e.g. .*001_000.mp4\)"):
        src = data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root,
                        max_video_frames=6, **FF_DF)
    assert len(src) == 6 + 6
    src = data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root,
                    max_video_frames=7, max_pixels=4160 * 4160, **FF_DF)  # limits are inclusive
    assert len(src) == 6 + 6 + 7 + 1
    # Every video of a split refused: a clear error instead of an empty (or tfds-failed) split.
    with pytest.warns(data.SkippedFilesWarning), pytest.raises(
            data.LayoutError, match=r"split 'test' has no readable frames: .*skipped 4 videos with more than "
                                    r"max_video_frames=5 frames"):
        data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root, max_video_frames=5, **FF_DF)


def test_fifo_video_is_refused(tmp_path):
    root = ff_tree(tmp_path / "ff", kind="videos", methods=("Deepfakes",), frames=3)
    fifo = root / "manipulated_sequences/Deepfakes/c23/videos/000_001.mp4"
    fifo.unlink()
    os.mkfifo(fifo)
    limits = readers.Limits(root=root)
    with no_hang(), pytest.raises(readers.FileSkipped) as err:
        readers.read_video(fifo, None, 16, limits)
    assert err.value.reason == "special"
    with no_hang(), pytest.warns(data.SkippedFilesWarning, match=r"skipped 1 entries that are not regular files"):
        src = data.load("faceforensics", "train", data_dir=tmp_path / "dd", manual_dir=root, **FF_DF)
    assert len(src) == 3 * 3


def test_limits_change_the_config_name_and_defaults_keep_it(tmp_path):
    default = data.get_builder("faceforensics", data_dir=tmp_path).builder_config.name
    assert default == "c23_DF+F2F+FS+NT_auto_256px_fpv32_clip0"  # the name before the limits existed
    names = {data.get_builder("faceforensics", data_dir=tmp_path, **kw).builder_config.name
             for kw in ({}, {"follow_symlinks": True}, {"max_pixels": 100}, {"max_file_bytes": 100},
                        {"max_video_frames": 100})}
    assert len(names) == 5  # a build made with other limits is never reused for these


@pytest.mark.parametrize("config, match", [
    ({"follow_symlinks": "yes"}, r"follow_symlinks='yes' is not valid; expected True or False"),
    ({"max_pixels": 0}, r"max_pixels=0 is too small"),
    ({"max_file_bytes": 1.5}, r"max_file_bytes must be an integer"),
    ({"max_video_frames": -1}, r"max_video_frames=-1 is too small"),
])
def test_invalid_limits(tmp_path, config, match):
    for name in ("faceforensics", "celeb_df_v2"):
        with pytest.raises(ValueError, match=match):
            data.get_builder(name, data_dir=tmp_path, **config)
    with pytest.raises(ValueError, match=match):
        data.get_builder("deepfakebench", data_dir=tmp_path, json_path="x.json", **config)
