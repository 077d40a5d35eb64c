"""Fixture trees for the manual-download layouts, written inside each test (no blobs)."""

from __future__ import annotations

import contextlib
import json
import signal
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def write_frames(folder: Path, n: int, value: int, size: tuple[int, int] = (20, 24), ext: str = ".png") -> None:
    """``n`` flat frames whose pixel value is ``value + frame number`` (so tests can read it back)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full(size + (3,), value + i, np.uint8)).save(folder / f"{i:04d}{ext}")


def write_video(path: Path, n: int, value: int, size: int = 32) -> None:
    """An MPEG-4 video of ``n`` flat frames with values ``value + 10 * frame``."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), value + 10 * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


FF_PAIRS = {"train": [["000", "001"]], "val": [["002", "003"]], "test": [["004", "005"]]}


def ff_tree(root: Path, *, methods=("Deepfakes", "Face2Face"), compression="c23", kind="frames",
            frames=5, pairs=FF_PAIRS, split_dir="splits") -> Path:
    """A FaceForensics++ tree: 6 real videos, 6 fakes per method, official split lists."""
    videos = sorted({v for ps in pairs.values() for p in ps for v in p})
    fakes = [f"{a}_{b}" for ps in pairs.values() for a, b in ps] + [f"{b}_{a}" for ps in pairs.values() for a, b in ps]
    cats = [("original_sequences/youtube", videos, 10)] + [(f"manipulated_sequences/{m}", fakes, 100) for m in methods]
    for cat, names, value in cats:
        for name in names:
            if kind == "videos":
                write_video(root / cat / compression / "videos" / f"{name}.mp4", frames, value)
            else:
                write_frames(root / cat / compression / kind / name, frames, value)
    (root / split_dir).mkdir(parents=True, exist_ok=True)
    for split, ps in pairs.items():
        (root / split_dir / f"{split}.json").write_text(json.dumps(ps))
    return root


CELEB_TEST = ["1 Celeb-real/id0_0001.mp4", "0 Celeb-synthesis/id0_id1_0001.mp4", "1 YouTube-real/00001.mp4"]


def celeb_tree(root: Path, *, kind="frames", frames=4, listing=CELEB_TEST) -> Path:
    """A Celeb-DF v2 tree: 2 videos per folder, one of each listed for testing."""
    content = {"Celeb-real": ["id0_0000", "id0_0001"], "YouTube-real": ["00000", "00001"],
               "Celeb-synthesis": ["id0_id1_0000", "id0_id1_0001"]}
    for folder, names in content.items():
        value = 100 if folder == "Celeb-synthesis" else 10
        for name in names:
            if kind == "videos":
                write_video(root / folder / f"{name}.mp4", frames, value)
            else:
                write_frames(root / folder / "frames" / name, frames, value)
    (root / "List_of_testing_videos.txt").write_text("\n".join(listing) + "\n")
    return root


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def write_png_bomb(path: Path, width: int, height: int) -> None:
    """A valid black 1-bit PNG of ``width x height``: a few KB on disk, ``3 * width * height``
    bytes once decoded to RGB (a decompression bomb). Written row by row, never decoded."""
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", idat)
                     + _png_chunk(b"IEND", b""))


@contextlib.contextmanager
def no_hang(seconds: int = 60):
    """Fails the test (TimeoutError) if the block blocks longer than ``seconds`` (SIGALRM, main thread)."""
    def fail(signum, frame):
        raise TimeoutError(f"blocked for more than {seconds} s")
    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
