"""Reading files under manual_dir: re-encoding to image_size, regular files only, size limits."""

from __future__ import annotations

import os
import warnings

import av
import numpy as np
import pytest
from PIL import Image

from rrjax.data import readers, render
from tests.data.fixtures import no_hang, write_frames, write_png_bomb, write_video


def test_frames_of_any_size_are_fit_to_image_size(tmp_path):
    # A 30x60 frame: shorter side to 16 (-> 16x32), centre crop 16x16; flat stays flat.
    write_frames(tmp_path / "f", 1, 50, size=(30, 60))
    stored = readers.read_frame(tmp_path / "f" / "0000.png", 16)
    pixels = render.decode_image(stored)
    assert pixels.shape == (16, 16, 3) and np.all(pixels == 50)


def _reason(call, *args, **kwargs) -> str:
    with pytest.raises(readers.FileSkipped) as err:
        call(*args, **kwargs)
    return err.value.reason


def test_pixel_limit_is_checked_before_decoding_whatever_the_warning_filters(tmp_path):
    # Pillow 13 only warns between MAX_IMAGE_PIXELS (89,478,485) and twice that, and raises above.
    assert Image.MAX_IMAGE_PIXELS == 89_478_485
    write_png_bomb(tmp_path / "warns.png", 10_000, 10_000)    # 1e8: Pillow's warning range
    write_png_bomb(tmp_path / "raises.png", 14_000, 14_000)   # 1.96e8: Pillow's error range
    write_png_bomb(tmp_path / "quiet.png", 9_000, 9_000)      # 8.1e7: Pillow says nothing
    for setting in ("ignore", "error"):
        with warnings.catch_warnings():
            warnings.simplefilter(setting)
            for name in ("warns.png", "raises.png", "quiet.png"):
                assert _reason(readers.read_frame, tmp_path / name, 16) == "pixels"
    # The limit is inclusive and ours: 20 x 24 = 480 pixels.
    write_frames(tmp_path / "f", 1, 7)
    assert _reason(readers.read_frame, tmp_path / "f" / "0000.png", 16, readers.Limits(max_pixels=479)) == "pixels"
    stored = readers.read_frame(tmp_path / "f" / "0000.png", 16, readers.Limits(max_pixels=480))
    assert np.all(render.decode_image(stored) == 7)


def test_byte_limit_is_inclusive_and_bounds_the_read(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(bytes(range(256)) * 4)  # 1024 bytes
    assert readers.read_bytes(path, readers.Limits(max_file_bytes=1024)) == path.read_bytes()
    assert _reason(readers.read_bytes, path, readers.Limits(max_file_bytes=1023)) == "bytes"
    assert readers.DEFAULT_MAX_FILE_BYTES == 64 * 2**20 >= 3 * readers.DEFAULT_MAX_PIXELS  # raw RGB fits


def test_only_regular_files_are_opened(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "dir.png").mkdir()
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nothing")
    with no_hang():
        assert _reason(readers.read_frame, tmp_path / "fifo.png", 16) == "special"
    assert _reason(readers.read_frame, tmp_path / "dir.png", 16) == "special"
    assert _reason(readers.read_frame, tmp_path / "dangling.png", 16) == "unreadable"
    assert _reason(readers.open_regular, "/dev/zero", readers.Limits()) == "special"  # checked, never read
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    assert _reason(readers.open_regular, tmp_path / "zero.png", readers.Limits(root=tmp_path)) == "outside"
    limits = readers.Limits(root=tmp_path, follow_symlinks=True)
    assert _reason(readers.open_regular, tmp_path / "zero.png", limits) == "special"


def test_files_outside_the_root_are_refused_unless_followed(tmp_path):
    write_frames(tmp_path / "outside", 1, 40, size=(16, 16))
    root = tmp_path / "root"
    root.mkdir()
    (root / "link.png").symlink_to(tmp_path / "outside" / "0000.png")
    (root / "sub").symlink_to(tmp_path / "outside", target_is_directory=True)
    for path in (root / "link.png", root / "sub" / "0000.png", root / ".." / "outside" / "0000.png"):
        assert _reason(readers.read_frame, path, 16, readers.Limits(root=root)) == "outside"
        data = readers.read_frame(path, 16, readers.Limits(root=root, follow_symlinks=True))
        assert data == (tmp_path / "outside" / "0000.png").read_bytes()


def test_only_frame_formats_are_decoded(tmp_path):
    # Pillow could decode a TIFF (or run Ghostscript for an EPS) behind a .png name; frames are
    # PNG, JPEG, BMP or WebP only.
    Image.fromarray(np.full((16, 16, 3), 9, np.uint8)).save(tmp_path / "tiff.png", format="TIFF")
    assert Image.open(tmp_path / "tiff.png").format == "TIFF"
    assert _reason(readers.read_frame, tmp_path / "tiff.png", 16) == "unreadable"
    Image.fromarray(np.full((16, 16, 3), 9, np.uint8)).save(tmp_path / "j.png", format="JPEG", quality=95)
    assert abs(int(render.decode_image(readers.read_frame(tmp_path / "j.png", 16)).mean()) - 9) <= 1


def test_video_stream_limits(tmp_path):
    write_video(tmp_path / "v.mp4", 6, 10)  # 32 x 32, 6 frames
    total, frames = readers.read_video(tmp_path / "v.mp4", [0, 5], 16, readers.Limits(max_pixels=32 * 32))
    assert total == 6 and sorted(frames) == [0, 5] and frames[0].shape == (16, 16, 3)
    assert _reason(readers.read_video, tmp_path / "v.mp4", None, 16, readers.Limits(max_pixels=32 * 32 - 1)) == "pixels"
    assert readers.read_video(tmp_path / "v.mp4", None, 16, readers.Limits(max_video_frames=6))[0] == 6
    assert _reason(readers.read_video, tmp_path / "v.mp4", None, 16, readers.Limits(max_video_frames=5)) == "frames"
    assert _reason(readers.read_video, tmp_path / "v.mp4", [0], 16, readers.Limits(max_video_frames=5)) == "frames"
    # Matroska declares no frame count: the frames are counted by demuxing, and counting stops at the limit.
    write_video(tmp_path / "v.mkv", 6, 10)
    with av.open(str(tmp_path / "v.mkv")) as container:
        assert container.streams.video[0].frames == 0
    assert readers.read_video(tmp_path / "v.mkv", None, 16, readers.Limits(max_video_frames=6))[0] == 6
    assert _reason(readers.read_video, tmp_path / "v.mkv", [0], 16, readers.Limits(max_video_frames=5)) == "frames"
    (tmp_path / "junk.mp4").write_bytes(b"\0" * 64)
    assert _reason(readers.read_video, tmp_path / "junk.mp4", None, 16) == "unreadable"
